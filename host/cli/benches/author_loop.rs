//! A frontend author's edit-to-result loop: a project from `buildwit frontend new`, then,
//! per round, one edit of its source, `cargo build --release --target wasm32-wasip2` and a
//! `buildwit build --frontend-file` of a small steps file (the new component is compiled by
//! the build). The median of each part.
//!
//! `cargo bench -p buildwit --bench author_loop`. There is no BuildKit row: its loop for a
//! frontend is a Go build, an image build and a push before `buildctl` can use it, and this
//! machine has neither a Go toolchain nor a Docker engine.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{median, text};

const ROUNDS: usize = 9;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("steps");
    let made = Command::new(env!("CARGO_BIN_EXE_buildwit"))
        .args(["frontend", "new"])
        .arg(&project)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "frontend new: {}",
        text(&made.stderr)
    );
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Stepfile"), "FROM scratch\n").unwrap();
    let target = dir.path().join("target");
    let root = dir.path().join("root");

    // The first build compiles the SDK and its dependencies: not part of the loop.
    cargo_build(&project, &target);
    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let (mut cargo, mut build, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // An edit that changes the component: the history comment of RUN steps.
        let edited = source.replace(
            "config.add_history(&step, \"steps\"",
            &format!("config.add_history(&step, \"steps {round}\""),
        );
        assert_ne!(edited, source, "the template changed: edit another line");
        std::fs::write(&lib, edited).unwrap();
        let started = Instant::now();
        cargo.push(cargo_build(&project, &target));
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_buildwit"))
            .arg("--root")
            .arg(&root)
            .args(["build", "--progress=quiet", "--frontend-file"])
            .arg(target.join("wasm32-wasip2/release/steps.wasm"))
            .arg(&ctx)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "buildwit build: {}",
            text(&out.stderr)
        );
        build.push(t.elapsed());
        total.push(started.elapsed());
    }
    println!("edit-to-result loop of a new frontend, median of {ROUNDS} rounds:");
    println!(
        "  cargo build --release --target wasm32-wasip2: {:.3} s",
        secs(median(cargo))
    );
    println!(
        "  buildwit build --frontend-file (compiles the component): {:.3} s",
        secs(median(build))
    );
    println!("  edit to result: {:.3} s", secs(median(total)));
}

/// `cargo build --release --target wasm32-wasip2` of the project; how long it took.
fn cargo_build(project: &Path, target: &Path) -> Duration {
    let started = Instant::now();
    support::cargo(
        project,
        target,
        &["build", "--release", "--target", "wasm32-wasip2"],
    );
    started.elapsed()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
