//! Cache export and import per backend, buildwitd against buildkitd in the same run, both
//! driven by the real `buildctl` (from `../shared/peers`): the 100-layer build of the
//! `cache` bench exports its cache (`mode=max`) to a local directory, a local
//! `docker-registry`, moto's S3 server, Azurite and the tests' GitHub Actions cache
//! service (its blobs in Azurite), then an empty root imports it.
//!
//! `cargo bench -p buildwit --bench cache_backends` prints the median wall time of each
//! whole `buildctl build` (a fully cached build plus the export, or an import into a root
//! emptied by `buildctl prune --all`). Needs `../shared/peers`, moto and Azurite.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::buckets::{AZURITE_ACCOUNT, AZURITE_KEY, GhaService, Server};
use support::{median, text};

const RUNS: usize = 3;
/// Layers of the build: one RUN each, writing this many KiB of random data.
const LAYERS: usize = 100;
const KIB_PER_LAYER: usize = 256;

/// `buildctl build` of `ctx` on `addr` with `extra` flags; its wall time.
fn buildctl(peers: &Path, addr: &str, ctx: &Path, extra: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new(peers.join("buildctl"))
        .args(["--addr", addr, "build", "--frontend", "dockerfile.v0"])
        .arg(format!("--local=context={}", ctx.display()))
        .arg(format!("--local=dockerfile={}", ctx.display()))
        .arg("--progress=quiet")
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{addr}: {}", text(&out.stderr));
    t.elapsed()
}

