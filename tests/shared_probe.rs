//! Included by the build scripts of crates whose tests read `../shared` (the conformance
//! corpus, the seeds, the real BuildKit in `peers/`). It finds the folder (`BUILDWIT_SHARED`,
//! else `shared` beside this checkout), gives its path to the tests as the compile-time
//! variable `BUILDWIT_SHARED_DIR`, and sets `cfg(no_shared)` when any of `needs` is missing
//! there, so those tests are compiled as ignored, with the reason. `.ci/run` makes the
//! folder's absence a failure.

use std::path::PathBuf;

pub fn probe(needs: &[&str]) {
    println!("cargo::rustc-check-cfg=cfg(no_shared)");
    println!("cargo::rerun-if-env-changed=BUILDWIT_SHARED");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    // Every crate sits two levels below the workspace root.
    let shared = std::env::var_os("BUILDWIT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../../shared"));
    println!("cargo::rustc-env=BUILDWIT_SHARED_DIR={}", shared.display());
    let missing = needs
        .iter()
        .filter(|need| !shared.join(need).exists())
        .count();
    if missing > 0 {
        // A missing path is not watched (cargo would rerun this on every build): a folder
        // added later is seen once `BUILDWIT_SHARED` names it.
        println!("cargo::rustc-cfg=no_shared");
    } else {
        for need in needs {
            println!("cargo::rerun-if-changed={}", shared.join(need).display());
        }
    }
}
