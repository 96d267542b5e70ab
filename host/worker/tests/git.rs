//! Git sources against hostile input and against a real remote.
//!
//! The remote is a `git daemon` on 127.0.0.1 serving a repository the test makes, so nothing
//! reaches the network. The hostile cases carry a payload script that would create a canary
//! file if git ever ran it (as `--upload-pack`, a proxy command, a hook); the canary must never
//! appear.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use buildwit_llb::pb;
use buildwit_worker::git::GitSource;
use buildwit_worker::snapshot::{Kind, Snapshotter};

/// Set in the child process of `the_daemon_environment_does_not_reach_git`: the URL to fetch.
const CHILD_URL: &str = "BUILDWIT_GIT_TEST_URL";

/// A commit id no repository has.
const ANY_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Git for the fixtures, with an identity and a fixed default branch.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn op(identifier: &str, attrs: &[(&str, &str)]) -> pb::SourceOp {
    pb::SourceOp {
        identifier: identifier.to_string(),
        attrs: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn snapshotter(dir: &Path) -> Arc<Snapshotter> {
    Snapshotter::open(dir, Kind::Overlayfs).unwrap()
}

/// A script that creates `canary` when run.
fn payload(dir: &Path, canary: &Path) -> PathBuf {
    let script = dir.join("payload.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", canary.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// `git daemon` serving the repositories under a directory; killed on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(base: &Path) -> Daemon {
        let exec_path = PathBuf::from(git(base, &["--exec-path"]));
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let base_path = format!("--base-path={}", base.display());
            let mut daemon = Daemon {
                // `git-daemon` itself: `git daemon` would run it as a child that a kill of
                // `git` leaves behind.
                child: Command::new(exec_path.join("git-daemon"))
                    .args([
                        &base_path,
                        "--export-all",
                        "--reuseaddr",
                        "--informative-errors",
                        "--listen=127.0.0.1",
                        &format!("--port={port}"),
                    ])
                    .arg(base)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("git daemon"),
                port,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return daemon;
                }
                if daemon.child.try_wait().unwrap().is_some() {
                    break; // The port was taken meanwhile: try another.
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("git daemon did not start");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A repository served by a daemon:
///
/// - `first` (tag `v1`, annotated): `sub/a.txt` = one, `top.txt`, symlinks `abs` → `/etc`,
///   `esc` → `sub/../..`, `sub/back` → `..`;
/// - `second`: `sub/a.txt` = two;
/// - `third` (`main`): `c.txt`;
/// - `feature`, from `first`: `b.txt`.
struct Remote {
    dir: tempfile::TempDir,
    daemon: Daemon,
    first: String,
    second: String,
    third: String,
    feature: String,
}

impl Remote {
    fn new() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "-q"]);
        std::fs::create_dir(work.join("sub")).unwrap();
        std::fs::write(work.join("sub/a.txt"), "one").unwrap();
        std::fs::write(work.join("top.txt"), "top").unwrap();
        std::os::unix::fs::symlink("/etc", work.join("abs")).unwrap();
        std::os::unix::fs::symlink("sub/../..", work.join("esc")).unwrap();
        std::os::unix::fs::symlink("..", work.join("sub/back")).unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-qm", "first"]);
        let first = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["tag", "-a", "v1", "-m", "v1"]);
        git(&work, &["branch", "feature"]);
        std::fs::write(work.join("sub/a.txt"), "two").unwrap();
        git(&work, &["commit", "-qam", "second"]);
        let second = git(&work, &["rev-parse", "HEAD"]);
        std::fs::write(work.join("c.txt"), "three").unwrap();
        git(&work, &["add", "c.txt"]);
        git(&work, &["commit", "-qm", "third"]);
        let third = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["checkout", "-q", "feature"]);
        std::fs::write(work.join("b.txt"), "feature").unwrap();
        git(&work, &["add", "b.txt"]);
        git(&work, &["commit", "-qm", "feature"]);
        let feature = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["checkout", "-q", "main"]);
        let served = dir.path().join("served");
        std::fs::create_dir(&served).unwrap();
        git(&served, &["clone", "-q", "--bare", "../work", "repo.git"]);
        let daemon = Daemon::start(&served);
        Remote {
            dir,
            daemon,
            first,
            second,
            third,
            feature,
        }
    }

    fn url(&self) -> String {
        format!("git://127.0.0.1:{}/repo.git", self.daemon.port)
    }

    /// The op `llb.Git(url, fragment)` gives.
    fn op(&self, fragment: &str, attrs: &[(&str, &str)]) -> pb::SourceOp {
        let url = self.url();
        let mut id = url.clone();
        if !fragment.is_empty() {
            id = format!("{id}#{fragment}");
        }
        let mut all = vec![("git.fullurl", url.as_str())];
        all.extend_from_slice(attrs);
        op(&id, &all)
    }

    fn source(&self, fragment: &str, attrs: &[(&str, &str)]) -> GitSource {
        GitSource::parse(&self.op(fragment, attrs)).unwrap()
    }

    /// Commit on `main` in the working repository and push to the served one.
    fn push_commit(&self, file: &str) -> String {
        let work = self.dir.path().join("work");
        std::fs::write(work.join(file), "new").unwrap();
        git(&work, &["add", file]);
        git(&work, &["commit", "-qm", file]);
        git(&work, &["push", "-q", "../served/repo.git", "main"]);
        git(&work, &["rev-parse", "HEAD"])
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Parse must refuse `op` with an error naming `named`; if it accepted it, resolving and
/// checking out what it gave must still not run the payload.
fn assert_refused(op: &pb::SourceOp, named: &str, snaps: &Snapshotter, canary: &Path) {
    match GitSource::parse(op) {
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains(named), "{e:?} does not name {named:?}");
        }
        Ok(src) => {
            let resolved = src.resolve();
            let snapshot = src.snapshot(ANY_COMMIT, snaps);
            assert!(!canary.exists(), "{op:?} ran the payload");
            panic!("{op:?} accepted as {src:?} (resolve: {resolved:?}, snapshot: {snapshot:?})");
        }
    }
    assert!(!canary.exists(), "{op:?} ran the payload");
}

