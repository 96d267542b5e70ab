//! One frontend call: instantiate from the precompiled cache, run `build`, get a small
//! graph back as BuildKit protobuf. Also: loading a compiled component from disk.

use std::path::PathBuf;
use std::sync::Arc;

use buildwit_frontend::bridge::{
    Bridge, ErrorKind, Event, FrontendOutput, GatewayError, ImageRequest, ResolvedImage, SolvedRef,
    Stat,
};
use buildwit_frontend::{BUILT_FRONTENDS_DIR, Limits, Runtime};
use buildwit_llb::pb;
use criterion::{Criterion, criterion_group, criterion_main};

struct NoBridge;

impl Bridge for NoBridge {
    fn read_file(
        &self,
        _: &SolvedRef,
        _: &str,
        _: Option<(u64, u64)>,
    ) -> Result<Vec<u8>, GatewayError> {
        Err(GatewayError::new(ErrorKind::Unsupported, "none"))
    }
    fn read_dir(&self, _: &SolvedRef, _: &str, _: Option<&str>) -> Result<Vec<Stat>, GatewayError> {
        Err(GatewayError::new(ErrorKind::Unsupported, "none"))
    }
    fn stat_file(&self, _: &SolvedRef, _: &str) -> Result<Stat, GatewayError> {
        Err(GatewayError::new(ErrorKind::Unsupported, "none"))
    }
    fn evaluate(&self, _: &SolvedRef) -> Result<(), GatewayError> {
        Ok(())
    }
    fn resolve_image_config(&self, _: &ImageRequest) -> Result<ResolvedImage, GatewayError> {
        Err(GatewayError::new(ErrorKind::Unsupported, "none"))
    }
    fn worker_platforms(&self) -> Vec<pb::Platform> {
        vec![pb::Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            ..Default::default()
        }]
    }

    fn forward(
        &self,
        _: &str,
        _: Vec<(String, String)>,
        _: Vec<(String, pb::Definition)>,
    ) -> Result<FrontendOutput, GatewayError> {
        Err(GatewayError::new(ErrorKind::Unsupported, "none"))
    }
    fn event(&self, _: Event) {}
}

fn bench(c: &mut Criterion) {
    let bytes = std::fs::read(PathBuf::from(BUILT_FRONTENDS_DIR).join("probe.wasm")).unwrap();
    let cache = std::env::temp_dir().join(format!("buildwit-bench-{}", std::process::id()));
    // Compile once so every measured load is from the on-disk cache.
    Runtime::new(Limits::default(), Some(cache.clone()))
        .unwrap()
        .load("probe", &bytes)
        .unwrap();

    let runtime = Runtime::new(Limits::default(), Some(cache.clone())).unwrap();
    let probe = runtime.load("probe", &bytes).unwrap();
    let bridge: Arc<dyn Bridge> = Arc::new(NoBridge);
    c.bench_function("frontend call (instantiate + build + small graph)", |b| {
        b.iter(|| {
            let out = runtime
                .run(&probe, Vec::new(), Vec::new(), bridge.clone(), None)
                .unwrap();
            assert!(out.reference.is_some());
        })
    });
    c.bench_function("load compiled component from disk cache", |b| {
        b.iter(|| {
            let fresh = Runtime::new(Limits::default(), Some(cache.clone())).unwrap();
            assert!(!fresh.load("probe", &bytes).unwrap().compiled);
        })
    });
    let _ = std::fs::remove_dir_all(&cache);
}

criterion_group!(benches, bench);
criterion_main!(benches);
