//! A build context of real-project size (30,000 files, about 500 MB: a source tree with
//! its dependencies) built by buildwit in-process, by buildwitd through `buildwit --addr`,
//! and by buildkitd (from `../shared/peers`) through `buildctl`, in the same run:
//! `FROM busybox`, `COPY src /app/src`, `RUN find /app -type f | wc -l`.
//!
//! Rows: the first build, a fully cached one (median of 5), the first `-o type=oci` of
//! the cached image (compressing its 500 MB layer), a build after one file of the context
//! is edited without export and with `-o type=oci` (medians of 3, a different file each
//! time), and the daemon's peak memory (VmHWM) over all of it.
//!
//! `cargo bench -p buildwit --bench large_context`. `LARGE_CONTEXT_FILES` and
//! `LARGE_CONTEXT_MB` change the context's size. Needs root, runc and docker-registry.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, Request, buildkitd, buildwitd, peers};
use support::{median, text};

const RUNS: usize = 5;
const EDITS: usize = 3;

const DOCKERFILE: &str = "FROM BASE
COPY src /app/src
RUN find /app -type f | wc -l
";

/// Words a generated source file is made of: text that compresses about as well as code.
const WORDS: &[&str] = &[
    "fn",
    "let",
    "const",
    "return",
    "if",
    "else",
    "for",
    "while",
    "match",
    "impl",
    "struct",
    "enum",
    "pub",
    "use",
    "mod",
    "self",
    "value",
    "index",
    "buffer",
    "result",
    "error",
    "request",
    "response",
    "handler",
    "config",
    "state",
    "context",
    "options",
    "items",
    "length",
    "offset",
    "module",
    "exports",
    "require",
    "function",
    "async",
    "await",
    "promise",
    "callback",
    "string",
    "number",
    "object",
    "array",
    "undefined",
    "null",
    "true",
    "false",
    "this",
    "new",
    "class",
    "extends",
    "super",
    "import",
    "from",
    "default",
    "{",
    "}",
    "(",
    ")",
    ";",
    "=",
    "=>",
    "\n",
    "  ",
];

/// A context of `files` files of about `total / files` bytes each (one in five is
/// random bytes, as images and binaries in a tree are; the others are text).
fn generate(dir: &Path, files: usize, total: usize) {
    let per_file = total / files;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..files {
        let path = file(dir, i);
        if i % 100 == 0 {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        }
        let size = per_file / 2 + (next() as usize % per_file);
        let mut body = Vec::with_capacity(size + 16);
        if i % 5 == 0 {
            while body.len() < size {
                body.extend_from_slice(&next().to_le_bytes());
            }
        } else {
            while body.len() < size {
                let w = next();
                body.extend_from_slice(WORDS[w as usize % WORDS.len()].as_bytes());
                body.push(b' ');
            }
        }
        std::fs::write(path, body).unwrap();
    }
}

/// The path of generated file `i`.
fn file(ctx: &Path, i: usize) -> PathBuf {
    ctx.join(format!(
        "src/pkg{}/lib{}/file{i}.js",
        i / 1000,
        (i / 100) % 10
    ))
}

/// Edit one of the context's `files` files (edit number `n`).
fn edit(ctx: &Path, files: usize, n: usize) {
    let path = file(ctx, n * 7919 % files);
    let mut body = std::fs::read(&path).unwrap();
    body.extend_from_slice(format!("\n// edit {n}\n").as_bytes());
    std::fs::write(&path, body).unwrap();
}

