//! Load: several clients build through one buildwitd for a while (`SOAK_SECONDS`, 45 by
//! default): cached builds of a shared context, uncached builds of contexts of their own,
//! and builds whose client is interrupted (SIGINT) or killed once their step runs. Every
//! build's result must be right, the shared context's step must run once in all, and the
//! daemon's memory and open files must stay flat.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{Build, Daemon, Setup, setup, text};

const CLIENTS: usize = 6;

/// The shared context's step: its marker is printed only when it runs.
const SHARED: &str = "FROM BASE\nRUN echo shared-step-ran && echo shared > /shared\n";

/// What a process holds.
#[derive(Clone, Copy)]
struct Usage {
    /// Resident KiB, all of it.
    rss: u64,
    /// Resident KiB of its own memory (heap, stacks), without the pages of its program
    /// file, which are read in as code runs for the first time and can be dropped again.
    anon: u64,
    /// Open files.
    fds: usize,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    Usage {
        rss: kib("VmRSS:"),
        anon: kib("RssAnon:"),
        fds,
    }
}

/// Whether a process whose command line holds `needle` runs.
fn running(needle: &str) -> bool {
    let out = Command::new("pgrep").args(["-f", needle]).output().unwrap();
    !out.stdout.is_empty()
}

#[derive(Default)]
struct Tally {
    cached: AtomicUsize,
    uncached: AtomicUsize,
    stopped: AtomicUsize,
    shared_ran: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn error(&self, what: String) {
        self.errors.lock().unwrap().push(what);
    }
}

