//! A buildwitd and a buildkitd (from `../shared/peers`) started side by side for the
//! benchmarks, each built with the same way: a context, build arguments, platforms, an
//! output, in each client's own syntax.

// Each benchmark (and the BuildKit API test) uses part of this.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Setup, text};

/// What one build asks for, beside its context.
#[derive(Default)]
pub struct Request<'a> {
    /// Build arguments.
    pub args: Vec<(&'a str, String)>,
    /// `--platform`.
    pub platform: Option<&'a str>,
    /// An `--output` spec.
    pub output: Option<String>,
}

/// The command that builds a context.
type BuildCommand = Box<dyn Fn(&Path, &Request) -> Command>;

/// A daemon under test and how to build with it; stopped (SIGTERM) when dropped.
pub struct Daemon {
    child: Child,
    build: BuildCommand,
    /// Its address, for `--addr`.
    pub addr: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Build `ctx` as `request` says; its wall time (a failed build panics).
    pub fn build(&self, ctx: &Path, request: &Request) -> Duration {
        let t = Instant::now();
        let out = (self.build)(ctx, request)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        t.elapsed()
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

/// buildwitd with the setup's config plus `extra` (TOML), on an empty root named `name`.
pub fn buildwitd(s: &Setup, name: &str, extra: &str) -> Daemon {
    buildwitd_with_env(s, name, extra, &[])
}

/// [`buildwitd`] with these environment variables.
pub fn buildwitd_with_env(s: &Setup, name: &str, extra: &str, envs: &[(&str, &str)]) -> Daemon {
    let config = s.dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!("{extra}\n{}", std::fs::read_to_string(&s.config).unwrap()),
    )
    .unwrap();
    let sock = s.dir.path().join(format!("{name}.sock"));
    let log = s.dir.path().join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_buildwitd"))
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(s.dir.path().join(format!("{name}-root")))
        .arg("--addr")
        .arg(format!("unix://{}", sock.display()))
        // The daemon has no registry credentials of its own: a client's are its clients'.
        .env(
            "DOCKER_CONFIG",
            s.dir.path().join(format!("{name}-docker-config")),
        )
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for(&sock, "buildwitd", &log);
    let addr = format!("unix://{}", sock.display());
    Daemon {
        child,
        addr: addr.clone(),
        build: Box::new(move |ctx, r| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_buildwit"));
            c.args(["--addr", &addr, "build"])
                .arg(ctx)
                .arg("--progress=quiet");
            for (k, v) in &r.args {
                c.arg("--build-arg").arg(format!("{k}={v}"));
            }
            if let Some(p) = r.platform {
                c.args(["--platform", p]);
            }
            if let Some(o) = &r.output {
                c.args(["--output", o]);
            }
            c
        }),
    }
}

/// buildkitd from `peers` with `worker_oci` (TOML lines of `[worker.oci]`), trusting the
/// setup's registry over HTTP, on an empty root named `name`.
pub fn buildkitd(s: &Setup, peers: &Path, name: &str, worker_oci: &str) -> Daemon {
    let registry = s.image.split('/').next().unwrap().to_string();
    let sock = s.dir.path().join(format!("{name}.sock"));
    let config = s.dir.path().join(format!("{name}.toml"));
    let log = s.dir.path().join(format!("{name}.log"));
    std::fs::write(
        &config,
        format!(
            "root = \"{}\"\n[grpc]\naddress = [\"unix://{}\"]\n[worker.oci]\nenabled = true\n{worker_oci}\n[worker.containerd]\nenabled = false\n[registry.\"{registry}\"]\nhttp = true\n",
            s.dir.path().join(format!("{name}-root")).display(),
            sock.display()
        ),
    )
    .unwrap();
    let child = Command::new(peers.join("buildkitd"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for(&sock, "buildkitd", &log);
    let addr = format!("unix://{}", sock.display());
    Daemon {
        child,
        build: buildctl_builds(peers, &addr),
        addr,
    }
}

/// buildwitd as [`buildwitd`] starts it, built with BuildKit's `buildctl`.
pub fn buildwitd_for_buildctl(s: &Setup, peers: &Path, name: &str) -> Daemon {
    let mut d = buildwitd(s, name, "");
    d.build = buildctl_builds(peers, &d.addr);
    d
}

/// Builds with `buildctl` against `addr`.
fn buildctl_builds(peers: &Path, addr: &str) -> BuildCommand {
    let buildctl = peers.join("buildctl");
    let addr = addr.to_string();
    Box::new(move |ctx, r| {
        let mut c = Command::new(&buildctl);
        c.args(["--addr", &addr, "build", "--frontend", "dockerfile.v0"])
            .arg(format!("--local=context={}", ctx.display()))
            .arg(format!("--local=dockerfile={}", ctx.display()))
            .arg("--progress=quiet");
        for (k, v) in &r.args {
            c.arg(format!("--opt=build-arg:{k}={v}"));
        }
        if let Some(p) = r.platform {
            c.arg(format!("--opt=platform={p}"));
        }
        if let Some(o) = &r.output {
            c.arg(format!("--output={o}"));
        }
        c
    })
}

/// The folder of BuildKit's binaries (`../shared/peers/install.sh`), if it is there.
pub fn peers() -> Option<PathBuf> {
    let script = Path::new(env!("BUILDWIT_SHARED_DIR")).join("peers/install.sh");
    let out = Command::new("bash").arg(script).output().ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(text(&out.stdout).trim()))
}