#[test]
fn option_like_remotes_local_paths_and_helpers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = tmp.path().join("pwned");
    let payload = payload(tmp.path(), &canary);
    let (c, p) = (canary.display(), payload.display());
    let snaps = snapshotter(&tmp.path().join("state"));
    let remotes = [
        // What `ADD ["--upload-pack=touch /tmp/pwned;x@a:b#.", "/x"]` gives, and variants.
        format!("--upload-pack=touch {c};x@a:b"),
        format!("--upload-pack={p};x@a:b"),
        format!("--upload-pack={p}"),
        format!("-u{p}@a:b"),
        "-uflag@host:p".to_string(),
        format!("--config=core.sshCommand={p}"),
        format!("ext::sh -c touch% {c}"),
        format!("ext::{p}"),
        "fd::0".to_string(),
        "file:///etc".to_string(),
        "/etc".to_string(),
        tmp.path().display().to_string(),
        "../repo".to_string(),
        format!("ssh://-oProxyCommand={p}/x"),
        format!("ssh://-oProxyCommand={p}@host/x"),
        format!("x@-oProxyCommand={p}:x"),
        "https://example.com/x\ny".to_string(),
    ];
    for remote in &remotes {
        for fragment in ["", ".", "main", "main:sub"] {
            let id = if fragment.is_empty() {
                "git://a/b".to_string()
            } else {
                format!("git://a/b#{fragment}")
            };
            let op = op(&id, &[("git.fullurl", remote)]);
            assert_refused(&op, &remote.escape_debug().to_string(), &snaps, &canary);
        }
    }
    // Without `git.fullurl` the identifier's path becomes an https URL.
    assert_refused(
        &op(&format!("git://--upload-pack={p};x@a:b#."), &[]),
        &format!("https://--upload-pack={p};x@a:b"),
        &snaps,
        &canary,
    );
    assert_refused(
        &op(&format!("git://-oProxyCommand={p}/x#main"), &[]),
        &format!("https://-oProxyCommand={p}/x"),
        &snaps,
        &canary,
    );
}

