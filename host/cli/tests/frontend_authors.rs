//! The path of a third-party frontend author: the README's example, as written, in a crate
//! of its own, built with plain cargo for `wasm32-wasip2` (a component) and for
//! `wasm32-unknown-unknown` (a core module buildwit wraps), each run with `--frontend-file`;
//! and the README's walk from `buildwit frontend new` to a pushed frontend that serves
//! `# syntax=`.

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
    let out = s.dir.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    s.build(
        &ctx,
        &["--frontend-file", component.to_str().unwrap(), "-o", &dest],
    )
    .ok();
    assert_eq!(
        std::fs::read_to_string(out.join("greeting")).unwrap(),
        "hello\n"
    );

    // ... and, pushed, through `# syntax=` (the file is then named Dockerfile).
    let registry = s.image.split('/').next().unwrap();
    let reference = format!("{registry}/me/steps:1");
    let pushed = s.buildwit(&["frontend", "push", component.to_str().unwrap(), &reference]);
    assert!(
        pushed.status.success(),
        "frontend push: {}",
        text(&pushed.stderr)
    );
    let syntax = s.context(
        "syntax-ctx",
        &[(
            "Dockerfile",
            &format!("# syntax={reference}\nFROM BASE\nRUN echo syntax > /greeting\n"),
        )],
    );
    let out = s.dir.path().join("syntax-out");
    let dest = format!("type=local,dest={}", out.display());
    s.build(&syntax, &["-o", &dest]).ok();
    assert_eq!(
        std::fs::read_to_string(out.join("greeting")).unwrap(),
        "syntax\n"
    );
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
