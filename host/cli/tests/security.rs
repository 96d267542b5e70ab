//! What a Dockerfile may not do to the machine that builds it: the reproducers of the
//! findings of a probe of buildwit as an attacker would try it (issue #13), each asserting
//! that nothing outside the state directory, the outputs and the context was read or
//! written, and the hardening every step gets (seccomp, no `/proc` working directory).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Setup, text};

/// The ids of the runc containers of a state directory.
fn containers(root: &Path) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(root.join("runc"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// Mount points below `root` in this machine's mount table.
fn mounts_below(root: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = root.to_string_lossy();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&*root))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_git_source_cannot_run_a_command_on_the_host() {
    let s = support::setup();
    let canary = s.dir.path().join("pwned");
    let ctx = s.context(
        "git",
        &[(
            "Dockerfile",
            &format!(
                "FROM BASE\nADD [\"--upload-pack=touch {};x@a:b#.\", \"/x\"]\n",
                canary.display()
            ),
        )],
    );
    let b = s.build(&ctx, &[]);
    assert!(!b.out.status.success());
    let stderr = text(&b.out.stderr);
    assert!(stderr.contains("--upload-pack"), "{stderr}");
    assert!(!canary.exists(), "the git option ran on the host");
}

#[test]
fn add_unpacks_archives_inside_the_state_directory() {
    let s = support::setup();
    // An archive to ADD, made with tar(1).
    let ctx = s.context("add", &[("Dockerfile", "FROM BASE\nADD a.tar.gz /x/\n")]);
    let files = s.dir.path().join("files");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    std::fs::write(files.join("sub/f.txt"), "inside\n").unwrap();
    let st = Command::new("tar")
        .arg("-czf")
        .arg(ctx.join("a.tar.gz"))
        .arg("-C")
        .arg(&files)
        .arg("sub")
        .status()
        .unwrap();
    assert!(st.success());
    // The shared temporary directory must see nothing of it: another user could have
    // planted a symlink at any name a build would use there.
    let tmp = s.dir.path().join("shared-tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = s.dir.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_buildwit"))
        .arg("--config")
        .arg(&s.config)
        .arg("--root")
        .arg(&s.root)
        .arg("build")
        .arg(&ctx)
        .arg("-o")
        .arg(format!("type=local,dest={}", out.display()))
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(
        std::fs::read_to_string(out.join("x/sub/f.txt")).unwrap(),
        "inside\n"
    );
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "the build wrote into TMPDIR: {left:?}");
}

