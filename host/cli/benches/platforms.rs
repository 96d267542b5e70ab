//! A two-platform build (linux/amd64 and linux/arm64, the arm64 steps under qemu) exported
//! as an OCI image index, buildwitd against buildkitd in the same run: the first build on
//! an empty root (the base image pulled, every step run), the same on a daemon that built
//! something else before (buildwit's frontend compiled, nothing of this build cached), and
//! the fully cached rebuild.
//!
//! `cargo bench -p buildwit --bench platforms` prints the cold times (one build each) and
//! the median of the cached ones. BuildKit comes from `../shared/peers`; without it,
//! its column is left out. Needs qemu-user-static registered in binfmt_misc.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::{Daemon, Request, buildkitd, buildwitd, peers};
use support::median;

const RUNS: usize = 5;

const DOCKERFILE: &str = "FROM --platform=$BUILDPLATFORM MULTI AS build
ARG BUILDPLATFORM
RUN echo built-on-$BUILDPLATFORM > /note && seq 1 20000 > /numbers
FROM MULTI
ARG TARGETARCH
COPY --from=build /note /numbers /
RUN uname -m > /arch && sort -rn /numbers | head -1 > /max && echo $TARGETARCH > /target
";

/// Cold on an empty root, cold on a used daemon, cached.
fn measure(
    fresh: &Daemon,
    used: &Daemon,
    s: &support::Setup,
    ctx: &std::path::Path,
    out: &std::path::Path,
) -> [Duration; 3] {
    let request = Request {
        platform: Some("linux/amd64,linux/arm64"),
        output: Some(format!("type=oci,dest={}", out.display())),
        ..Default::default()
    };
    let cold = fresh.build(ctx, &request);
    let cached = median((0..RUNS).map(|_| fresh.build(ctx, &request)).collect());
    let other = s.context(
        "other",
        &[("Dockerfile", "FROM scratch\nCOPY Dockerfile /\n")],
    );
    used.build(&other, &Request::default());
    let warm = used.build(ctx, &request);
    [cold, warm, cached]
}

fn main() {
    let s = support::setup();
    let multi = s.push_multiarch_busybox();
    let ctx = s.context(
        "platforms",
        &[("Dockerfile", &DOCKERFILE.replace("MULTI", &multi))],
    );
    let ours = {
        let fresh = buildwitd(&s, "bw-platforms", "");
        let used = buildwitd(&s, "bw-platforms-used", "");
        measure(&fresh, &used, &s, &ctx, &s.dir.path().join("bw.tar"))
    };
    let theirs = peers().map(|peers| {
        let fresh = buildkitd(&s, &peers, "bk-platforms", "");
        let used = buildkitd(&s, &peers, "bk-platforms-used", "");
        measure(&fresh, &used, &s, &ctx, &s.dir.path().join("bk.tar"))
    });
    if theirs.is_none() {
        eprintln!("BuildKit not found (../shared/peers): its column is left out");
    }
    println!("linux/amd64 + linux/arm64 to an OCI index (cached: median of {RUNS})");
    println!(
        "{:<18} {:>10} {:>10} {:>7}",
        "build", "buildwit", "BuildKit", "ratio"
    );
    let rows = [
        ("cold, empty root", ours[0], theirs.map(|t| t[0])),
        ("cold, used daemon", ours[1], theirs.map(|t| t[1])),
        ("cached", ours[2], theirs.map(|t| t[2])),
    ];
    for (what, ours, theirs) in rows {
        let s = |d: Duration| d.as_secs_f64();
        match theirs {
            Some(t) => println!(
                "{what:<18} {:>9.3}s {:>9.3}s {:>6.1}x",
                s(ours),
                s(t),
                s(t) / s(ours).max(1e-6)
            ),
            None => println!("{what:<18} {:>9.3}s {:>10} {:>7}", s(ours), "-", "-"),
        }
    }
}
