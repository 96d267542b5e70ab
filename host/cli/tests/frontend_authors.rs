//! The path of a third-party frontend author: the README's example, as written, in a crate
//! of its own, built with plain cargo for `wasm32-wasip2` (a component) and for
//! `wasm32-unknown-unknown` (a core module buildwit wraps), each run with `--frontend-file`;
//! the README's walk from `buildwit frontend new` to a pushed frontend that serves
//! `# syntax=`; and the same walk in Python (componentize-py), whose frontend must give the
//! same LLB as the Rust one.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::text;

/// The first Rust block of the README's "Writing a frontend" section.
fn readme_example() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(readme).unwrap();
    let section = &readme[readme.find("## Writing a frontend").unwrap()..];
    let start = section.find("```rust\n").unwrap() + "```rust\n".len();
    section[start..][..section[start..].find("```").unwrap()].to_string()
}

/// Add a Rust target through rustup when the toolchain lacks it, as the build does for its
/// own Wasm target.
fn ensure_target(target: &str) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .unwrap();
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let installed = std::fs::read_dir(&libdir).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
    });
    if !installed {
        let status = Command::new("rustup")
            .args(["target", "add", target])
            .status()
            .unwrap();
        assert!(status.success(), "rustup target add {target}");
    }
}

#[test]
fn the_readme_frontend_builds_with_plain_cargo_and_runs() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-frontend");
    let krate = work.join("hello");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n\
             [dependencies]\nbuildwit-sdk = {{ path = {:?} }}\n\n[workspace]\n",
            workspace.join("sdk").canonicalize().unwrap()
        ),
    )
    .unwrap();
    std::fs::write(krate.join("src/lib.rs"), readme_example()).unwrap();
    // The workspace's versions of the SDK's dependencies, not whatever is newest.
    if !krate.join("Cargo.lock").exists() {
        std::fs::copy(workspace.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    }

    // std's hash maps import wasi:random/insecure-seed on wasip2: buildwit seeds them, and
    // the rest of what std imports is inert. The core module needs no wasm-tools.
    for target in ["wasm32-wasip2", "wasm32-unknown-unknown"] {
        ensure_target(target);
        let component = cargo_build(&krate, &target_dir(), target, "hello");
        let built = run(&component);
        assert_eq!(built, "hello author\n", "{target}");
    }
}