#[test]
fn option_like_and_malformed_refs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = tmp.path().join("pwned");
    let payload = payload(tmp.path(), &canary);
    let p = payload.display();
    let snaps = snapshotter(&tmp.path().join("state"));
    // Nothing listens on port 1: parsing never connects.
    let url = "git://127.0.0.1:1/repo.git";
    let refs = [
        format!("--output={}", canary.display()),
        format!("--upload-pack={p}"),
        "-q".to_string(),
        "-".to_string(),
        "a..b".to_string(),
        ".".to_string(),
        "a^{}".to_string(),
        "a~1".to_string(),
        "a?".to_string(),
        "a*".to_string(),
        "a[b".to_string(),
        "a\\b".to_string(),
        "main.lock".to_string(),
        "a@{1}".to_string(),
        "a//b".to_string(),
    ];
    for reference in &refs {
        let op = op(
            &format!("git://127.0.0.1:1/repo.git#{reference}"),
            &[("git.fullurl", url)],
        );
        assert_refused(&op, &format!("{reference:?}"), &snaps, &canary);
    }
    // Whitespace and control characters in the ref.
    for reference in ["a b", "a\tb", "a\u{1}b"] {
        let op = op(
            &format!("git://127.0.0.1:1/repo.git#{reference}"),
            &[("git.fullurl", url)],
        );
        assert_refused(&op, &format!("{reference:?}"), &snaps, &canary);
    }
    // A subdirectory that climbs out of the checkout.
    for fragment in ["main:../../etc", "main:a/../../etc", "main:/../etc"] {
        let op = op(
            &format!("git://127.0.0.1:1/repo.git#{fragment}"),
            &[("git.fullurl", url)],
        );
        assert_refused(&op, "leaves the checkout", &snaps, &canary);
    }
    let op = op(
        "git://127.0.0.1:1/repo.git#main",
        &[("git.fullurl", url), ("git.subdir", "../x")],
    );
    assert_refused(&op, "leaves the checkout", &snaps, &canary);
}

#[test]
fn sources_made_without_parse_are_checked_before_git_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = tmp.path().join("pwned");
    let payload = payload(tmp.path(), &canary);
    let p = payload.display();
    let snaps = snapshotter(&tmp.path().join("state"));
    let hostile = [
        // In the old code this ran the payload: `git fetch … --upload-pack=… .` in a repository.
        (format!("--upload-pack={p}"), "."),
        (format!("--upload-pack={p}"), "main"),
        ("git://127.0.0.1:1/repo.git".to_string(), "--upload-pack=x"),
        (format!("ext::{p}"), "main"),
        ("file:///etc".to_string(), "main"),
    ];
    for (url, reference) in hostile {
        let src = GitSource {
            url: url.clone(),
            reference: reference.to_string(),
            subdir: String::new(),
            keep_git_dir: false,
            checksum: None,
        };
        let resolved = src.resolve().unwrap_err().to_string();
        assert!(resolved.contains(&url), "{resolved}");
        let snapshot = src.snapshot(ANY_COMMIT, &snaps).unwrap_err().to_string();
        assert!(snapshot.contains(&url), "{snapshot}");
        assert!(!canary.exists(), "{url} {reference} ran the payload");
    }
    // A commit that is no commit id.
    let src = GitSource {
        url: "git://127.0.0.1:1/repo.git".to_string(),
        reference: "main".to_string(),
        subdir: String::new(),
        keep_git_dir: false,
        checksum: None,
    };
    let err = src
        .snapshot("--upload-pack=x", &snaps)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a commit id"), "{err}");
}