#[test]
fn the_state_directory_is_private_whatever_the_umask() {
    let s = support::setup();
    let ctx = s.context(
        "umask",
        &[("Dockerfile", "FROM BASE\nRUN echo hi > /hi.txt\n")],
    );
    let run = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_buildwit"))
        .arg("--config")
        .arg(&s.config)
        .arg("--root")
        .arg(&s.root)
        .arg("build")
        .arg(&ctx)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    // A frontend from a file is compiled into the root (the built-in one was compiled when
    // buildwit was built).
    let plugin = format!("{}/toml-spec.wasm", buildwit_frontend::BUILT_FRONTENDS_DIR);
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/toml-spec");
    let run = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_buildwit"))
        .arg("--root")
        .arg(&s.root)
        .args(["build", "--frontend-file", &plugin, example, "--dump-llb"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    let mode = std::fs::metadata(&s.root).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the state directory is {mode:o}");
    // The daemon's own files (not the files of layers, which are as the image says) are
    // writable by their owner only; compiled frontend code above all.
    let mut checked = 0;
    let mut stack = vec![s.root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let md = p.symlink_metadata().unwrap();
            if md.file_type().is_symlink() {
                continue;
            }
            let rel = p
                .strip_prefix(&s.root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert_eq!(
                md.permissions().mode() & 0o022,
                0,
                "{rel} is writable by others: {:o}",
                md.permissions().mode()
            );
            checked += 1;
            let content = rel.starts_with("snapshots/layers/") && rel.contains("/diff");
            if md.is_dir() && !content {
                stack.push(p);
            }
        }
    }
    assert!(checked > 10, "only {checked} files under the root");
    assert!(s.root.join("frontends/compiled").is_dir());
}

#[test]
fn a_deep_tree_exports_and_du_and_prune_keep_working() {
    let s = support::setup();
    // 2100 levels: a path of 4 KiB and more, past PATH_MAX. Made with renames, so no
    // path the kernel resolves is ever that long inside the step either.
    let ctx = s.context(
        "deep",
        &[(
            "Dockerfile",
            "FROM BASE\nRUN mkdir /deep && cd /deep && mkdir d && echo bottom > d/leaf && \
             i=0; while [ $i -lt 2100 ]; do mkdir n && busybox mv d n/d && busybox mv n d || exit 1; \
             i=$((i+1)); done\n",
        )],
    );
    let oci = s.dir.path().join("deep.tar");
    let local = s.dir.path().join("deep-local");
    for output in [
        format!("type=oci,dest={}", oci.display()),
        format!("type=local,dest={}", local.display()),
    ] {
        let b = s.build(&ctx, &["-o", &output]);
        let stderr = text(&b.out.stderr);
        assert!(
            b.out.status.success(),
            "{}",
            &stderr[..stderr.len().min(4000)]
        );
        assert!(stderr.len() < 1 << 20, "{} bytes of output", stderr.len());
    }
    // The local copy has the bottom file, 2100 directories down.
    let mut fd = buildwit_worker::beneath::open_root(&local.join("deep")).unwrap();
    for _ in 0..=2100 {
        fd = buildwit_worker::beneath::open_dir(std::os::fd::AsFd::as_fd(&fd), Path::new("d"))
            .unwrap();
    }
    let leaf =
        buildwit_worker::beneath::open_file(std::os::fd::AsFd::as_fd(&fd), Path::new("leaf"));
    assert_eq!(std::io::read_to_string(leaf.unwrap()).unwrap(), "bottom\n");
    // The image's layer holds it too: umoci unpacks it.
    assert!(std::fs::metadata(&oci).unwrap().len() > 100_000);
    let du = s.buildwit(&["du"]);
    assert!(du.status.success(), "{}", text(&du.stderr));
    let prune = s.buildwit(&["prune", "--all"]);
    assert!(prune.status.success(), "{}", text(&prune.stderr));
    let du = s.buildwit(&["du"]);
    assert!(du.status.success(), "{}", text(&du.stderr));
    assert!(
        text(&du.stdout).contains("Total:\t\t0B"),
        "{}",
        text(&du.stdout)
    );
}

/// Start a build whose step sleeps, and wait until its container runs.
fn start_sleeping_build(s: &Setup, name: &str) -> std::process::Child {
    let ctx = s.context(
        name,
        &[(
            "Dockerfile",
            &format!("FROM BASE\nRUN sleep 300 # {name}\n"),
        )],
    );
    let child = Command::new(env!("CARGO_BIN_EXE_buildwit"))
        .arg("--config")
        .arg(&s.config)
        .arg("--root")
        .arg(&s.root)
        .arg("build")
        .arg(&ctx)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while containers(&s.root).is_empty() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

#[test]
fn killing_the_cli_leaves_no_container_or_mount() {
    let s = support::setup();
    // SIGTERM: the build is cancelled, its container killed and its mounts undone.
    let mut child = start_sleeping_build(&s, "term");
    assert!(!mounts_below(&s.root).is_empty());
    let started = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(containers(&s.root), Vec::<String>::new());
    assert_eq!(mounts_below(&s.root), Vec::<String>::new());

    // SIGKILL cannot be caught: the container outlives the CLI, and the next start
    // reclaims it.
    let mut child = start_sleeping_build(&s, "kill");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(containers(&s.root).len(), 1);
    let du = s.buildwit(&["du"]);
    assert!(du.status.success(), "{}", text(&du.stderr));
    assert_eq!(containers(&s.root), Vec::<String>::new());
    assert_eq!(mounts_below(&s.root), Vec::<String>::new());
}

#[test]
fn a_second_process_on_the_same_root_is_refused_without_harm() {
    let s = support::setup();
    let mut child = start_sleeping_build(&s, "held");
    let du = s.buildwit(&["du"]);
    assert!(!du.status.success());
    let stderr = text(&du.stderr);
    assert!(
        stderr.contains("in use by another buildwit process"),
        "{stderr}"
    );
    // The first build's container and mounts were left alone.
    assert_eq!(containers(&s.root).len(), 1);
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(128 + 2));
}

#[test]
fn steps_run_under_seccomp_and_never_start_under_proc() {
    let s = support::setup();
    // A top-level key: before the config's tables.
    std::fs::write(
        &s.config,
        format!(
            "insecure-entitlements = [\"security.insecure\"]\n{}",
            std::fs::read_to_string(&s.config).unwrap()
        ),
    )
    .unwrap();
    let ctx = s.context(
        "seccomp",
        &[(
            "Dockerfile",
            "FROM BASE\n\
             RUN grep Seccomp: /proc/self/status && ! busybox unshare -U true\n\
             RUN --security=insecure grep Seccomp: /proc/self/status && busybox unshare -U true\n",
        )],
    );
    let b = s.build(&ctx, &["--allow", "security.insecure"]).ok();
    assert!(
        b.logs.iter().any(|l| l.ends_with("Seccomp:\t2")),
        "{:?}",
        b.logs
    );
    assert!(
        b.logs.iter().any(|l| l.ends_with("Seccomp:\t0")),
        "{:?}",
        b.logs
    );

    // CVE-2024-21626: a working directory that is a runtime's file descriptor, named
    // directly or through a symlink in the image.
    for (name, dockerfile) in [
        ("fd", "FROM BASE\nWORKDIR /proc/self/fd/7\nRUN pwd\n"),
        (
            "fdlink",
            "FROM BASE\nRUN busybox ln -s /proc/self/fd /fds\nWORKDIR /fds/7\nRUN pwd\n",
        ),
        // /dev/fd is runc's link into /proc, made after the image is mounted.
        ("devfd", "FROM BASE\nWORKDIR /dev/fd/7\nRUN pwd\n"),
        // A link in a cache mount, which is not the image.
        (
            "mountlink",
            "FROM BASE\nRUN --mount=type=cache,target=/c busybox ln -sf /proc/self/fd /c/fds\n\
             WORKDIR /c/fds/7\nRUN --mount=type=cache,target=/c pwd\n",
        ),
    ] {
        let ctx = s.context(name, &[("Dockerfile", dockerfile)]);
        let b = s.build(&ctx, &[]);
        assert!(!b.out.status.success());
        let stderr = text(&b.out.stderr);
        assert!(stderr.contains("is under /proc"), "{stderr}");
    }
}

#[test]
fn an_archive_that_expands_past_the_free_space_is_refused() {
    let s = support::setup();
    // A sparse file of 1 TiB is a few hundred bytes of tar.
    let ctx = s.context("sparse", &[("Dockerfile", "FROM BASE\nADD big.tar /x/\n")]);
    let files = s.dir.path().join("sparse-files");
    std::fs::create_dir_all(&files).unwrap();
    let st = Command::new("truncate")
        .args(["-s", "1T"])
        .arg(files.join("big"))
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("tar")
        .arg("--sparse")
        .arg("-cf")
        .arg(ctx.join("big.tar"))
        .arg("-C")
        .arg(&files)
        .arg("big")
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::metadata(ctx.join("big.tar")).unwrap().len() < 1 << 20);
    let b = s.build(&ctx, &[]);
    assert!(!b.out.status.success());
    let stderr = text(&b.out.stderr);
    assert!(
        stderr.contains("expands to 1099511627776 bytes"),
        "{stderr}"
    );
    let du = s.buildwit(&["du"]);
    assert!(du.status.success(), "{}", text(&du.stderr));
}
