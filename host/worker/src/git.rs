//! `git://` sources, fetched with the git command line: the ref is resolved to a commit on
//! every build (so a moved branch is a new key), and the checkout of that commit becomes a
//! layer named after it.
//!
//! Everything in a git source comes from the build (a Dockerfile `ADD`, a frontend), and git
//! runs on the host as the daemon's user, so the source is checked before git sees it and git
//! runs fenced in:
//!
//! - the remote is an `https://`, `http://`, `ssh://` or `git://` URL, or `user@host:path`:
//!   nothing option-like (`--upload-pack=…`), no local path or `file://`, no remote helper
//!   (`ext::…`, `fd::…`);
//! - the ref follows `git check-ref-format` and never starts with `-` (BuildKit refuses
//!   option-like refs too); the subdirectory stays inside the checkout (CVE-2026-33748);
//! - every command puts `--end-of-options` before its operands and runs with a cleared
//!   environment, an empty private `HOME`, no system or global config, only the `https`,
//!   `http`, `ssh` and `git` transports (for redirects and submodules too) and no hook.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use buildwit_llb::pb;

use crate::snapshot::{LayerMeta, Snapshot, Snapshotter};

/// URL schemes a remote may have.
const SCHEMES: [&str; 4] = ["https", "http", "ssh", "git"];

/// Transports git may use, for the remote and for anything it leads to (`GIT_ALLOW_PROTOCOL`):
/// no `file`, `ext`, `fd` or other remote helper, even through a redirect or a submodule.
const ALLOWED_PROTOCOLS: &str = "https:http:ssh:git";

/// Config set on every command line: no hook, no fsmonitor, no local or `ext` transport, no
/// credential helper, and no template (with its hooks) copied by `git init`.
const CONFIG: &[&str] = &[
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "protocol.file.allow=never",
    "protocol.ext.allow=never",
    "credential.helper=",
    "submodule.recurse=false",
    "init.templateDir=",
    "advice.detachedHead=false",
];

/// What git gets from the daemon's environment besides `PATH`: the proxies.
const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
];

/// `PATH` when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Symlinks followed in a subdirectory before giving up, as Linux does (`ELOOP`).
const MAX_LINKS: usize = 40;

/// A git source as an LLB op names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitSource {
    /// The URL to fetch (`git.fullurl`, else `https://` + the identifier's path).
    pub url: String,
    /// Branch, tag or commit; empty: the remote's HEAD.
    pub reference: String,
    /// Only this directory of the checkout (cleaned by [`GitSource::parse`]).
    pub subdir: String,
    /// Keep the `.git` directory.
    pub keep_git_dir: bool,
    /// `git.checksum`: the commit the ref must resolve to.
    pub checksum: Option<String>,
}

/// Why a git source failed.
#[derive(Debug, thiserror::Error)]
#[error("git source {url}: {message}")]
pub struct GitError {
    /// The remote, control characters escaped.
    url: String,
    message: String,
}

impl GitError {
    fn new(url: &str, message: impl Into<String>) -> Self {
        GitError {
            url: url.escape_debug().to_string(),
            message: message.into(),
        }
    }
}

impl GitSource {
    /// Read the op's identifier (`git://host/path#ref:subdir`) and attributes, and refuse a
    /// remote, ref or subdirectory that git could take for something else (module docs).
    pub fn parse(op: &pb::SourceOp) -> Result<Self, GitError> {
        let rest = op
            .identifier
            .strip_prefix("git://")
            .unwrap_or(&op.identifier);
        let (path, fragment) = rest.split_once('#').unwrap_or((rest, ""));
        let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
        let url = op
            .attrs
            .get("git.fullurl")
            .cloned()
            .unwrap_or_else(|| format!("https://{path}"));
        let subdir = op.attrs.get("git.subdir").map_or(subdir, String::as_str);
        let mut source = GitSource {
            url,
            reference: reference.to_string(),
            subdir: subdir.to_string(),
            keep_git_dir: op.attrs.get("git.keepgitdir").is_some_and(|v| v == "true"),
            checksum: op.attrs.get("git.checksum").cloned(),
        };
        source.check()?;
        source.subdir = clean_subdir(&source.subdir).map_err(|why| source.fail(why))?;
        Ok(source)
    }

    /// Refuse what [`GitSource::parse`] refuses; the fields are public, so [`resolve`] and
    /// [`snapshot`] check again before running git.
    ///
    /// [`resolve`]: GitSource::resolve
    /// [`snapshot`]: GitSource::snapshot
    fn check(&self) -> Result<(), GitError> {
        check_remote(&self.url).map_err(|why| self.fail(why))?;
        check_ref(&self.reference)
            .map_err(|why| self.fail(format!("invalid ref {:?}: {why}", self.reference)))?;
        clean_subdir(&self.subdir).map_err(|why| self.fail(why))?;
        Ok(())
    }

