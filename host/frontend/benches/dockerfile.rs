//! The built-in Dockerfile frontend through the Wasm component, instantiate included:
//! a generated 1000-instruction Dockerfile, a 200-stage chain, and 250/500/1000 lines to
//! see that conversion time grows linearly. Base images are answered from the
//! conformance corpus's images.json, so no registry is involved.

use std::sync::Arc;

use buildwit_frontend::bridge::{
    Bridge, ErrorKind, Event, FrontendOutput, GatewayError, ImageRequest, ResolvedImage, SolvedRef,
    Stat,
};
use buildwit_frontend::{Limits, Runtime, builtin};
use buildwit_llb::pb;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const BUSYBOX: &str = "127.0.0.1:5000/library/busybox:latest";

/// Serves one Dockerfile and one image config.
struct DockerfileBridge {
    dockerfile: Vec<u8>,
    image: ResolvedImage,
}

impl Bridge for DockerfileBridge {
    fn read_file(
        &self,
        _: &SolvedRef,
        path: &str,
        _: Option<(u64, u64)>,
    ) -> Result<Vec<u8>, GatewayError> {
        match path {
            "Dockerfile" => Ok(self.dockerfile.clone()),
            _ => Err(GatewayError::new(
                ErrorKind::NotFound,
                format!("{path}: not found"),
            )),
        }
    }
    fn read_dir(&self, _: &SolvedRef, _: &str, _: Option<&str>) -> Result<Vec<Stat>, GatewayError> {
        Ok(Vec::new())
    }
    fn stat_file(&self, _: &SolvedRef, path: &str) -> Result<Stat, GatewayError> {
        Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("{path}: not found"),
        ))
    }
    fn evaluate(&self, _: &SolvedRef) -> Result<(), GatewayError> {
        Ok(())
    }
    fn resolve_image_config(&self, _: &ImageRequest) -> Result<ResolvedImage, GatewayError> {
        Ok(self.image.clone())
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
        f: &str,
        _: Vec<(String, String)>,
        _: Vec<(String, pb::Definition)>,
    ) -> Result<FrontendOutput, GatewayError> {
        Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("invalid frontend: {f}"),
        ))
    }
    fn event(&self, _: Event) {}
}

fn busybox() -> ResolvedImage {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/dockerfile/images.json"
    );
    let images: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let entry = &images[BUSYBOX];
    ResolvedImage {
        reference: BUSYBOX.into(),
        digest: entry["digest"].as_str().unwrap().into(),
        config: entry["configRaw"].as_str().unwrap().as_bytes().to_vec(),
    }
}

fn runs(n: usize) -> String {
    let mut s = format!("FROM {BUSYBOX}\n");
    for i in 0..n {
        s.push_str(&format!("RUN echo step {i} > /step-{i}\n"));
    }
    s
}

fn stages(n: usize) -> String {
    let mut s = format!("FROM {BUSYBOX} AS s0\nRUN echo 0\n");
    for i in 1..n {
        s.push_str(&format!("FROM s{} AS s{i}\nRUN echo {i}\n", i - 1));
    }
    s
}

fn bench(c: &mut Criterion) {
    let cache = std::env::temp_dir().join(format!("buildwit-bench-df-{}", std::process::id()));
    let runtime = Runtime::new(Limits::default(), Some(cache.clone())).unwrap();
    let frontend = runtime.load("dockerfile.v0", builtin::DOCKERFILE).unwrap();
    let image = busybox();
    let convert = |name: &str, text: String, expect_ops: usize| {
        let bridge: Arc<dyn Bridge> = Arc::new(DockerfileBridge {
            dockerfile: text.into_bytes(),
            image: image.clone(),
        });
        let check = runtime
            .run(&frontend, Vec::new(), Vec::new(), bridge.clone(), None)
            .unwrap();
        let ops = check.reference.unwrap().definition.def.len();
        assert!(ops >= expect_ops, "{name}: {ops} ops");
        (name.to_string(), bridge)
    };
    let cases = [
        convert("1000 RUN lines", runs(1000), 1001),
        convert("200 chained stages", stages(200), 201),
    ];
    let mut group = c.benchmark_group("dockerfile frontend (Wasm, instantiate included)");
    group.sample_size(20);
    for (name, bridge) in &cases {
        group.bench_function(name.as_str(), |b| {
            b.iter(|| {
                runtime
                    .run(&frontend, Vec::new(), Vec::new(), bridge.clone(), None)
                    .unwrap()
            })
        });
    }
    for n in [250, 500, 1000] {
        let (_, bridge) = convert("scaling", runs(n), n + 1);
        group.bench_with_input(BenchmarkId::new("RUN lines", n), &bridge, |b, bridge| {
            b.iter(|| {
                runtime
                    .run(&frontend, Vec::new(), Vec::new(), bridge.clone(), None)
                    .unwrap()
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&cache);
}

criterion_group!(benches, bench);
criterion_main!(benches);
