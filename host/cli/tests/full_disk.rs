//! A full disk: builds whose state root sits on a small filesystem (a size-limited tmpfs)
//! fail with a "no space left" error that names what was being written (a step, the
//! context, an export), leave a store the next build can use, and succeed once a prune has
//! freed the space.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{Setup, setup, text};

/// A tmpfs of `mb` MiB mounted at `dir`, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, mb: u64) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // A step's mounts may outlive a failed build for a moment: detach lazily.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn buildwit(s: &Setup, root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_buildwit"))
        .arg("--config")
        .arg(&s.config)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn build(s: &Setup, root: &Path, ctx: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["build", ctx.to_str().unwrap(), "--progress=plain"];
    args.extend_from_slice(extra);
    buildwit(s, root, &args)
}

/// A failed build whose error says the disk is full and names `what`.
fn assert_full(out: &Output, what: &str) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "the build succeeded on a full disk");
    let last = err
        .lines()
        .rev()
        .find(|l| l.starts_with("error"))
        .unwrap_or_default();
    assert!(
        last.to_lowercase().contains("no space left"),
        "the error does not say the disk is full:\n{last}\n\n{err}"
    );
    assert!(
        last.contains(what),
        "the error does not name {what:?}:\n{last}"
    );
    eprintln!("{last}");
}

/// Nothing of the failed builds is left where only a running build keeps files.
fn assert_no_scratch(root: &Path) {
    let left = support::scratch_leftovers(root);
    assert!(left.is_empty(), "failed builds left {left:?}");
}

fn assert_ok(out: &Output) {
    assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));
}

/// Bytes of pseudo-random data (gzip cannot shrink them).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn a_step_that_fills_the_disk_fails_clearly_and_the_store_recovers() {
    let s = setup();
    let disk = s.dir.path().join("disk");
    let _mount = SmallDisk::mount(&disk, 48);
    let root = disk.join("root");

    let big = s.context(
        "big-step",
        &[(
            "Dockerfile",
            "FROM BASE\nRUN head -c 64000000 /dev/zero > /big\n",
        )],
    );
    assert_full(&build(&s, &root, &big, &[]), "RUN head -c 64000000");

    // The store took no harm: a small build works, and du and prune see a sane cache.
    let small = s.context(
        "small-step",
        &[(
            "Dockerfile",
            "FROM BASE\nRUN head -c 30000000 /dev/zero > /mid\n",
        )],
    );
    assert_ok(&build(&s, &root, &small, &[]));
    assert!(buildwit(&s, &root, &["du"]).status.success());

    // A second 30 MB step does not fit beside the first one's result ...
    let other = s.context(
        "other-step",
        &[(
            "Dockerfile",
            "FROM BASE\nRUN head -c 30000001 /dev/zero > /mid\n",
        )],
    );
    assert_full(&build(&s, &root, &other, &[]), "RUN head -c 30000001");
    // ... until a prune frees its space.
    let prune = buildwit(&s, &root, &["prune", "--all"]);
    assert!(prune.status.success(), "{}", text(&prune.stderr));
    assert_no_scratch(&root);
    assert_ok(&build(&s, &root, &other, &[]));
}

#[test]
fn a_context_or_an_export_larger_than_the_disk_fails_clearly() {
    let s = setup();
    let disk = s.dir.path().join("disk");
    let _mount = SmallDisk::mount(&disk, 40);
    let root = disk.join("root");

    // The context (24 MB) fits once, not twice: its snapshot and the COPY of it.
    let ctx = s.context("big-context", &[("Dockerfile", "FROM BASE\nCOPY . /src\n")]);
    for i in 0..3 {
        std::fs::write(ctx.join(format!("part{i}")), noise(8_000_000, i + 1)).unwrap();
    }
    let out = build(&s, &root, &ctx, &[]);
    assert_full(&out, "COPY . /src");
    let prune = buildwit(&s, &root, &["prune", "--all"]);
    assert!(prune.status.success(), "{}", text(&prune.stderr));
    assert_no_scratch(&root);

    // 12 MB of context builds, but its image (12 MB, incompressible) does not fit beside
    // the cache on the same disk.
    std::fs::remove_file(ctx.join("part2")).unwrap();
    std::fs::remove_file(ctx.join("part1")).unwrap();
    std::fs::write(ctx.join("part1"), noise(4_000_000, 9)).unwrap();
    let dest = disk.join("image.tar");
    let dest_arg = format!("type=oci,dest={}", dest.display());
    let out = build(&s, &root, &ctx, &["-o", &dest_arg]);
    assert_full(&out, "oci");
    assert!(
        !dest.exists(),
        "a half-written image was left at {}",
        dest.display()
    );
    assert_no_scratch(&root);

    // Exported elsewhere, the same build succeeds from the cache it kept.
    let elsewhere = s.dir.path().join("image.tar");
    let out = build(
        &s,
        &root,
        &ctx,
        &["-o", &format!("type=oci,dest={}", elsewhere.display())],
    );
    assert_ok(&out);
    support::skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", elsewhere.display()),
    ]);
}