    fn fail(&self, message: impl Into<String>) -> GitError {
        GitError::new(&self.url, message)
    }

    /// Run `git <command> <options> --end-of-options <operands>` fenced in (module docs),
    /// in `dir` if given; its standard output.
    fn git(
        &self,
        home: &PrivateHome,
        dir: Option<&Path>,
        command: &str,
        options: &[&str],
        operands: &[&str],
    ) -> Result<String, GitError> {
        let mut cmd = Command::new("git");
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
            )
            .env("HOME", home.path())
            // Never prompt: a build has no terminal.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
            // Not root's ssh: no config, keys or known hosts of the daemon's user (ssh
            // finds those through the password database, not HOME).
            .env(
                "GIT_SSH_COMMAND",
                format!(
                    "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityFile=none -o IdentityAgent=none -o UserKnownHostsFile={}/known_hosts -o GlobalKnownHostsFile=/dev/null",
                    home.path().display()
                ),
            )
            .stdin(Stdio::null());
        for var in PROXY_VARS {
            if let Some(value) = std::env::var_os(var) {
                cmd.env(var, value);
            }
        }
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        for config in CONFIG {
            cmd.arg("-c").arg(config);
        }
        cmd.arg(command).args(options);
        if !operands.is_empty() {
            cmd.arg("--end-of-options").args(operands);
        }
        let out = cmd
            .output()
            .map_err(|e| self.fail(format!("cannot run git: {e}")))?;
        if !out.status.success() {
            return Err(self.fail(format!(
                "git {command} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn home(&self) -> Result<PrivateHome, GitError> {
        PrivateHome::new().map_err(|e| self.fail(format!("cannot make a HOME for git: {e}")))
    }

    /// The commit the reference names now.
    pub fn resolve(&self) -> Result<String, GitError> {
        self.check()?;
        let commit = if is_commit(&self.reference) {
            self.reference.clone()
        } else {
            let wanted = if self.reference.is_empty() {
                "HEAD"
            } else {
                &self.reference
            };
            let peeled = format!("{wanted}^{{}}");
            let home = self.home()?;
            let listing = self.git(&home, None, "ls-remote", &[], &[&self.url, wanted, &peeled])?;
            // Prefer the peeled commit of an annotated tag (`refs/tags/x^{}`).
            let mut found = None;
            for line in listing.lines() {
                let (sha, name) = line.split_once('\t').unwrap_or((line, ""));
                if name.ends_with("^{}") || found.is_none() {
                    found = Some(sha.to_string());
                }
            }
            let found = found.ok_or_else(|| self.fail(format!("ref {wanted:?} not found")))?;
            if !is_object_id(&found) {
                return Err(self.fail(format!(
                    "the remote named {found:?} for {wanted:?}, not a commit"
                )));
            }
            found
        };
        if let Some(c) = &self.checksum
            && !commit.starts_with(c.as_str())
        {
            return Err(self.fail(format!("expected checksum to match {c}, got {commit}")));
        }
        Ok(commit)
    }

    /// The checkout of `commit` as a layer.
    pub fn snapshot(&self, commit: &str, snapshots: &Snapshotter) -> Result<Snapshot, GitError> {
        self.check()?;
        if !is_object_id(commit) {
            return Err(self.fail(format!("{commit:?} is not a commit id")));
        }
        let id = {
            use sha2::Digest as _;
            let key = format!("{commit}\0{}\0{}", self.subdir, self.keep_git_dir);
            format!(
                "git-{}",
                hex::encode(&sha2::Sha256::digest(key.as_bytes())[..24])
            )
        };
        if let Some(layer) = snapshots.layer(&id) {
            return Ok(Snapshot {
                layers: vec![layer],
            });
        }
        let io = |e: io::Error| self.fail(e.to_string());
        let builder = snapshots.new_layer().map_err(io)?;
        let work = builder.dir().with_file_name("checkout");
        std::fs::create_dir_all(&work).map_err(io)?;
        let home = self.home()?;
        self.git(&home, Some(&work), "init", &["-q"], &[])?;
        let fetch_ref = if self.reference.is_empty() {
            "HEAD"
        } else {
            &self.reference
        };
        self.git(
            &home,
            Some(&work),
            "fetch",
            &["-q", "--depth", "1"],
            &[&self.url, fetch_ref],
        )?;
        let fetched = self.git(
            &home,
            Some(&work),
            "rev-parse",
            &["--verify"],
            &["FETCH_HEAD^{commit}"],
        )?;
        if fetched.trim() != commit {
            return Err(self.fail(format!(
                "{fetch_ref} moved to {} while building (expected {commit})",
                fetched.trim()
            )));
        }
        self.git(&home, Some(&work), "checkout", &["-q"], &[commit])?;
        if !self.keep_git_dir {
            std::fs::remove_dir_all(work.join(".git")).map_err(io)?;
        }
        let src = self.checkout_subdir(&work)?;
        if !src.is_dir() {
            return Err(self.fail(format!(
                "subdirectory {:?} not found at {commit}",
                self.subdir
            )));
        }
        std::fs::remove_dir(builder.dir()).map_err(io)?;
        std::fs::rename(&src, builder.dir()).map_err(io)?;
        let _ = std::fs::remove_dir_all(&work);
        let layer = builder.commit(&id, &LayerMeta::now()).map_err(io)?;
        Ok(Snapshot {
            layers: vec![layer],
        })
    }

    /// The subdirectory in the checkout at `root`, its symlinks followed; an error if one
    /// leads out of the checkout (CVE-2026-33748). `rootpath::resolve` would keep such a
    /// path inside by clamping it as a chroot does; BuildKit refuses it, and so do we.
    fn checkout_subdir(&self, root: &Path) -> Result<PathBuf, GitError> {
        let leaves = |how: String| {
            self.fail(format!(
                "subdirectory {:?} leaves the checkout{how}",
                self.subdir
            ))
        };
        let mut pending = components(Path::new(&self.subdir));
        pending.reverse();
        let mut stack: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(name) = pending.pop() {
            if name == ".." {
                if stack.pop().is_none() {
                    return Err(leaves(String::new()));
                }
                continue;
            }
            let mut here = root.to_path_buf();
            here.extend(&stack);
            here.push(&name);
            let is_link = here
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink());
            if !is_link {
                stack.push(name);
                continue;
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(self.fail(format!(
                    "subdirectory {:?}: too many levels of symbolic links",
                    self.subdir
                )));
            }
            let target = std::fs::read_link(&here).map_err(|e| self.fail(e.to_string()))?;
            if target.has_root() {
                return Err(leaves(format!(" (a symlink to {})", target.display())));
            }
            let mut more = components(&target);
            more.reverse();
            pending.extend(more);
        }
        let mut out = root.to_path_buf();
        out.extend(&stack);
        Ok(out)
    }
}

/// An empty directory only its owner can enter, for git's `HOME` (mkdtemp: a name no one
/// can plant beforehand, mode 0700); removed on drop.
struct PrivateHome(tempfile::TempDir);

impl PrivateHome {
    fn new() -> io::Result<Self> {
        Ok(PrivateHome(
            tempfile::Builder::new()
                .prefix("buildwit-git-home-")
                .tempdir()?,
        ))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// A full commit id: SHA-1 (or SHA-256 for an answer from the remote).
fn is_object_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A ref that names a commit by its full SHA-1 (not resolved through the remote).
fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Why `url` cannot be a remote: it must be an `https://`, `http://`, `ssh://` or `git://`
/// URL with a host, or `user@host:path`, and nothing git could read as an option.
fn check_remote(url: &str) -> Result<(), String> {
    const ALLOWED: &str =
        "only https://, http://, ssh://, git:// URLs and user@host:path are allowed";
    if url.is_empty() {
        return Err("no remote URL".into());
    }
    if let Some(c) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("a remote URL cannot contain {c:?}"));
    }
    if url.starts_with('-') {
        return Err("a remote URL cannot start with \"-\"".into());
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !SCHEMES.contains(&scheme) {
            return Err(format!("transport {scheme:?} is not allowed: {ALLOWED}"));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, host_port)) => (Some(user), host_port),
            None => (None, authority),
        };
        if user.is_some_and(|u| u.starts_with('-')) {
            return Err("the user of a remote URL cannot start with \"-\"".into());
        }
        let (host, port) = match host_port.strip_prefix('[') {
            // An IPv6 address.
            Some(v6) => {
                let (addr, port) = v6.split_once(']').ok_or("unclosed \"[\" in the host")?;
                if addr.is_empty()
                    || !addr
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                {
                    return Err(format!("invalid host [{addr}]"));
                }
                (addr, port)
            }
            None => {
                let end = host_port.find(':').unwrap_or(host_port.len());
                let host = &host_port[..end];
                if !is_safe_name(host) {
                    return Err(format!("invalid host {host:?}"));
                }
                (host, &host_port[end..])
            }
        };
        if host.is_empty() {
            return Err("a remote URL needs a host".into());
        }
        if !port.is_empty()
            && !port
                .strip_prefix(':')
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!("invalid port {port:?}"));
        }
        return Ok(());
    }
    // scp-like: user@host:path.
    if let Some((user, rest)) = url.split_once('@')
        && let Some((host, path)) = rest.split_once(':')
    {
        if !is_safe_name(user) {
            return Err(format!("invalid user {user:?}"));
        }
        if !is_safe_name(host) {
            return Err(format!("invalid host {host:?}"));
        }
        if path.is_empty() || path.starts_with('-') {
            return Err(format!("invalid path {path:?}"));
        }
        return Ok(());
    }
    Err(format!("not a remote git may fetch: {ALLOWED}"))
}

