//! `git://` sources, fetched with the git command line: the ref is resolved to a commit on
//! every build (so a moved branch is a new key), and the checkout of that commit becomes a
//! layer named after it.

use std::path::Path;
use std::process::Command;

use buildwit_llb::pb;

use crate::snapshot::{LayerMeta, Snapshot, Snapshotter};

/// A git source as an LLB op names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitSource {
    /// The URL to fetch (`git.fullurl`, else `https://` + the identifier's path).
    pub url: String,
    /// Branch, tag or commit; empty: the remote's HEAD.
    pub reference: String,
    /// Only this directory of the checkout.
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
    url: String,
    message: String,
}

impl GitSource {
    /// Read the op's identifier (`git://host/path#ref:subdir`) and attributes.
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
        Ok(GitSource {
            url,
            reference: reference.to_string(),
            subdir: op
                .attrs
                .get("git.subdir")
                .cloned()
                .unwrap_or_else(|| subdir.to_string()),
            keep_git_dir: op.attrs.get("git.keepgitdir").is_some_and(|v| v == "true"),
            checksum: op.attrs.get("git.checksum").cloned(),
        })
    }

    fn fail(&self, message: impl Into<String>) -> GitError {
        GitError {
            url: self.url.clone(),
            message: message.into(),
        }
    }

    fn git(&self, dir: Option<&Path>, args: &[&str]) -> Result<String, GitError> {
        let mut cmd = Command::new("git");
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        // Never prompt: a build has no terminal.
        cmd.env("GIT_TERMINAL_PROMPT", "0").args(args);
        let out = cmd
            .output()
            .map_err(|e| self.fail(format!("cannot run git: {e}")))?;
        if !out.status.success() {
            return Err(self.fail(format!(
                "git {} failed: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The commit the reference names now.
    pub fn resolve(&self) -> Result<String, GitError> {
        let is_sha =
            self.reference.len() == 40 && self.reference.bytes().all(|b| b.is_ascii_hexdigit());
        let commit = if is_sha {
            self.reference.clone()
        } else {
            let wanted = if self.reference.is_empty() {
                "HEAD"
            } else {
                &self.reference
            };
            let peeled = format!("{wanted}^{{}}");
            let listing = self.git(None, &["ls-remote", &self.url, wanted, &peeled])?;
            // Prefer the peeled commit of an annotated tag (`refs/tags/x^{}`).
            let mut found = None;
            for line in listing.lines() {
                let (sha, name) = line.split_once('\t').unwrap_or((line, ""));
                if name.ends_with("^{}") || found.is_none() {
                    found = Some(sha.to_string());
                }
            }
            found.ok_or_else(|| self.fail(format!("ref {wanted:?} not found")))?
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
        let io = |e: std::io::Error| self.fail(e.to_string());
        let builder = snapshots.new_layer().map_err(io)?;
        let work = builder.dir().with_file_name("checkout");
        std::fs::create_dir_all(&work).map_err(io)?;
        self.git(Some(&work), &["init", "-q"])?;
        let fetch_ref = if self.reference.is_empty() {
            "HEAD"
        } else {
            &self.reference
        };
        self.git(
            Some(&work),
            &["fetch", "-q", "--depth", "1", &self.url, fetch_ref],
        )?;
        let fetched = self.git(Some(&work), &["rev-parse", "FETCH_HEAD^{commit}"])?;
        if fetched.trim() != commit {
            return Err(self.fail(format!(
                "{fetch_ref} moved to {} while building (expected {commit})",
                fetched.trim()
            )));
        }
        self.git(
            Some(&work),
            &["-c", "advice.detachedHead=false", "checkout", "-q", commit],
        )?;
        if !self.keep_git_dir {
            std::fs::remove_dir_all(work.join(".git")).map_err(io)?;
        }
        let src = crate::rootpath::resolve(&work, &self.subdir, true).map_err(io)?;
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
}
