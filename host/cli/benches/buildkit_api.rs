//! The real `buildctl` and `buildx` (from `../shared/peers`) against buildwitd and against
//! buildkitd, in the same run: the first build of a small Node-style project (busybox
//! base, `COPY package*.json`, RUN steps, a source tree) and its fully cached rebuild,
//! with a small context and with 5,000 source files (20 MB).
//!
//! `cargo bench -p buildwit --bench buildkit_api` prints the first build and the median
//! of the cached ones. Needs `../shared/peers`.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, Request, buildkitd, buildwitd_for_buildctl, peers};
use support::{median, text};

const RUNS: usize = 5;

const DOCKERFILE: &str = "FROM BASE
WORKDIR /app
COPY package*.json ./
RUN echo installing > /install.log && seq 1 50000 > deps.txt
COPY . .
RUN find . -type f | wc -l > count && cat count
CMD [\"sh\"]
";

/// A context of `files` source files of `size` bytes each.
fn project(s: &support::Setup, name: &str, files: usize, size: usize) -> std::path::PathBuf {
    let ctx = s.context(
        name,
        &[
            ("Dockerfile", &DOCKERFILE.replace("BASE", &s.image)),
            ("package.json", "{\"name\": \"app\"}\n"),
            ("package-lock.json", "{}\n"),
        ],
    );
    for i in 0..files {
        let dir = ctx.join(format!("src/m{}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        let body: String = (0..size)
            .map(|j| (b'a' + ((i + j) % 26) as u8) as char)
            .collect();
        std::fs::write(dir.join(format!("f{i}.js")), body).unwrap();
    }
    ctx
}

/// `buildx build` on a remote builder named `builder`; its wall time.
fn buildx(peers: &Path, config: &Path, builder: &str, ctx: &Path) -> Duration {
    let t = Instant::now();
    let out = Command::new(peers.join("buildx"))
        .env("BUILDX_CONFIG", config)
        .env("DOCKER_CONFIG", config)
        .args(["build", "--builder", builder, "--progress=quiet"])
        .arg(ctx)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    t.elapsed()
}

/// First build and cached median, with buildctl, then buildx.
fn measure(d: &Daemon, peers: &Path, config: &Path, name: &str, ctx: &Path) -> [Duration; 3] {
    let out = Command::new(peers.join("buildx"))
        .env("BUILDX_CONFIG", config)
        .env("DOCKER_CONFIG", config)
        .args(["create", "--name", name, "--driver", "remote", &d.addr])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let request = Request::default();
    let first = d.build(ctx, &request);
    let cached = median((0..RUNS).map(|_| d.build(ctx, &request)).collect());
    let cached_buildx = median(
        (0..RUNS)
            .map(|_| buildx(peers, config, name, ctx))
            .collect(),
    );
    [first, cached, cached_buildx]
}

fn main() {
    let Some(peers) = peers() else {
        eprintln!("BuildKit not found (../shared/peers): nothing to compare");
        return;
    };
    let s = support::setup();
    let config = s.dir.path().join("buildx");
    let contexts = [
        ("small context", project(&s, "small", 20, 200)),
        ("5,000 files, 20 MB", project(&s, "large", 5000, 4000)),
    ];
    println!("buildctl and buildx against each daemon (cached: median of {RUNS})");
    println!(
        "{:<20} {:<22} {:>10} {:>10} {:>7}",
        "context", "build", "buildwitd", "buildkitd", "ratio"
    );
    for (i, (label, ctx)) in contexts.iter().enumerate() {
        let ours = {
            let d = buildwitd_for_buildctl(&s, &peers, &format!("bw{i}"));
            measure(&d, &peers, &config, &format!("bw{i}"), ctx)
        };
        let theirs = {
            let d = buildkitd(&s, &peers, &format!("bk{i}"), "");
            measure(&d, &peers, &config, &format!("bk{i}"), ctx)
        };
        let rows = ["buildctl, first", "buildctl, cached", "buildx, cached"];
        for (row, (a, b)) in rows.iter().zip(ours.iter().zip(&theirs)) {
            println!(
                "{label:<20} {row:<22} {:>9.3}s {:>9.3}s {:>6.1}x",
                a.as_secs_f64(),
                b.as_secs_f64(),
                b.as_secs_f64() / a.as_secs_f64()
            );
        }
    }
}
