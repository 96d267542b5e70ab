//! What a RUN step costs in each network mode, buildwitd against buildkitd measured in the
//! same run on the same machine: `host` (the default without a CNI config), the built-in
//! `bridge` with a pool of namespaces, and `--network=none`.
//!
//! The cost of one step is the difference between a build of `STEPS + 1` RUN steps and a
//! build of one, divided by `STEPS`: what the frontend, the base image and the client cost
//! cancels out. Every build runs its steps for real (a new build argument each time).
//!
//! `cargo bench -p buildwit --bench network` prints medians. BuildKit comes from
//! `../shared/peers` (its `install.sh`); without it, its column is left out.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Daemon, Request, buildkitd, buildwitd, peers};
use support::{Setup, median};

/// RUN steps in the long build.
const STEPS: usize = 20;
const RUNS: usize = 5;

/// Contexts of 1 and `STEPS + 1` steps with `RUN [flags]`.
fn contexts(s: &Setup, name: &str, flags: &str) -> (PathBuf, PathBuf) {
    let steps = |n: usize| {
        let mut d = String::from("FROM BASE\nARG NONCE\n");
        for i in 0..n {
            d.push_str(&format!("RUN {flags} echo $NONCE {i} > /f{i}\n"));
        }
        d
    };
    (
        s.context(&format!("{name}-1"), &[("Dockerfile", &steps(1))]),
        s.context(&format!("{name}-n"), &[("Dockerfile", &steps(STEPS + 1))]),
    )
}

/// The median cost of one step with this daemon.
fn per_step(d: &Daemon, (one, many): &(PathBuf, PathBuf), round: &mut usize) -> Duration {
    let mut run = |ctx: &Path| {
        *round += 1;
        let nonce = Request {
            args: vec![("NONCE", format!("n{round}"))],
            ..Default::default()
        };
        d.build(ctx, &nonce)
    };
    // Warm: base image pulled, frontend ready, namespaces pooled.
    run(one);
    run(many);
    let ones = median((0..RUNS).map(|_| run(one)).collect());
    let manys = median((0..RUNS).map(|_| run(many)).collect());
    manys.saturating_sub(ones) / STEPS as u32
}

fn main() {
    let s = support::setup();
    // Keys of [worker.oci].
    let bridge = "networkMode = \"bridge\"\ncniPoolSize = 4\ncniBinaryPath = \"/usr/lib/cni\"";
    let mut round = 0;
    let host_ctx = contexts(&s, "host", "");
    let none_ctx = contexts(&s, "none", "--network=none");

    let mut rows: Vec<(&str, Duration, Option<Duration>)> = Vec::new();
    {
        let d = buildwitd(&s, "bw-host", "");
        rows.push(("host (default)", per_step(&d, &host_ctx, &mut round), None));
        rows.push(("none", per_step(&d, &none_ctx, &mut round), None));
    }
    {
        let d = buildwitd(
            &s,
            "bw-bridge",
            &format!(
                "[worker.oci]\n{bridge}\nbridgeName = \"bwbench0\"\nbridgeSubnet = \"10.215.0.0/16\""
            ),
        );
        rows.push((
            "bridge, pool of 4",
            per_step(&d, &host_ctx, &mut round),
            None,
        ));
    }
    match peers() {
        Some(peers) => {
            let d = buildkitd(&s, &peers, "bk-host", "");
            rows[0].2 = Some(per_step(&d, &host_ctx, &mut round));
            rows[1].2 = Some(per_step(&d, &none_ctx, &mut round));
            drop(d);
            let d = buildkitd(&s, &peers, "bk-bridge", bridge);
            rows[2].2 = Some(per_step(&d, &host_ctx, &mut round));
        }
        None => eprintln!("BuildKit not found (../shared/peers): its column is left out"),
    }
    println!("one RUN step, by network mode (median of {RUNS}, {STEPS} steps per build)");
    println!(
        "{:<20} {:>10} {:>10} {:>7}",
        "mode", "buildwit", "BuildKit", "ratio"
    );
    for (mode, ours, theirs) in rows {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        match theirs {
            Some(t) => println!(
                "{mode:<20} {:>8.1}ms {:>8.1}ms {:>6.1}x",
                ms(ours),
                ms(t),
                ms(t) / ms(ours).max(0.001)
            ),
            None => println!("{mode:<20} {:>8.1}ms {:>10} {:>7}", ms(ours), "-", "-"),
        }
    }
}