#[test]
fn legitimate_remotes_parse() {
    for (id, url) in [
        (
            "git://github.com/moby/buildkit.git#v0.1:docs",
            "https://github.com/moby/buildkit.git",
        ),
        (
            "git://github.com/moby/buildkit.git",
            "git@github.com:moby/buildkit.git",
        ),
        (
            "git://github.com/moby/buildkit.git",
            "ssh://git@github.com/moby/buildkit.git",
        ),
        (
            "git://example.com/x",
            "http://user:token@example.com:8080/x",
        ),
    ] {
        let src = GitSource::parse(&op(id, &[("git.fullurl", url)])).unwrap();
        assert_eq!(src.url, url);
    }
    let src = GitSource::parse(&op(
        "git://github.com/moby/buildkit.git#v0.1:./docs/../docs/",
        &[],
    ))
    .unwrap();
    assert_eq!(src.url, "https://github.com/moby/buildkit.git");
    assert_eq!(src.reference, "v0.1");
    assert_eq!(src.subdir, "docs", "the subdirectory is cleaned");
}

#[test]
fn tags_branches_and_commits_check_out_from_a_git_daemon() {
    let remote = Remote::new();
    let state = tempfile::tempdir().unwrap();
    let snaps = snapshotter(state.path());

    // An annotated tag peels to its commit; only the subdirectory, without `.git`.
    let tag = remote.source("v1:sub", &[]);
    assert_eq!(tag.resolve().unwrap(), remote.first);
    let snap = tag.snapshot(&remote.first, &snaps).unwrap();
    let dir = &snap.layers[0].dir;
    assert_eq!(read(dir, "a.txt"), "one");
    assert!(!dir.join(".git").exists());
    assert!(!dir.join("top.txt").exists());

    // A branch, the whole tree.
    let main = remote.source("main", &[]);
    assert_eq!(main.resolve().unwrap(), remote.third);
    let snap = main.snapshot(&remote.third, &snaps).unwrap();
    let dir = &snap.layers[0].dir;
    assert_eq!(read(dir, "sub/a.txt"), "two");
    assert_eq!(read(dir, "c.txt"), "three");
    assert!(!dir.join(".git").exists());
    let feature = remote.source("feature", &[]);
    assert_eq!(feature.resolve().unwrap(), remote.feature);
    let snap = feature.snapshot(&remote.feature, &snaps).unwrap();
    assert_eq!(read(&snap.layers[0].dir, "b.txt"), "feature");
    assert!(!snap.layers[0].dir.join("c.txt").exists());

    // A full commit id that no branch or tag points at.
    let commit = remote.source(&remote.second, &[]);
    assert_eq!(commit.resolve().unwrap(), remote.second);
    let snap = commit.snapshot(&remote.second, &snaps).unwrap();
    assert_eq!(read(&snap.layers[0].dir, "sub/a.txt"), "two");
    assert!(!snap.layers[0].dir.join("c.txt").exists());

    // No ref: the remote's HEAD.
    let head = remote.source("", &[]);
    assert_eq!(head.resolve().unwrap(), remote.third);

    // keepgitdir.
    let kept = remote.source("v1", &[("git.keepgitdir", "true")]);
    let snap = kept.snapshot(&remote.first, &snaps).unwrap();
    assert!(snap.layers[0].dir.join(".git/HEAD").exists());
    assert_eq!(read(&snap.layers[0].dir, "top.txt"), "top");

    // git.checksum.
    let prefix = &remote.first[..12];
    assert_eq!(
        remote
            .source("v1", &[("git.checksum", prefix)])
            .resolve()
            .unwrap(),
        remote.first
    );
    let err = remote
        .source("main", &[("git.checksum", prefix)])
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected checksum to match"), "{err}");

    // An unknown ref.
    let err = remote
        .source("nope", &[])
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(err.contains("ref \"nope\" not found"), "{err}");

    // A moved branch is a new commit for the same source.
    let moved = remote.push_commit("d.txt");
    assert_ne!(moved, remote.third);
    assert_eq!(main.resolve().unwrap(), moved);
    let snap = main.snapshot(&moved, &snaps).unwrap();
    assert_eq!(read(&snap.layers[0].dir, "d.txt"), "new");
    // Asking for a commit the ref no longer names is an error (`sub`: not a cached layer).
    let err = remote
        .source("main:sub", &[])
        .snapshot(&remote.third, &snaps)
        .unwrap_err()
        .to_string();
    assert!(err.contains("moved to"), "{err}");
}