/// The peak resident memory of a process, from `/proc`.
fn peak_memory(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

struct Rows {
    first: Duration,
    cached: Duration,
    first_oci: Duration,
    edited: Duration,
    edited_oci: Duration,
    peak: Option<u64>,
}

/// Every row through `build` (a build of the context with an optional output).
fn measure(
    ctx: &Path,
    files: usize,
    out: &Path,
    edits: &mut usize,
    build: &dyn Fn(Option<String>) -> Duration,
    pid: Option<u32>,
) -> Rows {
    let oci = |name: &str| Some(format!("type=oci,dest={}", out.join(name).display()));
    let first = build(None);
    let cached = median((0..RUNS).map(|_| build(None)).collect());
    let first_oci = build(oci("first.tar"));
    let mut edited = Vec::new();
    let mut edited_oci = Vec::new();
    for i in 0..EDITS {
        *edits += 1;
        edit(ctx, files, *edits);
        edited.push(build(None));
        *edits += 1;
        edit(ctx, files, *edits);
        edited_oci.push(build(oci(&format!("edit{i}.tar"))));
    }
    Rows {
        first,
        cached,
        first_oci,
        edited: median(edited),
        edited_oci: median(edited_oci),
        peak: pid.and_then(peak_memory),
    }
}

fn in_process(s: &support::Setup, ctx: &Path, output: Option<String>) -> Duration {
    let t = Instant::now();
    let mut c = Command::new(env!("CARGO_BIN_EXE_buildwit"));
    c.arg("--config")
        .arg(&s.config)
        .arg("--root")
        .arg(s.dir.path().join("in-process-root"))
        .arg("build")
        .arg(ctx)
        .arg("--progress=quiet");
    if let Some(o) = output {
        c.args(["--output", &o]);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    t.elapsed()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let files = env_usize("LARGE_CONTEXT_FILES", 30_000);
    let mb = env_usize("LARGE_CONTEXT_MB", 500);
    let s = support::setup();
    let ctx = s.dir.path().join("context");
    let t = Instant::now();
    generate(&ctx, files, mb << 20);
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE.replace("BASE", &s.image)).unwrap();
    let size = buildwit_worker::disk::tree_size(&ctx).unwrap();
    eprintln!(
        "context: {files} files, {} MB, generated in {:.1} s",
        size >> 20,
        t.elapsed().as_secs_f64()
    );
    let out = s.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut edits = 0;

    let ours_in_process = measure(
        &ctx,
        files,
        &out,
        &mut edits,
        &|o| in_process(&s, &ctx, o),
        None,
    );
    let ours = {
        let d = buildwitd(&s, "bw", "");
        run_daemon(&d, &ctx, files, &out, &mut edits)
    };
    let theirs = peers().map(|peers| {
        let d = buildkitd(&s, &peers, "bk", "");
        run_daemon(&d, &ctx, files, &out, &mut edits)
    });

    println!(
        "{files} files, {} MB: buildwit in-process, buildwitd (buildwit --addr), buildkitd (buildctl)",
        size >> 20
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>8}",
        "work", "in-process", "buildwitd", "buildkitd", "ratio"
    );
    let secs = |d: Duration| format!("{:.3}s", d.as_secs_f64());
    type Pick = fn(&Rows) -> Duration;
    let rows: [(&str, Pick); 5] = [
        ("first build", |r| r.first),
        ("fully cached (median of 5)", |r| r.cached),
        ("first -o type=oci", |r| r.first_oci),
        ("one file edited, no export", |r| r.edited),
        ("one file edited, -o type=oci", |r| r.edited_oci),
    ];
    for (label, pick) in rows {
        let theirs_cell = theirs.as_ref().map(|t| secs(pick(t)));
        let ratio = theirs
            .as_ref()
            .map(|t| format!("{:.2}x", pick(&ours).as_secs_f64() / pick(t).as_secs_f64()));
        println!(
            "{label:<34} {:>10} {:>10} {:>10} {:>8}",
            secs(pick(&ours_in_process)),
            secs(pick(&ours)),
            theirs_cell.unwrap_or_else(|| "-".into()),
            ratio.unwrap_or_else(|| "-".into()),
        );
    }
    let mb = |b: Option<u64>| b.map_or("-".into(), |b| format!("{} MB", b >> 20));
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "daemon peak memory (VmHWM)",
        "",
        mb(ours.peak),
        mb(theirs.as_ref().and_then(|t| t.peak)),
    );
    println!("(ratio: buildwitd's time over buildkitd's; lower is better)");
}

fn run_daemon(d: &Daemon, ctx: &Path, files: usize, out: &Path, edits: &mut usize) -> Rows {
    measure(
        ctx,
        files,
        out,
        edits,
        &|o| {
            d.build(
                ctx,
                &Request {
                    output: o,
                    ..Request::default()
                },
            )
        },
        Some(d.pid()),
    )
}