/// A user or host name made of letters, digits, `.`, `_` and `-`, not first.
fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Why `reference` is no ref: the rules of `git check-ref-format --allow-onelevel`, and no
/// leading `-`. Empty (the remote's HEAD) and a full commit id are fine.
fn check_ref(reference: &str) -> Result<(), String> {
    if reference.is_empty() || is_commit(reference) {
        return Ok(());
    }
    if reference.starts_with('-') {
        return Err("a ref cannot start with \"-\"".into());
    }
    if let Some(c) = reference.chars().find(|&c| {
        c.is_whitespace() || c.is_control() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return Err(format!("a ref cannot contain {c:?}"));
    }
    for bad in ["..", "@{", "//"] {
        if reference.contains(bad) {
            return Err(format!("a ref cannot contain {bad:?}"));
        }
    }
    if reference == "@" {
        return Err("a ref cannot be \"@\"".into());
    }
    if reference.starts_with('/') || reference.ends_with('/') || reference.ends_with('.') {
        return Err("a ref cannot start with \"/\" or end with \"/\" or \".\"".into());
    }
    for part in reference.split('/') {
        if part.starts_with('.') || part.ends_with(".lock") {
            return Err(format!(
                "no part of a ref can start with \".\" or end with \".lock\" ({part:?})"
            ));
        }
    }
    Ok(())
}

/// `subdir` made relative and clean (`./a/../b/` → `b`); an error if it climbs out.
fn clean_subdir(subdir: &str) -> Result<String, String> {
    if subdir.chars().any(char::is_control) {
        return Err(format!(
            "subdirectory {subdir:?} cannot contain control characters"
        ));
    }
    let mut out: Vec<&str> = Vec::new();
    for part in subdir.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(format!("subdirectory {subdir:?} leaves the checkout"));
                }
            }
            p => out.push(p),
        }
    }
    Ok(out.join("/"))
}

