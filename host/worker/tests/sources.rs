//! Git sources through the git command line, against a repository on disk.

use std::process::Command;

use buildwit_llb::pb;
use buildwit_worker::git::GitSource;
use buildwit_worker::snapshot::{Kind, Snapshotter};

fn git(dir: &std::path::Path, args: &[&str]) -> String {
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

#[test]
fn git_refs_resolve_to_commits_and_check_out() {
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q"]);
    std::fs::create_dir(repo.path().join("sub")).unwrap();
    std::fs::write(repo.path().join("sub/a.txt"), "one").unwrap();
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-qm", "one"]);
    let first = git(repo.path(), &["rev-parse", "HEAD"]);
    git(repo.path(), &["tag", "-a", "v1", "-m", "v1"]);

    let op = |fragment: &str| pb::SourceOp {
        identifier: format!("git://example/repo#{fragment}"),
        attrs: [("git.fullurl".to_string(), repo.path().display().to_string())].into(),
    };
    let src = GitSource::parse(&op("main:sub")).unwrap();
    assert_eq!(src.resolve().unwrap(), first);
    assert_eq!(
        GitSource::parse(&op("v1")).unwrap().resolve().unwrap(),
        first,
        "annotated tags peel to the commit"
    );

    let state = tempfile::tempdir().unwrap();
    let snaps = Snapshotter::open(state.path(), Kind::Overlayfs).unwrap();
    let snap = src.snapshot(&first, &snaps).unwrap();
    assert_eq!(
        std::fs::read_to_string(snap.layers[0].dir.join("a.txt")).unwrap(),
        "one"
    );
    assert!(!snap.layers[0].dir.join(".git").exists());

    // A new commit on the branch is a new commit for the same source.
    std::fs::write(repo.path().join("sub/a.txt"), "two").unwrap();
    git(repo.path(), &["commit", "-qam", "two"]);
    let second = src.resolve().unwrap();
    assert_ne!(second, first);
    let err = GitSource::parse(&op("nope"))
        .unwrap()
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(err.contains("ref \"nope\" not found"), "{err}");
}
