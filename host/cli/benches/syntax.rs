//! `# syntax=` frontends, through `buildctl` against buildwitd and against buildkitd in the
//! same run: BuildKit's own Dockerfile frontend as a container image (the same image,
//! pushed to the same registry, for both daemons), buildwit's Dockerfile frontend as a Wasm
//! frontend image (by tag, re-resolved at the registry on every build as BuildKit does, and
//! pinned by digest), each daemon's built-in Dockerfile frontend, and buildwit's toml-spec
//! plugin (a Wasm image in buildwitd, `frontend push --container` in buildkitd). A small
//! project; the first build, and the median of its cached rebuilds.
//!
//! `cargo bench -p buildwit --bench syntax`. Needs `../shared/peers`.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use buildwit_frontend::BUILT_FRONTENDS_DIR;
use common::{Daemon, Request, buildkitd, buildwitd_for_buildctl, peers};
use support::{Setup, median, text};

const RUNS: usize = 21;

const DOCKERFILE: &str = "FROM BASE
WORKDIR /app
COPY package.json ./
RUN echo installing > /install.log
COPY src src
RUN ls src > files.txt
";

/// A context whose Dockerfile starts with `syntax` (none when empty); its files differ by
/// `name`, so that each first build runs its steps.
fn project(s: &Setup, name: &str, syntax: &str) -> PathBuf {
    let header = match syntax {
        "" => String::new(),
        s => format!("# syntax={s}\n"),
    };
    s.context(
        name,
        &[
            ("Dockerfile", &format!("{header}{DOCKERFILE}")),
            ("package.json", &format!("{{\"name\": \"{name}\"}}\n")),
            ("src/a.js", "a\n"),
            ("src/b.js", "b\n"),
        ],
    )
}

/// The first build and the median cached one.
fn measure(d: &Daemon, ctx: &Path) -> (Duration, Duration) {
    let request = Request::default();
    let first = d.build(ctx, &request);
    let cached = median((0..RUNS).map(|_| d.build(ctx, &request)).collect());
    (first, cached)
}

fn main() {
    let Some(peers) = peers() else {
        eprintln!("BuildKit not found (../shared/peers): nothing to compare");
        return;
    };
    let s = support::setup();
    let host = s.image.split('/').next().unwrap().to_string();
    // BuildKit's Dockerfile frontend as a container image, for both daemons.
    let container = format!("{host}/peer/dockerfile:1");
    let layout = Path::new(env!("BUILDWIT_SHARED_DIR")).join("peers/images/dockerfile-frontend");
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{container}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // buildwit's Dockerfile frontend as a Wasm frontend image.
    let wasm = format!("{host}/buildwit/dockerfile:1");
    let out = s.buildwit(&[
        "frontend",
        "push",
        &format!("{BUILT_FRONTENDS_DIR}/dockerfile.wasm"),
        &wasm,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The same image pinned by digest: no registry round trip once pulled.
    let pushed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let digest = pushed
        .split_whitespace()
        .find_map(|w| w.split_once('@').map(|(_, d)| d.to_string()))
        .expect("push names the digest");
    let pinned = format!("{host}/buildwit/dockerfile@{digest}");
    // The toml-spec plugin, as a Wasm image for buildwitd and as a container for buildkitd.
    // The Dockerfile frontend reads `Dockerfile` and forwards; the plugin reads `build.toml`.
    let spec = |name: &str, syntax: &str| {
        let text = format!(
            "# syntax={syntax}\nworkdir = \"/app\"\n[[step]]\nfile = {{ path = \"/app/{name}\", content = \"1\\n\", mode = 0o644 }}\n"
        );
        s.context(name, &[("Dockerfile", &text), ("build.toml", &text)])
    };
    let plugin = format!("{BUILT_FRONTENDS_DIR}/toml-spec.wasm");
    let (spec_wasm, spec_container) = (
        format!("{host}/buildwit/toml-spec:1"),
        format!("{host}/buildwit/toml-spec-container:1"),
    );
    for (reference, extra) in [(&spec_wasm, None), (&spec_container, Some("--container"))] {
        let mut args = vec!["frontend", "push"];
        args.extend(extra);
        args.extend([plugin.as_str(), reference.as_str()]);
        let out = s.buildwit(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    let rows = [
        (
            "container image frontend",
            project(&s, "container", &container),
            true,
        ),
        ("Wasm image frontend", project(&s, "wasm", &wasm), false),
        (
            "Wasm image, digest pin",
            project(&s, "pinned", &pinned),
            false,
        ),
        ("built-in frontend", project(&s, "builtin", ""), true),
    ];
    println!("buildctl against each daemon (cached: median of {RUNS})");
    println!(
        "{:<26} {:<7} {:>10} {:>10} {:>7}",
        "# syntax=", "build", "buildwitd", "buildkitd", "ratio"
    );
    let ours = buildwitd_for_buildctl(&s, &peers, "bw");
    let theirs = buildkitd(&s, &peers, "bk", "");
    for (label, ctx, both) in &rows {
        let (a_first, a_cached) = measure(&ours, ctx);
        let (b_first, b_cached) = match both {
            true => measure(&theirs, ctx),
            false => (Duration::ZERO, Duration::ZERO),
        };
        print_rows(label, [(a_first, b_first), (a_cached, b_cached)]);
    }
    // The same plugin on both daemons: natively in buildwitd, through the runner in buildkitd.
    let ours_spec = measure(&ours, &spec("spec-bw", &spec_wasm));
    let theirs_spec = measure(&theirs, &spec("spec-bk", &spec_container));
    print_rows(
        "toml-spec plugin",
        [(ours_spec.0, theirs_spec.0), (ours_spec.1, theirs_spec.1)],
    );
}

/// A first and a cached row: buildwitd's time, buildkitd's (zero: not measured).
fn print_rows(label: &str, rows: [(Duration, Duration); 2]) {
    for (row, (a, b)) in ["first", "cached"].into_iter().zip(rows) {
        match b.is_zero() {
            true => println!(
                "{label:<26} {row:<7} {:>9.3}s {:>10} {:>7}",
                a.as_secs_f64(),
                "n/a",
                ""
            ),
            false => println!(
                "{label:<26} {row:<7} {:>9.3}s {:>9.3}s {:>6.1}x",
                a.as_secs_f64(),
                b.as_secs_f64(),
                b.as_secs_f64() / a.as_secs_f64()
            ),
        }
    }
}
