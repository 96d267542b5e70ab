//! buildwitd against the in-process engine: the overhead of a fully cached build through
//! the daemon (connect, context listing, events over gRPC), the throughput of small
//! builds run concurrently against one daemon, and a local cache directory exported
//! through the daemon (written back to the client) against in-process.
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
/// The cache export build: this many RUN layers of 256 KiB of random data.
const CACHE_LAYERS: usize = 20;

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
    timed_with(s, addr, ctx, &[])
}

fn timed_with(s: &support::Setup, addr: Option<&str>, ctx: &Path, extra: &[&str]) -> Duration {
    let t = Instant::now();
    let out = build_cmd(s, addr, ctx).args(extra).output().unwrap();
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

    // A local cache directory: in-process the exporter writes it; through the daemon it
    // is exported into the daemon's mirror and the new files are streamed back.
    let mut dockerfile = String::from("FROM BASE\n");
    for i in 0..CACHE_LAYERS {
        dockerfile.push_str(&format!("RUN head -c 262144 /dev/urandom > /layer-{i}\n"));
    }
    let layers = s.context("layers", &[("Dockerfile", &dockerfile)]);
    timed(&s, None, &layers);
    timed(&s, Some(&addr), &layers);
    println!("\nexport of a {CACHE_LAYERS}-layer cache (mode=max), median of 3 runs");
    for (name, via) in [
        ("in-process", None),
        ("through buildwitd", Some(addr.as_str())),
    ] {
        let dir = |i: usize| s.dir.path().join(format!("cache-{name}-{i}"));
        let spec = |i: usize| format!("type=local,dest={},mode=max", dir(i).display());
        // The first export compresses the layers: not measured.
        timed_with(&s, via, &layers, &["--export-cache", &spec(99)]);
        let new: Vec<Duration> = (0..3)
            .map(|i| timed_with(&s, via, &layers, &["--export-cache", &spec(i)]))
            .collect();
        let again: Vec<Duration> = (0..3)
            .map(|_| timed_with(&s, via, &layers, &["--export-cache", &spec(0)]))
            .collect();
        for (what, runs) in [
            ("to a new directory", new),
            ("again, same directory", again),
        ] {
            println!(
                "  {name:<18} {what:<22} {:>8.1} ms",
                median(runs).as_secs_f64() * 1e3
            );
        }
    }

    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
}
