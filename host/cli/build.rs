//! Whether `../shared` (the real BuildKit in `peers/`, for the differential tests) is beside
//! this checkout, or at `BUILDWIT_SHARED`: tests that need it are compiled as ignored, with
//! the reason, when it is absent (`.ci/run` makes its absence a failure).

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(no_shared)");
    println!("cargo::rerun-if-env-changed=BUILDWIT_SHARED");
    let shared = std::env::var_os("BUILDWIT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
                .join("../../../shared")
        });
    let peers = shared.join("peers/install.sh");
    println!("cargo::rerun-if-changed={}", peers.display());
    if !peers.exists() {
        println!("cargo::rustc-cfg=no_shared");
    }
}
