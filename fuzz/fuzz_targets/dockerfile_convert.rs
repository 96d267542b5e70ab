//! The whole Dockerfile frontend: parse, expand, resolve base images, lint and convert to
//! LLB, against the SDK's in-memory gateway. The converter must return an error, never
//! panic, and what it returns must be a graph whose inputs and result name earlier ops (the
//! host checks the rest: that target cannot hold wasmtime).
#![no_main]

use buildwit_dockerfile::frontend::Dockerfile;
use buildwit_sdk::testing::{MemoryGateway, run};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin:/bin"],"Cmd":["sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":[]}}"#;
const DIGEST: &str = "sha256:d53446ae75a74596551f620f394d5dd30aa9743f781130c60b699f932752a9b3";

fuzz_target!(|data: &[u8]| {
    let mut gateway = MemoryGateway::new()
        .file("dockerfile", "Dockerfile", data.to_vec())
        .option("build-arg:VERSION", "1.2")
        .option("platform", "linux/amd64,linux/arm64");
    for name in ["busybox", "alpine", "debian:bookworm"] {
        let reference = if name.contains(':') {
            format!("docker.io/library/{name}")
        } else {
            format!("docker.io/library/{name}:latest")
        };
        gateway = gateway.image(&reference, DIGEST, CONFIG);
    }
    if let Ok(out) = run::<Dockerfile>(&gateway) {
        for def in out
            .definition
            .iter()
            .chain(out.platforms.iter().map(|(_, d)| d))
        {
            for (i, op) in def.ops.iter().enumerate() {
                assert!(
                    op.inputs.iter().all(|input| (input.op as usize) < i),
                    "op {i} names a later op"
                );
            }
            if let Some(result) = &def.result {
                assert!(
                    (result.op as usize) < def.ops.len(),
                    "the result names no op"
                );
            }
            assert!(
                def.metadata
                    .iter()
                    .all(|(at, _)| (*at as usize) < def.ops.len())
            );
        }
    }
});