/// `buildctl prune --all`: an empty build cache.
fn prune(peers: &Path, addr: &str) {
    let out = Command::new(peers.join("buildctl"))
        .args(["--addr", addr, "prune", "--all"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{addr}: {}", text(&out.stderr));
}

/// A cache destination of each backend; `n` makes it a new one.
struct Backends {
    dir: std::path::PathBuf,
    registry: String,
    moto: Server,
    azurite: Server,
    /// A cache service per daemon and cache number: entries cannot be namespaced, so a
    /// new cache is a new service.
    gha: std::collections::HashMap<(String, usize), GhaService>,
}

impl Backends {
    const NAMES: [&str; 5] = ["local", "registry", "s3", "azblob", "gha"];

    /// The spec of cache `n` of `backend` for `daemon`; `export`: `--export-cache`'s.
    fn spec(&self, backend: &str, daemon: &str, n: usize, export: bool) -> String {
        let name = format!("{daemon}-{n}");
        let mode = if export { ",mode=max" } else { "" };
        match backend {
            "local" => {
                let dir = self.dir.join(format!("cache-{name}"));
                let key = if export { "dest" } else { "src" };
                format!("type=local,{key}={}{mode}", dir.display())
            }
            "registry" => format!(
                "type=registry,ref={}/bench-{name}:cache{mode}",
                self.registry
            ),
            // A new prefix: its blobs are not there yet.
            "s3" => format!(
                "type=s3,bucket=bench,region=us-east-1,endpoint_url=http://127.0.0.1:{},use_path_style=true,access_key_id=test,secret_access_key=test,prefix={name}/{mode}",
                self.moto.port
            ),
            "azblob" => format!(
                "type=azblob,account_url=http://127.0.0.1:{}/{AZURITE_ACCOUNT},account_name={AZURITE_ACCOUNT},secret_access_key={AZURITE_KEY},container=bench,prefix={name}{mode}",
                self.azurite.port
            ),
            "gha" => {
                let service = &self.gha[&(daemon.to_string(), n)];
                format!(
                    "type=gha,url_v2={},url={},token={}{mode}",
                    service.url, service.url, service.token
                )
            }
            other => unreachable!("{other}"),
        }
    }
}

fn main() {
    let Some(peers) = common::peers() else {
        eprintln!("../shared/peers is missing: nothing to compare with");
        return;
    };
    let s = support::setup();
    let mut dockerfile = format!("FROM {}\n", s.image);
    for i in 0..LAYERS {
        // Incompressible content, so the figures are about moving bytes.
        dockerfile.push_str(&format!(
            "RUN head -c {} /dev/urandom > /layer-{i}\n",
            KIB_PER_LAYER * 1024
        ));
    }
    let ctx = s.context("many-layers", &[("Dockerfile", &dockerfile)]);
    let azurite = Server::azurite(s.dir.path());
    let gha = ["buildwitd", "buildkitd"]
        .into_iter()
        .flat_map(|d| (0..RUNS).map(move |n| (d.to_string(), n)))
        .map(|k| {
            let service = GhaService::start(&azurite);
            (k, service)
        })
        .collect();
    let backends = Backends {
        dir: s.dir.path().to_path_buf(),
        registry: s.image.split('/').next().unwrap().to_string(),
        moto: Server::moto(s.dir.path(), "bench"),
        azurite,
        gha,
    };
    let daemons = [
        (
            "buildwitd",
            common::buildwitd_for_buildctl(&s, &peers, "bw"),
        ),
        ("buildkitd", common::buildkitd(&s, &peers, "bk", "")),
    ];
    println!(
        "{LAYERS} layers of {KIB_PER_LAYER} KiB, mode=max, gzip, through buildctl; median of {RUNS} runs\n"
    );
    println!(
        "{:<44} {:>10} {:>10} {:>7}",
        "scenario", "buildwitd", "buildkitd", "ratio"
    );
    let row = |name: &str, times: [Duration; 2]| {
        println!(
            "{name:<44} {:>8.3} s {:>8.3} s {:>6.1}×",
            times[0].as_secs_f64(),
            times[1].as_secs_f64(),
            times[1].as_secs_f64() / times[0].as_secs_f64()
        );
    };
    // The build, then a first export of each daemon: its layers compressed once.
    let per_daemon = |f: &dyn Fn(&str, &common::Daemon) -> Duration| {
        [0, 1].map(|i| f(daemons[i].0, &daemons[i].1))
    };
    row(
        "first build, no export",
        per_daemon(&|_, d| buildctl(&peers, &d.addr, &ctx, &[])),
    );
    row(
        "fully cached build, no export",
        per_daemon(&|_, d| {
            median(
                (0..RUNS)
                    .map(|_| buildctl(&peers, &d.addr, &ctx, &[]))
                    .collect(),
            )
        }),
    );
    row(
        "first export (compresses), local directory",
        per_daemon(&|name, d| {
            let spec = backends.spec("local", name, RUNS + 1, true);
            buildctl(&peers, &d.addr, &ctx, &["--export-cache", &spec])
        }),
    );
    for backend in Backends::NAMES {
        row(
            &format!("export to a new {backend} cache"),
            per_daemon(&|name, d| {
                median(
                    (0..RUNS)
                        .map(|n| {
                            let spec = backends.spec(backend, name, n, true);
                            buildctl(&peers, &d.addr, &ctx, &["--export-cache", &spec])
                        })
                        .collect(),
                )
            }),
        );
        row(
            &format!("export again to the same {backend} cache"),
            per_daemon(&|name, d| {
                let spec = backends.spec(backend, name, 0, true);
                median(
                    (0..RUNS)
                        .map(|_| buildctl(&peers, &d.addr, &ctx, &["--export-cache", &spec]))
                        .collect(),
                )
            }),
        );
    }
    for backend in Backends::NAMES {
        row(
            &format!("empty root, import from {backend}"),
            per_daemon(&|name, d| {
                let spec = backends.spec(backend, name, 0, false);
                median(
                    (0..RUNS)
                        .map(|_| {
                            prune(&peers, &d.addr);
                            buildctl(&peers, &d.addr, &ctx, &["--import-cache", &spec])
                        })
                        .collect(),
                )
            }),
        );
    }
}
