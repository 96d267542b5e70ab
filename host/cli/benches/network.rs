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

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Setup, median, text};

/// RUN steps in the long build.
const STEPS: usize = 20;
const RUNS: usize = 5;

/// The command that builds a context with a build argument `NONCE`.
type BuildCommand = Box<dyn Fn(&Path, &str) -> Command>;

/// A daemon under test and how to build with it.
struct Daemon {
    child: Child,
    build: BuildCommand,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn wait_for(path: &Path, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn buildwitd(s: &Setup, name: &str, network: &str) -> Daemon {
    let config = s.dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!("{network}\n{}", std::fs::read_to_string(&s.config).unwrap()),
    )
    .unwrap();
    let sock = s.dir.path().join(format!("{name}.sock"));
    let child = Command::new(env!("CARGO_BIN_EXE_buildwitd"))
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(s.dir.path().join(format!("{name}-root")))
        .arg("--addr")
        .arg(format!("unix://{}", sock.display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(s.dir.path().join(format!("{name}.log"))).unwrap())
        .spawn()
        .unwrap();
    wait_for(
        &sock,
        "buildwitd",
        &s.dir.path().join(format!("{name}.log")),
    );
    let addr = format!("unix://{}", sock.display());
    Daemon {
        child,
        build: Box::new(move |ctx, nonce| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_buildwit"));
            c.args(["--addr", &addr, "build"]).arg(ctx).args([
                "--progress=quiet",
                "--build-arg",
                &format!("NONCE={nonce}"),
            ]);
            c
        }),
    }
}

fn buildkitd(s: &Setup, peers: &Path, name: &str, network: &str) -> Daemon {
    let registry = s.image.split('/').next().unwrap().to_string();
    let sock = s.dir.path().join(format!("{name}.sock"));
    let config = s.dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "root = \"{}\"\n[grpc]\naddress = [\"unix://{}\"]\n[worker.oci]\nenabled = true\n{network}\n[worker.containerd]\nenabled = false\n[registry.\"{registry}\"]\nhttp = true\n",
            s.dir.path().join(format!("{name}-root")).display(),
            sock.display()
        ),
    )
    .unwrap();
    let child = Command::new(peers.join("buildkitd"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(s.dir.path().join(format!("{name}.log"))).unwrap())
        .spawn()
        .unwrap();
    wait_for(
        &sock,
        "buildkitd",
        &s.dir.path().join(format!("{name}.log")),
    );
    let buildctl = peers.join("buildctl");
    let addr = format!("unix://{}", sock.display());
    Daemon {
        child,
        build: Box::new(move |ctx, nonce| {
            let mut c = Command::new(&buildctl);
            c.args(["--addr", &addr, "build", "--frontend", "dockerfile.v0"])
                .arg(format!("--local=context={}", ctx.display()))
                .arg(format!("--local=dockerfile={}", ctx.display()))
                .arg(format!("--opt=build-arg:NONCE={nonce}"))
                .arg("--progress=quiet");
            c
        }),
    }
}

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
        let t = Instant::now();
        let out = (d.build)(ctx, &format!("n{round}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        t.elapsed()
    };
    // Warm: base image pulled, frontend ready, namespaces pooled.
    run(one);
    run(many);
    let ones = median((0..RUNS).map(|_| run(one)).collect());
    let manys = median((0..RUNS).map(|_| run(many)).collect());
    manys.saturating_sub(ones) / STEPS as u32
}

fn peers() -> Option<PathBuf> {
    let script = Path::new(env!("BUILDWIT_SHARED_DIR")).join("peers/install.sh");
    let out = Command::new("bash").arg(script).output().ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(text(&out.stdout).trim()))
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
