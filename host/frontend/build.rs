//! Builds the workspace's frontend components, so a plain `cargo build` / `cargo test`
//! produces them: each guest crate is compiled for `wasm32-unknown-unknown` by a nested
//! cargo (its own target directory, so it neither waits on nor invalidates the outer build)
//! and wrapped into a component with `wit-component`. Components land in
//! `<target>/frontends/<name>.wasm`; files whose bytes did not change are not rewritten.

#[path = "src/engine.rs"]
mod engine;
#[path = "src/wrap.rs"]
mod wrap;

use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

/// The built-in frontends, compiled ahead of time into `<name>.cwasm` beside the component.
const BUILTIN: &[&str] = &["dockerfile", "dockerfile-labs"];

/// (cargo package, cargo features, component name). Guests with other features are built
/// by a separate cargo run, so features do not unify across them.
const GUESTS: &[(&str, &str, &str)] = &[
    ("buildwit-dockerfile", "", "dockerfile"),
    ("buildwit-dockerfile", "labs", "dockerfile-labs"),
    ("buildwit-plugin-toml-spec", "", "toml-spec"),
    ("buildwit-test-probe", "", "probe"),
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest.join("../..").canonicalize().unwrap();
    println!("cargo:rerun-if-changed=src/engine.rs");
    for dir in [
        "wit",
        "sdk",
        "plugins",
        "frontends",
        "tests/frontends",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }

    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target = out
        .ancestors()
        .nth(4)
        .expect("OUT_DIR inside the target directory")
        .to_path_buf();
    let out_dir = target.join("frontends");
    println!(
        "cargo:rustc-env=BUILDWIT_FRONTENDS_DIR={}",
        out_dir.display()
    );
    ensure_wasm_target();
    let guest_target = target.join("wasm-guests");
    fs::create_dir_all(&out_dir).unwrap();
    let mut feature_sets: Vec<&str> = GUESTS.iter().map(|g| g.1).collect();
    feature_sets.sort_unstable();
    feature_sets.dedup();
    for features in feature_sets {
        let guests: Vec<_> = GUESTS.iter().filter(|g| g.1 == features).collect();
        cargo_build(
            &workspace,
            &guest_target,
            features,
            guests.iter().map(|g| g.0),
        );
        for (package, _, name) in guests {
            let module = guest_target
                .join("wasm32-unknown-unknown/guest")
                .join(format!("{}.wasm", package.replace('-', "_")));
            let dest = out_dir.join(format!("{name}.wasm"));
            componentize(&module, &dest);
            if *name == "probe" {
                // The core module too, for the runtime's tests of wrapping one.
                copy_if_changed(&module, &out_dir.join("probe-module.wasm"));
            }
            // The digest at build time, so the embedded components are not hashed again
            // on every start.
            let component = fs::read(&dest).unwrap();
            let digest = hex::encode(Sha256::digest(&component));
            println!(
                "cargo:rustc-env=BUILDWIT_DIGEST_{}=sha256:{digest}",
                name.replace('-', "_").to_uppercase(),
            );
            if BUILTIN.contains(name) {
                precompile(&component, &digest, &out_dir.join(format!("{name}.cwasm")));
            }
        }
    }
}

/// The guests need the standard library of `wasm32-unknown-unknown`. rustup (1.28 and
/// later) no longer adds `rust-toolchain.toml`'s targets to a toolchain already installed,
/// so add it here when rustup is there, or stop with the command to run.
fn ensure_wasm_target() {
    const TARGET: &str = "wasm32-unknown-unknown";
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |dir: &Option<PathBuf>| {
        dir.as_ref()
            .and_then(|d| fs::read_dir(d).ok())
            .is_some_and(|mut entries| {
                entries.any(|e| {
                    e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
                })
            })
    };
    if installed(&libdir) {
        return;
    }
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    if let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    eprintln!("the Rust target {TARGET} is missing: running rustup target add {TARGET}");
    if rustup.status().is_ok_and(|s| s.success()) && installed(&libdir) {
        return;
    }
    eprintln!(
        "error: the Rust target {TARGET} is not installed; run `rustup target add {TARGET}` (with rustup) and build again"
    );
    std::process::exit(1);
}

/// Build guest packages for wasm32-unknown-unknown with the `guest` profile.
fn cargo_build<'a>(
    workspace: &Path,
    target_dir: &Path,
    features: &str,
    packages: impl Iterator<Item = &'a str>,
) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--profile",
            "guest",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    for package in packages {
        cmd.args(["-p", package]);
    }
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
    // The outer build's settings are for the host, not for the guests.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the frontend components");
    assert!(
        status.success(),
        "building the frontend components failed (see above)"
    );
}

/// Compile a built-in component for this machine with the runtime's engine settings, so
/// the first build on an empty state directory does not wait for Cranelift. Skipped when
/// the artifact beside it was made from the same component with the same engine settings
/// and locked dependencies (wasmtime's version).
fn precompile(component: &[u8], digest: &str, dest: &Path) {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let mut inputs = Sha256::new();
    for file in ["src/engine.rs", "../../Cargo.lock"] {
        inputs.update(fs::read(manifest.join(file)).unwrap_or_default());
    }
    let stamp = format!("{digest} {}", hex::encode(inputs.finalize()));
    let stamp_file = dest.with_extension("cwasm.stamp");
    if dest.exists() && fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp) {
        return;
    }
    let engine = wasmtime::Engine::new(&engine::config()).expect("a wasmtime engine");
    let artifact = engine
        .precompile_component(component)
        .unwrap_or_else(|e| panic!("precompile {}: {e:?}", dest.display()));
    let tmp = dest.with_extension("cwasm.tmp");
    fs::write(&tmp, &artifact).unwrap();
    fs::rename(&tmp, dest).unwrap();
    fs::write(&stamp_file, stamp).unwrap();
}

fn copy_if_changed(from: &Path, to: &Path) {
    let bytes = fs::read(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    if fs::read(to).ok().as_deref() != Some(bytes.as_slice()) {
        let tmp = to.with_extension("wasm.tmp");
        fs::write(&tmp, &bytes).unwrap();
        fs::rename(&tmp, to).unwrap();
    }
}

/// Wrap a core module carrying wit-bindgen's component-type section into a component.
fn componentize(module: &Path, dest: &Path) {
    let bytes = fs::read(module).unwrap_or_else(|e| panic!("read {}: {e}", module.display()));
    let component = wrap::component_of(&bytes)
        .unwrap_or_else(|e| panic!("componentize {}: {e}", module.display()));
    if fs::read(dest).ok().as_deref() != Some(&*component) {
        let tmp = dest.with_extension("wasm.tmp");
        fs::write(&tmp, &component).unwrap();
        fs::rename(&tmp, dest).unwrap();
    }
}
