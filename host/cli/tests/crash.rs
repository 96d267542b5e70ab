//! Crash consistency: builds killed with SIGKILL at many points (pulling the base, copying
//! the context, running a step, committing a layer, exporting an image and a cache, the GC
//! after the build, writing history), in-process and through buildwitd. After each kill the
//! next build on the same root must succeed with the files a clean build gives and, built
//! with `SOURCE_DATE_EPOCH` and `rewrite-timestamp`, the very image (the same manifest:
//! config and layer blobs by digest); `du` must account for every byte of layers and blobs
//! on disk, and `prune --all` must leave none.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Daemon, Setup, setup, text};

/// Kill points per mode: spread evenly over a clean build's duration.
const KILLS: usize = 16;

const DOCKERFILE: &str = "FROM BASE
COPY . /src
RUN --mount=type=cache,target=/cache cat /src/d*/* | wc -c > /count && echo run >> /cache/runs && sleep 0.2
RUN mkdir -p /out && cat /count /src/d0/f0 > /out/summary
";

/// GC after every build, removing the context's records: a kill can land in it.
const GC: &str = "\n[worker.oci]\ngc = true\n[[worker.oci.gcpolicy]]\nall = true\nkeepBytes = 0\nfilters = [\"type==source.local\"]\n";

/// A context of a few hundred files (some MB, so compressing and copying take time), with
/// a symlink and an executable.
fn context(s: &Setup) -> PathBuf {
    let ctx = s.context("crash", &[("Dockerfile", DOCKERFILE)]);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for d in 0..8 {
        let dir = ctx.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..40 {
            // Half random bytes, half text: gzip has work to do on both.
            let data: Vec<u8> = (0..16 * 1024)
                .map(|i| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    if i % 2 == 0 {
                        seed as u8
                    } else {
                        b'a' + (i % 26) as u8
                    }
                })
                .collect();
            std::fs::write(dir.join(format!("f{f}")), data).unwrap();
        }
    }
    std::os::unix::fs::symlink("d0/f0", ctx.join("link")).unwrap();
    let tool = ctx.join("tool.sh");
    std::fs::write(&tool, "#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    ctx
}

/// Every entry of a tree: type, mode, size and content digest or link target (not times:
/// a step writes its files at the time it runs).
fn listing(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let md = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            let what = if md.is_dir() {
                walk(base, &path, out);
                "dir".to_string()
            } else if md.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else {
                let data = std::fs::read(&path).unwrap();
                format!(
                    "{} bytes {}",
                    data.len(),
                    buildwit_llb::digest_of(&data).short()
                )
            };
            out.insert(rel, format!("{:o} {what}", md.mode()));
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Bytes of what the cache keeps on disk, walked apart from `du`: the files of every layer
/// (hard links once within one) and every blob.
fn cache_bytes(root: &Path) -> u64 {
    let size = |dir: &Path| buildwit_worker::disk::tree_size(dir).unwrap_or(0);
    let layers: u64 = std::fs::read_dir(root.join("snapshots/layers"))
        .into_iter()
        .flatten()
        .map(|e| size(&e.unwrap().path().join("diff")))
        .sum();
    layers + size(&root.join("content/blobs"))
}

/// The sum of `du`'s sizes.
fn du_total(du: &std::process::Output) -> u64 {
    let out = text(&du.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with("Total:"))
        .unwrap_or_else(|| panic!("du printed no total:\n{out}"));
    parse_size(line.trim_start_matches("Total:").trim())
}

/// `12.5MB`, `3kB`, `20B` as `du` prints them (decimal units, as BuildKit's).
fn parse_size(s: &str) -> u64 {
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("not a size: {s}"));
    let scale = match unit {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        other => panic!("unit {other} in {s}"),
    };
    (n * scale) as u64
}

/// What a build run to the end gives, by how it is run.
struct Runner {
    ctx: PathBuf,
    config: PathBuf,
}

impl Runner {
    /// `build` with an image, a local and a cache export into `out`.
    fn args(&self, out: &Path) -> Vec<String> {
        std::fs::create_dir_all(out).unwrap();
        vec![
            "build".into(),
            self.ctx.display().to_string(),
            "--progress=rawjson".into(),
            // Times that do not depend on when a step ran: the same build is the same image.
            "--build-arg".into(),
            "SOURCE_DATE_EPOCH=1700000000".into(),
            "-o".into(),
            format!(
                "type=oci,rewrite-timestamp=true,dest={}",
                out.join("image.tar").display()
            ),
            "-o".into(),
            format!("type=local,dest={}", out.join("files").display()),
            "--export-cache".into(),
            format!("type=local,dest={}", out.join("cache").display()),
        ]
    }

    /// `buildwit GLOBAL… build …`, its progress on a pipe.
    fn spawn(&self, global: &[&OsStr], out: &Path) -> Child {
        Command::new(env!("CARGO_BIN_EXE_buildwit"))
            .args(global)
            .args(self.args(out))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn in_process(&self, root: &Path, out: &Path) -> Child {
        let config = self.config.as_os_str();
        self.spawn(
            &[
                "--config".as_ref(),
                config,
                "--root".as_ref(),
                root.as_os_str(),
            ],
            out,
        )
    }

    fn through(&self, daemon: &Daemon, out: &Path) -> Child {
        self.spawn(&["--addr".as_ref(), daemon.addr.as_ref()], out)
    }

    /// Waits for a build and returns its exported files and image manifest; panics with
    /// its log on failure.
    fn finish(&self, mut child: Child, out: &Path) -> Outcome {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "build failed:\n{}", tail(&err));
        let manifest = support::skopeo(&[
            "inspect",
            "--raw",
            &format!("oci-archive:{}", out.join("image.tar").display()),
        ]);
        assert!(out.join("cache/index.json").exists(), "no cache exported");
        Outcome {
            files: listing(&out.join("files")),
            manifest,
        }
    }
}

/// What a build exported.
#[derive(Debug, PartialEq)]
struct Outcome {
    files: BTreeMap<String, String>,
    manifest: serde_json::Value,
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// What the build was doing, by its progress (rawjson): after each message, the step
/// started last of those still running, or "between steps" (after the last one: writing
/// outputs, GC, history, exiting).
fn watch(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut running: Vec<(String, String)> = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            for vx in v["vertexes"].as_array().into_iter().flatten() {
                let digest = vx["digest"].as_str().unwrap_or_default().to_string();
                running.retain(|(d, _)| *d != digest);
                if vx.get("started").is_some() && vx.get("completed").is_none() {
                    // The kind of step, without its paths and commands.
                    let name = vx["name"].as_str().unwrap_or_default();
                    let kind = name.split_whitespace().take(3).collect::<Vec<_>>();
                    running.push((digest, kind.join(" ")));
                }
            }
            let now = running
                .last()
                .map_or("between steps", |(_, name)| name.as_str());
            let _ = tx.send(now.to_string());
        }
    });
    rx
}

/// Checks a root after the build that followed a kill: `du` counts what is on disk, and
/// `prune --all` leaves no layer, blob or scratch file.
fn check_accounting(buildwit: impl Fn(&[&str]) -> std::process::Output, root: &Path, when: &str) {
    let du = buildwit(&["du"]);
    assert!(du.status.success(), "{when}: du: {}", text(&du.stderr));
    let on_disk = cache_bytes(root);
    let counted = du_total(&du);
    // du prints three significant digits: compare within that rounding.
    let slack = on_disk / 200 + 1;
    assert!(
        counted.abs_diff(on_disk) <= slack,
        "{when}: du counts {counted} bytes, the layers and blobs on disk are {on_disk}:\n{}",
        text(&du.stdout)
    );
    let prune = buildwit(&["prune", "--all"]);
    assert!(
        prune.status.success(),
        "{when}: prune: {}",
        text(&prune.stderr)
    );
    let left = cache_bytes(root);
    assert_eq!(
        left, 0,
        "{when}: prune --all left {left} bytes of layers and blobs"
    );
    let scratch = support::scratch_leftovers(root);
    assert!(
        scratch.is_empty(),
        "{when}: files left in scratch directories: {scratch:?}"
    );
}

fn runner(s: &Setup) -> Runner {
    let config = s.dir.path().join("crash.toml");
    std::fs::write(&config, std::fs::read_to_string(&s.config).unwrap() + GC).unwrap();
    Runner {
        ctx: context(s),
        config,
    }
}

#[test]
fn a_build_killed_at_any_point_comes_back_whole() {
    let s = setup();
    let r = runner(&s);
    let work = s.dir.path().join("work");

    // A clean build: the expected files and how long a build takes from an empty root.
    let clean_root = work.join("clean-root");
    let started = Instant::now();
    let child = r.in_process(&clean_root, &work.join("clean"));
    let expected = r.finish(child, &work.join("clean"));
    let duration = started.elapsed();
    assert!(expected.files.contains_key("out/summary"), "{expected:?}");

    let mut phases = BTreeMap::<String, usize>::new();
    for i in 0..KILLS {
        let root = work.join(format!("root-{i}"));
        let at = duration.mul_f64((i as f64 + 0.5) / KILLS as f64);
        let mut child = r.in_process(&root, &work.join(format!("killed-{i}")));
        let steps = watch(&mut child);
        std::thread::sleep(at);
        let _ = child.kill();
        let _ = child.wait();
        let phase = steps
            .try_iter()
            .last()
            .unwrap_or_else(|| "(before any step)".into());
        *phases.entry(phase.clone()).or_default() += 1;
        let when = format!("killed at {at:?} during {phase:?}");

        let out = work.join(format!("after-{i}"));
        let got = r.finish(r.in_process(&root, &out), &out);
        assert_eq!(
            got, expected,
            "{when}: the build after the kill exported other files or another image"
        );
        let rerun = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_buildwit"))
                .arg("--config")
                .arg(&r.config)
                .arg("--root")
                .arg(&root)
                .args(args)
                .output()
                .unwrap()
        };
        check_accounting(rerun, &root, &when);
        std::fs::remove_dir_all(&root).unwrap();
    }
    eprintln!("kill points by the step last started: {phases:?}");
}

#[test]
fn buildwitd_killed_mid_build_restarts_whole() {
    let s = setup();
    let r = runner(&s);
    let work = s.dir.path().join("work");
    let sock = s.dir.path().join("crash.sock");
    let addr = format!("unix://{}", sock.display());
    let start = |root: &Path, n: usize| {
        Daemon::start(
            &r.config,
            root,
            &addr,
            s.dir.path().join(format!("daemon-{n}.log")),
        )
    };

    let clean_root = work.join("clean-root");
    let daemon = start(&clean_root, 0);
    let started = Instant::now();
    let expected = r.finish(r.through(&daemon, &work.join("clean")), &work.join("clean"));
    let duration = started.elapsed();
    drop(daemon);

    for i in 0..KILLS / 2 {
        let root = work.join(format!("root-{i}"));
        let at = duration.mul_f64((i as f64 + 0.5) / (KILLS / 2) as f64);
        let mut daemon = start(&root, 2 * i + 1);
        let mut client = r.through(&daemon, &work.join(format!("killed-{i}")));
        let _progress = watch(&mut client);
        std::thread::sleep(at);
        daemon.kill();
        let finished = wait_for(client);
        let when = format!("buildwitd killed at {at:?} (client: {finished})");

        let daemon = start(&root, 2 * i + 2);
        let out = work.join(format!("after-{i}"));
        let got = r.finish(r.through(&daemon, &out), &out);
        assert_eq!(
            got, expected,
            "{when}: the build after the restart exported other files or another image"
        );
        check_accounting(|args| daemon.cli(args), &root, &when);
        drop(daemon);
        std::fs::remove_dir_all(&root).unwrap();
    }
}

/// Waits for a client whose daemon died: it must end, with an error (or success, if the
/// build had finished), not hang.
fn wait_for(mut child: Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return format!("{status}");
        }
        assert!(
            Instant::now() < deadline,
            "the client hangs after its daemon died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
