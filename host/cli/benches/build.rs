//! Whole-build benchmark: `buildwit build` of Dockerfiles on a busybox base image from a
//! local `docker-registry`, runc for the steps, an OCI tarball out; the scenarios the
//! BuildKit reference figures in the solver issue were measured with.
//!
//! `cargo bench -p buildwit --bench build` prints the median of each scenario. "Cold"
//! means no build cache (no layers, no cache records, no pulled image) but the frontend
//! component already compiled, as BuildKit's built-in frontend needs no compile either.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{median, wipe_cache};

const RUNS: usize = 5;

fn timed(s: &support::Setup, ctx: &Path, out: &str) -> Duration {
    let t = Instant::now();
    s.build(ctx, &["--output", &format!("type=oci,dest={out}")])
        .ok();
    t.elapsed()
}

fn report(name: &str, d: Duration, reference: &str) {
    println!(
        "{name:<44} {:>9.3} s   (BuildKit v0.32: {reference})",
        d.as_secs_f64()
    );
}

fn main() {
    let s = support::setup();
    let out = s.dir.path().join("out.tar");
    let out = out.to_str().unwrap();

    // Two stages, one RUN, two COPYs.
    let two = s.context(
        "two-stage",
        &[
            ("Dockerfile", "FROM BASE AS build\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\nFROM BASE\nCOPY --from=build /b.txt /b.txt\n"),
            ("a.txt", "a\n"),
        ],
    );
    timed(&s, &two, out); // compiles the frontend once
    let cold = median(
        (0..RUNS)
            .map(|_| {
                wipe_cache(&s.root);
                timed(&s, &two, out)
            })
            .collect(),
    );
    report("two-stage cold", cold, "0.30 s");
    let cached = median((0..RUNS).map(|_| timed(&s, &two, out)).collect());
    report("two-stage fully cached", cached, "0.09 s");
    let edited = median(
        (0..RUNS)
            .map(|i| {
                std::fs::write(two.join("a.txt"), format!("edit {i}\n")).unwrap();
                timed(&s, &two, out)
            })
            .collect(),
    );
    report("two-stage after editing one file", edited, "0.17 s");

    // The cost of one more RUN step: 21 RUNs against 1, cold.
    let runs = |n: usize| {
        let mut df = String::from("FROM BASE\n");
        for i in 0..n {
            df.push_str(&format!("RUN echo {i} > /f{i}\n"));
        }
        df
    };
    let one = s.context("run-1", &[("Dockerfile", &runs(1))]);
    let many = s.context("run-21", &[("Dockerfile", &runs(21))]);
    let t1 = median(
        (0..3)
            .map(|_| {
                wipe_cache(&s.root);
                timed(&s, &one, out)
            })
            .collect(),
    );
    let t21 = median(
        (0..3)
            .map(|_| {
                wipe_cache(&s.root);
                timed(&s, &many, out)
            })
            .collect(),
    );
    report(
        "each extra RUN step",
        (t21.saturating_sub(t1)) / 20,
        "60 ms (buildah 240 ms)",
    );

    let chain = s.context("run-120", &[("Dockerfile", &runs(120))]);
    wipe_cache(&s.root);
    report("120-step RUN chain cold", timed(&s, &chain, out), "7.2 s");
    let c = median((0..RUNS).map(|_| timed(&s, &chain, out)).collect());
    report("120-step RUN chain cached", c, "0.17 s");

    let mut stages = String::from("FROM BASE AS s0\nRUN echo 0 > /f\n");
    for i in 1..200 {
        stages.push_str(&format!("FROM s{} AS s{i}\nRUN echo {i} >> /f\n", i - 1));
    }
    let st = s.context("stages-200", &[("Dockerfile", &stages)]);
    timed(&s, &st, out);
    let c = median((0..RUNS).map(|_| timed(&s, &st, out)).collect());
    report("200-stage chain cached", c, "0.32 s");

    // `# syntax=` through a Wasm frontend image from the local registry (the Dockerfile
    // frontend itself, pushed), against the built-in one; fully cached builds.
    let host = s.image.split('/').next().unwrap().to_string();
    let df = format!("{host}/buildwit/dockerfile:1");
    let component = format!("{}/dockerfile.wasm", buildwit_frontend::BUILT_FRONTENDS_DIR);
    assert!(
        s.buildwit(&["frontend", "push", &component, &df])
            .status
            .success()
    );
    let body = "FROM BASE AS build\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\nFROM BASE\nCOPY --from=build /b.txt /b.txt\n";
    let builtin = s.context("syntax-builtin", &[("Dockerfile", body), ("a.txt", "a\n")]);
    let wasm = s.context(
        "syntax-wasm",
        &[
            ("Dockerfile", &format!("# syntax={df}\n{body}")),
            ("a.txt", "a\n"),
        ],
    );
    timed(&s, &builtin, out);
    timed(&s, &wasm, out);
    let b = median((0..RUNS * 2).map(|_| timed(&s, &builtin, out)).collect());
    let w = median((0..RUNS * 2).map(|_| timed(&s, &wasm, out)).collect());
    report("cached build, built-in frontend", b, "0.085 s");
    report(
        "cached build, # syntax= Wasm frontend image",
        w,
        "0.174 s (container frontend)",
    );
    println!(
        "{:<44} {:>9.1} ms (BuildKit: ~90 ms)",
        "  difference",
        (w.as_secs_f64() - b.as_secs_f64()) * 1000.0
    );

    let thousand = s.context("run-1000", &[("Dockerfile", &runs(1000))]);
    wipe_cache(&s.root);
    report(
        "1000-layer Dockerfile cold",
        timed(&s, &thousand, out),
        "fails above ~489 layers",
    );
}
