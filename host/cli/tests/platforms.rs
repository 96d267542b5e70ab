//! Multi-platform builds: one build for linux/amd64 and linux/arm64 (RUN under qemu
//! emulation) exported as one image index, in-process and through buildwitd.

mod support;

use serde_json::Value;
use support::{Build, json, skopeo, text};

/// A stage built once on the build platform, then one stage per target platform.
const CROSS: &str = "FROM --platform=$BUILDPLATFORM MULTI AS build
ARG BUILDPLATFORM
RUN echo built-on-$BUILDPLATFORM > /note
FROM MULTI
ARG TARGETARCH
ARG TARGETPLATFORM
COPY --from=build /note /note
RUN uname -m > /arch && echo $TARGETARCH $TARGETPLATFORM > /target
";

#[test]
fn two_platforms_make_one_index_and_run_under_emulation() {
    let s = support::setup();
    let multi = s.push_multiarch_busybox();
    let ctx = s.context("cross", &[("Dockerfile", &CROSS.replace("MULTI", &multi))]);
    let oci = s.dir.path().join("oci");
    let fs = s.dir.path().join("fs");
    let meta = s.dir.path().join("meta.json");
    let host = multi.split('/').next().unwrap();
    let pushed = format!("{host}/example/multi:1");
    let build = |extra: &[&str]| {
        let mut args = vec!["--platform", "linux/amd64,linux/arm64", "-t", &pushed, "-o"];
        let oci_spec = format!("type=oci,dest={},tar=false", oci.display());
        let local_spec = format!("type=local,dest={}", fs.display());
        let meta_arg = meta.to_str().unwrap();
        args.extend([
            oci_spec.as_str(),
            "-o",
            local_spec.as_str(),
            "--metadata-file",
            meta_arg,
        ]);
        args.extend(extra);
        s.build(&ctx, &args).ok()
    };
    let first: Build = build(&[]);
    // The build stage is the same step for both platforms: it ran once.
    let runs = first
        .ran
        .iter()
        .filter(|n| n.contains("echo built-on"))
        .count();
    assert_eq!(runs, 1, "{:?}", first.ran);

    // Each platform's files, in a folder of its own.
    let read = |p: &str| std::fs::read_to_string(fs.join(p)).unwrap();
    assert_eq!(read("linux_amd64/arch").trim(), "x86_64");
    assert_eq!(read("linux_arm64/arch").trim(), "aarch64");
    assert_eq!(read("linux_amd64/target").trim(), "amd64 linux/amd64");
    assert_eq!(read("linux_arm64/target").trim(), "arm64 linux/arm64");
    assert_eq!(read("linux_arm64/note").trim(), "built-on-linux/amd64");

    // One index, a manifest per platform, each config saying its platform.
    let layout = format!("oci:{}:1", oci.display());
    let index = skopeo(&["inspect", "--raw", &layout]);
    let platforms: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"], "{index}");
    let arm = skopeo(&["--override-arch", "arm64", "inspect", "--config", &layout]);
    assert_eq!(arm["architecture"], "arm64");
    let digest = json(&meta)["containerimage.digest"].clone();

    // Cached: nothing runs again, and the same index comes out.
    let again = build(&[]);
    assert!(!again.ran_any("RUN"), "{:?}", again.ran);
    assert_eq!(json(&meta)["containerimage.digest"], digest);

    // Pushed: the registry serves the index and each platform's image.
    let out = s.buildwit(&[
        "build",
        ctx.to_str().unwrap(),
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        &pushed,
        "--push",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let remote = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{pushed}"),
    ]);
    assert_eq!(remote["manifests"].as_array().unwrap().len(), 2, "{remote}");
    let arm = skopeo(&[
        "--override-arch",
        "arm64",
        "inspect",
        "--tls-verify=false",
        "--config",
        &format!("docker://{pushed}"),
    ]);
    assert_eq!(arm["architecture"], "arm64");

    // Provenance per platform, after the platforms' manifests, as BuildKit orders them:
    // each names its own platform's base image.
    let attested = s.dir.path().join("attested");
    let out = s.buildwit(&[
        "build",
        ctx.to_str().unwrap(),
        "--platform",
        "linux/amd64,linux/arm64",
        "--provenance",
        "mode=max",
        "-o",
        &format!("type=oci,dest={},tar=false", attested.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let top = json(&attested.join("index.json"));
    let blob = |digest: &Value| {
        let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
        json(&attested.join("blobs/sha256").join(hex))
    };
    let index = blob(&top["manifests"][0]["digest"]);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 4, "{index}");
    for (i, arch) in ["amd64", "arm64"].into_iter().enumerate() {
        let attestation = &manifests[2 + i];
        assert_eq!(
            attestation["annotations"]["vnd.docker.reference.digest"],
            manifests[i]["digest"]
        );
        let statement = blob(&blob(&attestation["digest"])["layers"][0]["digest"]);
        let uris: Vec<&str> = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["uri"].as_str().unwrap())
            .collect();
        let wanted = format!("platform=linux%2F{arch}");
        assert!(
            uris.iter().any(|u| u.ends_with(&wanted)),
            "{arch}: {uris:?}"
        );
    }

    // A Docker archive holds one platform: a clear error.
    let out = s.buildwit(&[
        "build",
        ctx.to_str().unwrap(),
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=docker,dest={}", s.dir.path().join("d.tar").display()),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("use type=oci"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_worker_lists_what_it_can_run_and_refuses_the_rest_before_any_step() {
    let s = support::setup();
    let out = s.buildwit(&["debug", "workers"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let workers = text(&out.stdout);
    assert!(workers.contains("linux/amd64"), "{workers}");
    // `.ci/run` registers qemu-user-static.
    assert!(workers.contains("linux/arm64"), "{workers}");

    let ctx = s.context(
        "windows",
        &[("Dockerfile", "FROM BASE\nRUN echo first > /f\n")],
    );
    let out = s.buildwit(&[
        "build",
        ctx.to_str().unwrap(),
        "--platform",
        "linux/sparc",
        "--progress=plain",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot run steps for linux/sparc") && err.contains("qemu-user-static"),
        "{err}"
    );
}

#[test]
fn multi_platform_builds_come_through_the_daemon() {
    let s = support::setup();
    let multi = s.push_multiarch_busybox();
    let daemon = support::Daemon::unix(&s, "platforms");
    let ctx = s.context(
        "remote-cross",
        &[("Dockerfile", &CROSS.replace("MULTI", &multi))],
    );
    let fs = s.dir.path().join("remote-fs");
    let oci = s.dir.path().join("remote-oci.tar");
    let out = daemon.cli(&[
        "build",
        ctx.to_str().unwrap(),
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=local,dest={}", fs.display()),
        "-o",
        &format!("type=oci,dest={}", oci.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(fs.join("linux_arm64/arch"))
            .unwrap()
            .trim(),
        "aarch64"
    );
    let index = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", oci.display()),
    ]);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
}