#[test]
fn a_new_frontend_is_tested_built_pushed_and_serves_syntax() {
    let s = support::setup();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("new-frontend");
    let _ = std::fs::remove_dir_all(work.join("steps"));
    std::fs::create_dir_all(&work).unwrap();
    let project = work.join("steps");
    let made = s.buildwit(&["frontend", "new", project.to_str().unwrap()]);
    assert!(
        made.status.success(),
        "frontend new: {}",
        text(&made.stderr)
    );
    assert!(
        text(&made.stdout).contains("cargo test"),
        "{}",
        text(&made.stdout)
    );
    // Again on the same directory: refused, nothing overwritten.
    let again = s.buildwit(&["frontend", "new", project.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("not empty"),
        "{}",
        text(&again.stderr)
    );

    // Its own tests pass, natively, then the component builds.
    let tested = support::cargo(&project, &target_dir(), &["test"]);
    assert!(tested.contains("test result: ok. 2 passed"), "{tested}");
    ensure_target("wasm32-wasip2");
    let component = cargo_build(&project, &target_dir(), "wasm32-wasip2", "steps");

    // It builds an image from a steps file, with `--frontend-file` ...
    let ctx = s.context(
        "steps-ctx",
        &[("Stepfile", "FROM BASE\nRUN echo hello > /greeting\n")],
    );
    assert_eq!(
        greeting(&s, &ctx, &["--frontend-file", component.to_str().unwrap()]),
        "hello\n"
    );

    // ... and, pushed, through `# syntax=` (the file is then named Dockerfile).
    assert_eq!(serves_syntax(&s, &component, "steps"), "syntax\n");
}

#[test]
fn a_python_frontend_is_tested_built_pushed_serves_syntax_and_matches_the_rust_one() {
    let s = support::setup();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("new-frontend-python");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let project = work.join("steps");
    let made = s.buildwit(&[
        "frontend",
        "new",
        project.to_str().unwrap(),
        "--lang",
        "python",
    ]);
    assert!(
        made.status.success(),
        "frontend new: {}",
        text(&made.stderr)
    );
    assert!(
        text(&made.stdout).contains("./build.sh"),
        "{}",
        text(&made.stdout)
    );

    // Its script runs its tests natively, then makes the component; and again, as after
    // an edit.
    support::program("componentize-py", "pip3 install componentize-py==0.25.0");
    for _ in 0..2 {
        let built = Command::new(project.join("build.sh")).output().unwrap();
        let log = format!("{}{}", text(&built.stdout), text(&built.stderr));
        assert!(built.status.success(), "build.sh: {log}");
        assert!(log.contains("Ran 2 tests") && log.contains("OK"), "{log}");
    }
    let component = project.join("steps.wasm");

    // It builds an image from a steps file ...
    let stepfile = "FROM BASE\nRUN echo hello > /greeting\n";
    let ctx = s.context("steps-ctx", &[("Stepfile", stepfile)]);
    assert_eq!(
        greeting(&s, &ctx, &["--frontend-file", component.to_str().unwrap()]),
        "hello\n"
    );

    // ... with the very LLB the Rust frontend of `frontend new` makes of it ...
    let rust = work.join("steps-rs");
    let made = s.buildwit(&["frontend", "new", rust.to_str().unwrap()]);
    assert!(
        made.status.success(),
        "frontend new: {}",
        text(&made.stderr)
    );
    ensure_target("wasm32-wasip2");
    let rust_component = cargo_build(&rust, &target_dir(), "wasm32-wasip2", "steps_rs");
    let llb = |frontend: &Path| {
        let b = s
            .build(
                &ctx,
                &["--frontend-file", frontend.to_str().unwrap(), "--dump-llb"],
            )
            .ok();
        text(&b.out.stdout)
    };
    let python_llb = llb(&component);
    assert!(python_llb.contains("echo hello"), "{python_llb}");
    assert_eq!(python_llb, llb(&rust_component));

    // ... and, pushed, through `# syntax=`.
    assert_eq!(serves_syntax(&s, &component, "steps-py"), "syntax\n");

    // An error points at its line.
    let bad = s.context("bad-ctx", &[("Stepfile", "# steps\nRUN true\n")]);
    let failed = s.buildwit(&[
        "build",
        bad.to_str().unwrap(),
        "--frontend-file",
        component.to_str().unwrap(),
    ]);
    assert!(!failed.status.success());
    let err = text(&failed.stderr);
    assert!(
        err.contains("the first step must be FROM") && err.contains("Stepfile:2"),
        "{err}"
    );
}

/// What a Python frontend can reach through WASI: no files, environment or network; clocks at
/// the epoch and the same random numbers on every run; its prints in the build's log.
#[test]
fn a_python_frontend_sees_nothing_of_the_host_and_the_same_world_every_run() {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-sandbox");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("app.py"),
        r#"import os, random, socket, sys, time
from buildwit_sdk import BuildResult, Frontend, export

def attempt(what, f):
    try:
        return f"{what}: {f()!r}"
    except Exception as e:
        return f"{what}: {type(e).__name__}"

class Probe(Frontend):
    name = "probe"

    def build(self, client):
        print(attempt("time", time.time), attempt("monotonic", time.monotonic))
        print(attempt("random", random.random), attempt("urandom", lambda: os.urandom(4).hex()))
        print(attempt("environ", lambda: dict(os.environ)), attempt("listdir", lambda: os.listdir("/")))
        print(attempt("connect", lambda: socket.socket().connect(("127.0.0.1", 22))))
        # The clock stands still: a timer on it is due at once.
        print(attempt("sleep", lambda: time.sleep(3600)))
        print("to stderr", file=sys.stderr)
        return BuildResult()

Builder = export(Probe)
"#,
    )
    .unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let componentize = support::program("componentize-py", "pip3 install componentize-py==0.25.0");
    let built = Command::new(componentize)
        .current_dir(&work)
        .arg("-d")
        .arg(workspace.join("wit"))
        .args(["-w", "frontend", "componentize", "app", "-p", "."])
        .arg("-p")
        .arg(workspace.join("sdk/python"))
        .args(["-o", "probe.wasm"])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "componentize-py: {}",
        text(&built.stderr)
    );

    let ctx = work.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let log = |root: &str| {
        let mut build = Command::new(env!("CARGO_BIN_EXE_buildwit"));
        build
            .arg("--root")
            .arg(work.join(root))
            .args(["build", "--progress=plain", "--frontend-file"])
            .arg(work.join("probe.wasm"))
            .arg(&ctx);
        // A sleep that really slept would hold the build for an hour: fail instead.
        let out = support::output_within(build, std::time::Duration::from_secs(300));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let all = text(&out.stderr) + &text(&out.stdout);
        // Its lines, without the progress prefix.
        all.lines()
            .filter_map(|l| {
                l.split_once("probe.wasm] ")
                    .map(|(_, rest)| rest.to_string())
            })
            .collect::<Vec<_>>()
    };
    let first = log("root-a");
    let lines = first.join("\n");
    for expected in [
        "info: time: 0.0 monotonic: 0.0",
        "environ: {}",
        "listdir: FileNotFoundError",
        "connect: PermissionError",
        "sleep: None",
        "warn: to stderr",
    ] {
        assert!(lines.contains(expected), "{expected:?} in\n{lines}");
    }
    // Another run, on another root: the same world.
    assert_eq!(first, log("root-b"));
}

