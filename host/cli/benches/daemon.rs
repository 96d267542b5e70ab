//! buildwitd against the in-process engine: the overhead of a fully cached build through
//! the daemon (connect, context listing, events over gRPC), and the throughput of small
//! builds run concurrently against one daemon.
//!
//! `cargo bench -p buildwit --bench daemon` prints medians (and builds per second).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::median;

const RUNS: usize = 9;
const CONCURRENT: usize = 8;

fn build_cmd(s: &support::Setup, addr: Option<&str>, ctx: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_buildwit"));
    match addr {
        Some(a) => c.args(["--addr", a]),
        // The daemon holds its root's cache database: in-process builds get their own.
        None => c
            .arg("--config")
            .arg(&s.config)
            .arg("--root")
            .arg(s.dir.path().join("in-process-root")),
    };
    c.arg("build")
        .arg(ctx)
        .arg("--progress=quiet")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn timed(s: &support::Setup, addr: Option<&str>, ctx: &Path) -> Duration {
    let t = Instant::now();
    let out = build_cmd(s, addr, ctx).output().unwrap();
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    t.elapsed()
}

/// `CONCURRENT` builds at once; the wall time of all of them.
fn wave(s: &support::Setup, addr: &str, contexts: &[PathBuf]) -> Duration {
    let t = Instant::now();
    let children: Vec<Child> = contexts
        .iter()
        .map(|ctx| build_cmd(s, Some(addr), ctx).spawn().unwrap())
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", support::text(&out.stderr));
    }
    t.elapsed()
}

fn main() {
    let s = support::setup();
    let sock = s.dir.path().join("bench.sock");
    let addr = format!("unix://{}", sock.display());
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_buildwitd"))
        .arg("--config")
        .arg(&s.config)
        .arg("--root")
        .arg(&s.root)
        .args(["--addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "buildwitd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let ctx = s.context(
        "cached",
        &[
            (
                "Dockerfile",
                "FROM BASE\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n",
            ),
            ("a.txt", "a\n"),
        ],
    );
    // Warm both: the frontend compiled, every step cached (one root, so one cache).
    timed(&s, None, &ctx);
    timed(&s, Some(&addr), &ctx);
    let local = median((0..RUNS).map(|_| timed(&s, None, &ctx)).collect());
    let remote = median((0..RUNS).map(|_| timed(&s, Some(&addr), &ctx)).collect());
    println!(
        "fully cached build, in-process            {:>8.1} ms",
        local.as_secs_f64() * 1e3
    );
    println!(
        "fully cached build, through buildwitd     {:>8.1} ms",
        remote.as_secs_f64() * 1e3
    );

    let mut round = 0;
    let mut contexts = |label: &str| -> Vec<PathBuf> {
        round += 1;
        (0..CONCURRENT)
            .map(|i| {
                s.context(
                    &format!("{label}-{round}-{i}"),
                    &[
                        (
                            "Dockerfile",
                            "FROM BASE\nCOPY n.txt /n.txt\nRUN cat /n.txt > /out.txt\n",
                        ),
                        ("n.txt", &format!("{label} {round} {i}\n")),
                    ],
                )
            })
            .collect()
    };
    // Each wave builds new contexts, so every RUN really runs.
    let cold: Vec<Duration> = (0..3).map(|_| wave(&s, &addr, &contexts("run"))).collect();
    let cold = median(cold);
    let ctxs = contexts("cached");
    wave(&s, &addr, &ctxs);
    let cached = median((0..5).map(|_| wave(&s, &addr, &ctxs)).collect());
    for (name, d) in [("each runs a step", cold), ("fully cached", cached)] {
        println!(
            "{CONCURRENT} concurrent builds, {name:<17} {:>8.1} ms  ({:.1} builds/s)",
            d.as_secs_f64() * 1e3,
            CONCURRENT as f64 / d.as_secs_f64()
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
}