#[test]
fn subdirectory_symlinks_stay_inside_the_checkout() {
    let remote = Remote::new();
    let state = tempfile::tempdir().unwrap();
    let snaps = snapshotter(state.path());
    for subdir in ["abs", "esc", "esc/etc", "sub/back/esc"] {
        let src = remote.source(&format!("v1:{subdir}"), &[]);
        let err = src.snapshot(&remote.first, &snaps).unwrap_err().to_string();
        assert!(err.contains("leaves the checkout"), "{subdir}: {err}");
    }
    // A symlink that stays inside is followed.
    let src = remote.source("v1:sub/back/sub", &[]);
    let snap = src.snapshot(&remote.first, &snaps).unwrap();
    assert_eq!(read(&snap.layers[0].dir, "a.txt"), "one");
    let err = remote
        .source("v1:missing", &[])
        .snapshot(&remote.first, &snaps)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not found"), "{err}");
}

/// Config, hooks and commands the daemon's environment could hand to git: none may run.
fn hostile_environment(dir: &Path, payload: &Path) -> Vec<(String, String)> {
    let p = payload.display().to_string();
    let hooks = dir.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    for hook in [
        "post-checkout",
        "reference-transaction",
        "post-index-change",
        "pre-auto-gc",
    ] {
        std::fs::copy(payload, hooks.join(hook)).unwrap();
    }
    let template = dir.join("template");
    std::fs::create_dir_all(&template).unwrap();
    let _ = std::os::unix::fs::symlink(&hooks, template.join("hooks"));
    let home = dir.join("home");
    let config = format!(
        "[core]\n\thooksPath = {}\n\tgitProxy = {p}\n\tsshCommand = {p}\n\tfsmonitor = {p}\n",
        hooks.display()
    );
    std::fs::create_dir_all(home.join(".config/git")).unwrap();
    std::fs::write(home.join(".gitconfig"), &config).unwrap();
    std::fs::write(home.join(".config/git/config"), &config).unwrap();
    [
        ("HOME", home.display().to_string()),
        (
            "XDG_CONFIG_HOME",
            home.join(".config").display().to_string(),
        ),
        (
            "GIT_CONFIG_GLOBAL",
            home.join(".gitconfig").display().to_string(),
        ),
        ("GIT_CONFIG_COUNT", "1".to_string()),
        ("GIT_CONFIG_KEY_0", "core.hooksPath".to_string()),
        ("GIT_CONFIG_VALUE_0", hooks.display().to_string()),
        ("GIT_CONFIG_PARAMETERS", format!("'core.gitproxy'='{p}'")),
        ("GIT_PROXY_COMMAND", p.clone()),
        ("GIT_SSH_COMMAND", p.clone()),
        ("GIT_SSH", p.clone()),
        ("GIT_ASKPASS", p.clone()),
        ("GIT_TEMPLATE_DIR", template.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[test]
fn the_daemon_environment_does_not_reach_git() {
    if let Ok(url) = std::env::var(CHILD_URL) {
        // The child: a hostile environment, a checkout that must still work.
        let state = tempfile::tempdir().unwrap();
        let snaps = snapshotter(state.path());
        let src = GitSource::parse(&op(
            &format!("{url}#main"),
            &[("git.fullurl", url.as_str())],
        ))
        .unwrap();
        let commit = src.resolve().unwrap();
        let snap = src.snapshot(&commit, &snaps).unwrap();
        assert_eq!(read(&snap.layers[0].dir, "c.txt"), "three");
        return;
    }
    let remote = Remote::new();
    let tmp = tempfile::tempdir().unwrap();
    let canary = tmp.path().join("pwned");
    let payload = payload(tmp.path(), &canary);
    let env = hostile_environment(tmp.path(), &payload);

    // The environment is hostile indeed: plain git runs the payload.
    let plain = Command::new("git")
        .args(["ls-remote", &remote.url()])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(canary.exists(), "control: {plain:?}");
    std::fs::remove_file(&canary).unwrap();

    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_daemon_environment_does_not_reach_git",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_URL, remote.url())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!canary.exists(), "git ran the payload");
}