/// Build `ctx` (with `extra` arguments) into a local output: the `/greeting` it made.
fn greeting(s: &support::Setup, ctx: &Path, extra: &[&str]) -> String {
    let out = ctx.with_extension("out");
    let dest = format!("type=local,dest={}", out.display());
    let mut args = extra.to_vec();
    args.extend(["-o", &dest]);
    s.build(ctx, &args).ok();
    std::fs::read_to_string(out.join("greeting")).unwrap()
}

/// Push `component` to the test registry as `me/NAME:1`, then build a Dockerfile whose
/// `# syntax=` names it: the `/greeting` its RUN step wrote.
fn serves_syntax(s: &support::Setup, component: &Path, name: &str) -> String {
    let registry = s.image.split('/').next().unwrap();
    let reference = format!("{registry}/me/{name}:1");
    let pushed = s.buildwit(&["frontend", "push", component.to_str().unwrap(), &reference]);
    assert!(
        pushed.status.success(),
        "frontend push: {}",
        text(&pushed.stderr)
    );
    let syntax = s.context(
        &format!("{name}-syntax-ctx"),
        &[(
            "Dockerfile",
            &format!("# syntax={reference}\nFROM BASE\nRUN echo syntax > /greeting\n"),
        )],
    );
    greeting(s, &syntax, &[])
}

/// One target directory for the authors' crates: the SDK is compiled once for them all.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("frontend-authors")
}

/// `cargo build --release --target TARGET` of the crate; the `.wasm` it made.
fn cargo_build(krate: &Path, target_dir: &Path, target: &str, name: &str) -> PathBuf {
    support::cargo(
        krate,
        target_dir,
        &["build", "--release", "--target", target],
    );
    target_dir.join(target).join(format!("release/{name}.wasm"))
}

/// Build with the frontend file; the file it wrote.
fn run(frontend: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "unused\n").unwrap();
    let dest = dir.path().join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_buildwit"))
        .arg("--root")
        .arg(dir.path().join("root"))
        .args(["build", "--frontend-file"])
        .arg(frontend)
        .args(["--opt", "name=author"])
        .arg(&ctx)
        .arg("-o")
        .arg(format!("type=local,dest={}", dest.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "buildwit build --frontend-file {}: {}",
        frontend.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dest.join("hello")).unwrap()
}
