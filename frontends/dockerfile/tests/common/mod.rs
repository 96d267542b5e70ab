//! Helpers shared by the frontend tests: a gateway with a Dockerfile and small images.

#![allow(dead_code)]

use buildwit_dockerfile::frontend::Dockerfile;
use buildwit_sdk::testing::{MemoryGateway, TestOutput, run};
use serde_json::Value;

/// A digest for test images.
pub const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// An image config with one layer and an environment.
pub fn config(arch: &str, env: &[&str], workdir: &str) -> String {
    serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": env, "WorkingDir": workdir},
        "rootfs": {"type": "layers", "diff_ids": [DIGEST]},
    })
    .to_string()
}

/// A gateway whose `dockerfile` local holds `dockerfile`, and which knows `busybox`
/// (linux/amd64) and `alpine:3.20` (linux/arm64).
pub fn gateway(dockerfile: &str) -> MemoryGateway {
    MemoryGateway::new()
        .option("cmdline", "test")
        .file("dockerfile", "Dockerfile", dockerfile)
        .image(
            "docker.io/library/busybox:latest",
            DIGEST,
            config("amd64", &["PATH=/bin"], "/"),
        )
        .image(
            "docker.io/library/alpine:3.20",
            DIGEST,
            config("arm64", &["PATH=/usr/bin", "ALPINE=1"], "/home"),
        )
}

/// Runs the frontend.
pub fn build(gw: &MemoryGateway) -> TestOutput {
    run::<Dockerfile>(gw).unwrap_or_else(|e| panic!("build failed: {e:?}"))
}

/// A metadata value parsed as JSON.
pub fn meta_json(out: &TestOutput, key: &str) -> Value {
    let text = out
        .metadata_str(key)
        .unwrap_or_else(|| panic!("no metadata {key}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{key}: {e}: {text}"))
}
