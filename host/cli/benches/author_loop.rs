//! A frontend author's edit-to-result loop, in Rust and in Python: a project from
//! `buildwit frontend new`, then, per round, one edit of its source, the component's build
//! (`cargo build --release --target wasm32-wasip2`; the Python project's `build.sh`) and a
//! `buildwit build --frontend-file` of a small steps file, cold (the new component is
//! compiled by the build) and warm (again, the compiled component cached). The median of
//! each part.
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
/// componentize-py takes seconds a round: fewer rounds of the Python loop.
const PYTHON_ROUNDS: usize = 5;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Stepfile"), "FROM scratch\n").unwrap();
    let root = dir.path().join("root");

    // Rust: the first build compiles the SDK and its dependencies, not part of the loop.
    let project = new_project(dir.path(), "steps", "rust");
    let target = dir.path().join("target");
    let rust = Loop {
        source: project.join("src/lib.rs"),
        line: "config.add_history(&step, \"steps\"",
        edit: |round| format!("config.add_history(&step, \"steps {round}\""),
        build: Box::new(move || {
            support::cargo(
                &project,
                &target,
                &["build", "--release", "--target", "wasm32-wasip2"],
            );
            target.join("wasm32-wasip2/release/steps.wasm")
        }),
    };
    rust.measure(
        "Rust, cargo build --release --target wasm32-wasip2",
        ROUNDS,
        &ctx,
        &root,
    );

    // Python: build.sh runs the project's tests natively, then componentize-py.
    let project = new_project(dir.path(), "steps-py", "python");
    let python = Loop {
        source: project.join("app.py"),
        line: "config.add_history(name, Steps.name)",
        edit: |round| format!("config.add_history(name, \"steps {round}\")"),
        build: Box::new(move || {
            let out = Command::new(project.join("build.sh")).output().unwrap();
            assert!(out.status.success(), "build.sh: {}", text(&out.stderr));
            project.join("steps-py.wasm")
        }),
    };
    python.measure(
        "Python, build.sh (tests + componentize-py)",
        PYTHON_ROUNDS,
        &ctx,
        &root,
    );
}

/// `buildwit frontend new DIR/NAME --lang LANG`.
fn new_project(dir: &Path, name: &str, lang: &str) -> std::path::PathBuf {
    let project = dir.join(name);
    let made = Command::new(env!("CARGO_BIN_EXE_buildwit"))
        .args(["frontend", "new", "--lang", lang])
        .arg(&project)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "frontend new: {}",
        text(&made.stderr)
    );
    project
}

/// One language's loop: edit `line` of `source`, build the component, build with it.
struct Loop {
    source: std::path::PathBuf,
    line: &'static str,
    edit: fn(usize) -> String,
    build: Box<dyn Fn() -> std::path::PathBuf>,
}

impl Loop {
    fn measure(&self, build_name: &str, rounds: usize, ctx: &Path, root: &Path) {
        (self.build)();
        let source = std::fs::read_to_string(&self.source).unwrap();
        let (mut builds, mut cold, mut warm, mut total) = (vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            // An edit that changes the component: the history comment of RUN steps.
            let edited = source.replace(self.line, &(self.edit)(round));
            assert_ne!(edited, source, "the template changed: edit another line");
            std::fs::write(&self.source, edited).unwrap();
            let started = Instant::now();
            let component = (self.build)();
            builds.push(started.elapsed());
            // The first build with the new component compiles it; the second loads the
            // compiled artifact.
            cold.push(build_with(&component, ctx, root));
            total.push(started.elapsed());
            warm.push(build_with(&component, ctx, root));
        }
        println!("edit-to-result loop, median of {rounds} rounds:");
        println!("  {build_name}: {:.3} s", secs(median(builds)));
        println!(
            "  buildwit build --frontend-file, cold (compiles the component): {:.3} s",
            secs(median(cold))
        );
        println!(
            "  buildwit build --frontend-file, warm (compiled before): {:.3} s",
            secs(median(warm))
        );
        println!("  edit to result: {:.3} s", secs(median(total)));
    }
}

/// `buildwit build --frontend-file COMPONENT CTX`; how long it took.
fn build_with(component: &Path, ctx: &Path, root: &Path) -> Duration {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_buildwit"))
        .arg("--root")
        .arg(root)
        .args(["build", "--progress=quiet", "--frontend-file"])
        .arg(component)
        .arg(ctx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "buildwit build: {}",
        text(&out.stderr)
    );
    started.elapsed()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
