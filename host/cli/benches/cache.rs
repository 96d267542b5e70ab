//! Cache export and import benchmark: a build of many layers exports its cache (mode=max)
//! to a local directory and to a local `docker-registry`, then an empty root imports it.
//!
//! `cargo bench -p buildwit --bench cache` prints, per scenario, the median wall time of
//! the whole `buildwit build` (the build itself is fully cached, so the time is the export
//! or import plus a cached build, shown on its own first) and the bytes the export wrote.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{median, wipe_cache};

const RUNS: usize = 3;
/// Layers of the build: one RUN each, writing this many KiB.
const LAYERS: usize = 100;
const KIB_PER_LAYER: usize = 256;

/// One build with `extra` flags: its time, and the bytes its cache export wrote.
fn timed(s: &support::Setup, ctx: &Path, extra: &[&str]) -> (Duration, u64) {
    let t = Instant::now();
    let b = s.build(ctx, extra).ok();
    let elapsed = t.elapsed();
    let bytes = b
        .logs
        .iter()
        .find_map(|l| {
            let (_, rest) = l.split_once("blobs written (")?;
            rest.split_once(" bytes)")?.0.parse().ok()
        })
        .unwrap_or(0);
    (elapsed, bytes)
}

fn report(name: &str, runs: Vec<(Duration, u64)>) {
    let bytes = runs[0].1;
    let d = median(runs.into_iter().map(|r| r.0).collect());
    println!(
        "{name:<46} {:>8.3} s   {:>9.1} MiB written",
        d.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64
    );
}

fn main() {
    let s = support::setup();
    let host = s.image.split('/').next().unwrap().to_string();
    let mut dockerfile = String::from("FROM BASE\n");
    for i in 0..LAYERS {
        // Incompressible content, so the figures are about moving bytes.
        dockerfile.push_str(&format!(
            "RUN head -c {} /dev/urandom > /layer-{i}\n",
            KIB_PER_LAYER * 1024
        ));
    }
    let ctx = s.context("many-layers", &[("Dockerfile", &dockerfile)]);
    println!("{LAYERS} layers of {KIB_PER_LAYER} KiB, mode=max, gzip; median of {RUNS} runs\n");
    s.build(&ctx, &[]).ok();
    report(
        "fully cached build, no export",
        (0..RUNS).map(|_| timed(&s, &ctx, &[])).collect(),
    );

    let dir = |i: usize| s.dir.path().join(format!("cache-{i}"));
    let spec = |i: usize| format!("type=local,dest={},mode=max", dir(i).display());
    // The first export compresses the layers; later ones reuse the blobs.
    report(
        "first export (compresses), local directory",
        vec![timed(&s, &ctx, &["--cache-to", &spec(RUNS)])],
    );
    report(
        "export to a new local directory",
        (0..RUNS)
            .map(|i| timed(&s, &ctx, &["--cache-to", &spec(i)]))
            .collect(),
    );
    let local = format!("type=local,dest={},mode=max", dir(0).display());
    report(
        "export again to the same directory",
        (0..RUNS)
            .map(|_| timed(&s, &ctx, &["--cache-to", &local]))
            .collect(),
    );
    report(
        "export to a new registry repository",
        (0..RUNS)
            .map(|i| {
                let spec = format!("type=registry,ref={host}/bench-cache-{i}:c,mode=max");
                timed(&s, &ctx, &["--cache-to", &spec])
            })
            .collect(),
    );
    let registry = format!("type=registry,ref={host}/bench-cache-0:c,mode=max");
    report(
        "export again to the same registry reference",
        (0..RUNS)
            .map(|_| timed(&s, &ctx, &["--cache-to", &registry]))
            .collect(),
    );

    let from_local = format!("type=local,src={}", dir(0).display());
    report(
        "empty root: import from the local directory",
        (0..RUNS)
            .map(|_| {
                wipe_cache(&s.root);
                timed(&s, &ctx, &["--cache-from", &from_local])
            })
            .collect(),
    );
    let from_registry = format!("type=registry,ref={host}/bench-cache-0:c");
    report(
        "empty root: import from the registry",
        (0..RUNS)
            .map(|_| {
                wipe_cache(&s.root);
                timed(&s, &ctx, &["--cache-from", &from_registry])
            })
            .collect(),
    );
}