/// One client: builds until `deadline`, the kind of each build chosen in turn.
fn client(s: &Setup, daemon: &Daemon, shared: &Path, n: usize, deadline: Instant, t: &Tally) {
    let mut i = 0;
    while Instant::now() < deadline {
        i += 1;
        match (n + i) % 3 {
            0 => {
                let b = daemon.build(shared, &[]);
                if !b.out.status.success() {
                    t.error(format!("shared build: {}", text(&b.out.stderr)));
                }
                if b.logs.iter().any(|l| l.contains("shared-step-ran")) {
                    t.shared_ran.fetch_add(1, Ordering::Relaxed);
                }
                t.cached.fetch_add(1, Ordering::Relaxed);
            }
            1 => {
                let tag = format!("client-{n}-build-{i}");
                let ctx = s.context(
                    &tag,
                    &[(
                        "Dockerfile",
                        &format!("FROM BASE\nRUN echo {tag} > /tag\nCOPY . /ctx\n"),
                    )],
                );
                let out = s.dir.path().join(format!("{tag}-out"));
                let dest = format!("type=local,dest={}", out.display());
                let b: Build = daemon.build(&ctx, &["-o", &dest]);
                let got = std::fs::read_to_string(out.join("tag")).unwrap_or_default();
                if !b.out.status.success() || got.trim() != tag {
                    t.error(format!("{tag}: exported {got:?}: {}", text(&b.out.stderr)));
                }
                let _ = std::fs::remove_dir_all(&out);
                let _ = std::fs::remove_dir_all(&ctx);
                t.uncached.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                // A client that stops mid-step: the daemon cancels its build.
                let tag = format!("client-{n}-gone-{i}");
                let ctx = s.context(
                    &tag,
                    &[(
                        "Dockerfile",
                        &format!("FROM BASE\nRUN sleep 30; echo {tag} done\n"),
                    )],
                );
                let mut child = Command::new(env!("CARGO_BIN_EXE_buildwit"))
                    .args(["--addr", &daemon.addr, "build", ctx.to_str().unwrap()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                // Stopped once its step runs (or after 20 s, if it never does).
                // Not the step's last command: its shell, and the tag, stay in the process list.
                let step = format!("echo {tag} done");
                let started = Instant::now();
                while !running(&step) && started.elapsed() < Duration::from_secs(20) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if i % 2 == 0 {
                    // Ctrl-C: the client closes its stream and exits with 128+2 (also
                    // when the shell that ran the test ignores SIGINT), the daemon sees
                    // its session close.
                    let pid = child.id().to_string();
                    let _ = Command::new("kill").args(["-INT", &pid]).status();
                    let status = child.wait().unwrap();
                    if status.code() != Some(130) {
                        t.error(format!(
                            "{tag}: interrupted, the client exited with {status}"
                        ));
                    }
                } else {
                    // Gone: the connection drops, the daemon cancels the build.
                    let _ = child.kill();
                    let _ = child.wait();
                }
                t.stopped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[test]
fn many_clients_for_a_while_keep_results_right_and_the_daemon_flat() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(45);
    let s = setup();
    let daemon = Daemon::unix(&s, "soak");
    let shared: PathBuf = s.context("shared", &[("Dockerfile", SHARED)]);
    // Warm up: the frontend compiled, the base pulled, the shared step run once.
    let first = daemon.build(&shared, &[]).ok();
    assert!(first.logs.iter().any(|l| l.contains("shared-step-ran")));
    let warm = s.context("warm", &[("Dockerfile", "FROM BASE\nRUN echo warm > /w\n")]);
    daemon.build(&warm, &[]).ok();
    // Clients that ask for the same new step at once: it runs once, the others wait for it.
    let together = s.context(
        "together",
        &[(
            "Dockerfile",
            "FROM BASE\nRUN echo together-step-ran && sleep 1 && echo t > /t\n",
        )],
    );
    let ran = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..CLIENTS {
            scope.spawn(|| {
                let b = daemon.build(&together, &[]).ok();
                if b.logs.iter().any(|l| l.contains("together-step-ran")) {
                    ran.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(
        ran.into_inner(),
        1,
        "a step asked for by {CLIENTS} builds at once ran more than once"
    );
    let pid = daemon.pid();
    let start = usage(pid);

    let tally = Tally::default();
    let began = Instant::now();
    let deadline = began + Duration::from_secs(seconds);
    // The daemon's memory every tenth of the run, to see its shape, not only its ends.
    let mut samples = Vec::new();
    std::thread::scope(|scope| {
        for n in 0..CLIENTS {
            let (s, daemon, shared, tally) = (&s, &daemon, &shared, &tally);
            scope.spawn(move || client(s, daemon, shared, n, deadline, tally));
        }
        for tenth in 1..=10u32 {
            let at = began + Duration::from_secs(seconds) * tenth / 10;
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let now = usage(pid);
            samples.push(format!(
                "{}s {}/{}",
                (at - began).as_secs(),
                now.anon / 1024,
                now.rss / 1024
            ));
        }
    });
    // Cancelled steps stop soon after their clients went away.
    let settle = Instant::now() + Duration::from_secs(20);
    while running("sleep 30") && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(200));
    }
    let leftover = Command::new("pgrep")
        .args(["-f", "sleep 30"])
        .output()
        .unwrap();
    let end = usage(pid);

    let builds = tally.cached.load(Ordering::Relaxed)
        + tally.uncached.load(Ordering::Relaxed)
        + tally.stopped.load(Ordering::Relaxed);
    let errors = tally.errors.into_inner().unwrap();
    eprintln!(
        "soak: {seconds} s, {CLIENTS} clients, {builds} builds ({} cached, {} uncached, {} \
         stopped mid-step by SIGINT or SIGKILL), {} errors; daemon memory of its own {} → {} MiB, \
         resident in all {} → {} MiB, open files {} → {}; own/all (MiB) over time: {}",
        tally.cached.load(Ordering::Relaxed),
        tally.uncached.load(Ordering::Relaxed),
        tally.stopped.load(Ordering::Relaxed),
        errors.len(),
        start.anon / 1024,
        end.anon / 1024,
        start.rss / 1024,
        end.rss / 1024,
        start.fds,
        end.fds,
        samples.join(", "),
    );
    assert!(
        errors.is_empty(),
        "{} builds failed: {errors:#?}",
        errors.len()
    );
    assert_eq!(
        tally.shared_ran.load(Ordering::Relaxed),
        0,
        "the shared step, cached before the load, ran again"
    );
    assert!(
        leftover.stdout.is_empty(),
        "cancelled steps still run: {}",
        text(&leftover.stdout)
    );
    assert!(
        end.fds <= start.fds + 16,
        "open files grew from {} to {}",
        start.fds,
        end.fds
    );
    assert!(
        end.anon <= start.anon + 32 * 1024,
        "the daemon's own memory grew from {} to {} KiB",
        start.anon,
        end.anon
    );
    assert!(
        end.rss <= start.rss + 96 * 1024,
        "resident memory grew from {} to {} KiB",
        start.rss,
        end.rss
    );
}