/// The normal and `..` components of a relative path.
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsStr::new("..").to_os_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_are_urls_of_allowed_transports_or_scp_like() {
        for ok in [
            "https://github.com/moby/buildkit.git",
            "http://example.com:8080/x.git",
            "ssh://git@github.com/moby/buildkit.git",
            "ssh://git@[::1]:22/x",
            "git://127.0.0.1:9418/repo.git",
            "https://user:tok%40en@example.com/x",
            "git@github.com:moby/buildkit.git",
        ] {
            assert_eq!(check_remote(ok), Ok(()), "{ok}");
        }
        for bad in [
            "--upload-pack=touch /tmp/pwned;x@a:b",
            "--upload-pack=touch%20/tmp/pwned;x@a:b",
            "-uflag@host:p",
            "ext::sh -c touch% /tmp/pwned",
            "ext::sh",
            "fd::3",
            "file:///etc",
            "/etc",
            "./repo",
            "../repo",
            "repo",
            "host:path",
            "--config=core.sshCommand=touch",
            "git+ssh://host/x",
            "HTTPS://host/x",
            "https://-oProxyCommand=x/y",
            "ssh://-oProxyCommand=x@host/y",
            "ssh://host:-1/y",
            "https:///x",
            "https://host/x\ny",
            "https://host/x\u{7f}",
            "user@-host:p",
            "user@host:-p",
            "user@host:",
            "us/er@host:p",
            "",
        ] {
            assert!(check_remote(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn refs_follow_check_ref_format_and_never_look_like_options() {
        for ok in [
            "",
            "main",
            "v1.2.3",
            "feature/x-y_z",
            "refs/tags/v1",
            "HEAD",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert_eq!(check_ref(ok), Ok(()), "{ok}");
        }
        for bad in [
            "-q",
            "--output=/tmp/x",
            "--upload-pack=x",
            "a..b",
            "a b",
            "a\tb",
            "a:b",
            "a^",
            "a~1",
            "a?",
            "a*",
            "a[b",
            "a\\b",
            "a.lock",
            "a/b.lock/c",
            ".a",
            "a/.b",
            "a.",
            "/a",
            "a/",
            "a//b",
            "a@{1}",
            "@",
            ".",
        ] {
            assert!(check_ref(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn subdirs_are_cleaned_and_stay_inside() {
        assert_eq!(clean_subdir("").unwrap(), "");
        assert_eq!(clean_subdir("/a/./b/../c/").unwrap(), "a/c");
        assert_eq!(clean_subdir("a/..").unwrap(), "");
        assert!(clean_subdir("..").is_err());
        assert!(clean_subdir("a/../../b").is_err());
        assert!(clean_subdir("/../etc").is_err());
        assert!(clean_subdir("a\nb").is_err());
    }
}
