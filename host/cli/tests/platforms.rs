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
        let mut args = vec![
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &pushed,
            "--annotation",
            "index,manifest[linux/arm64]:org.example.arm=yes",
            "-o",
        ];
        let oci_spec = format!(
            "type=oci,dest={},tar=false,annotation-manifest-descriptor[linux/amd64].org.example.d=1",
            oci.display()
        );
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
    // Each annotation where its type and platform say.
    assert_eq!(index["annotations"]["org.example.arm"], "yes", "{index}");
    assert_eq!(index["manifests"][0]["annotations"]["org.example.d"], "1");
    assert!(
        index["manifests"][1].get("annotations").is_none(),
        "{index}"
    );
    for (i, wanted) in [Value::Null, "yes".into()].into_iter().enumerate() {
        let digest = index["manifests"][i]["digest"].as_str().unwrap();
        let manifest = json(&oci.join("blobs/sha256").join(&digest[7..]));
        assert_eq!(
            manifest["annotations"]["org.example.arm"], wanted,
            "{manifest}"
        );
    }
    // umoci unpacks each platform's image, as skopeo picks it from the index.
    for (arch, uname) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let copy = s.dir.path().join("copies");
        let tag = format!("oci:{}:{arch}", copy.display());
        let out = std::process::Command::new("skopeo")
            .args(["--override-arch", arch, "copy", &layout, &tag])
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo copy: {}", text(&out.stderr));
        let bundle = s.dir.path().join(format!("bundle-{arch}"));
        let out = std::process::Command::new("umoci")
            .args(["unpack", "--image", &format!("{}:{arch}", copy.display())])
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(out.status.success(), "umoci unpack: {}", text(&out.stderr));
        let arch_file = std::fs::read_to_string(bundle.join("rootfs/arch")).unwrap();
        assert_eq!(arch_file.trim(), uname);
    }
    let digest = json(&meta)["containerimage.digest"].clone();

    // Cached: nothing runs again, and the same index comes out.
    let again = build(&[]);
    assert!(!again.ran_any("RUN"), "{:?}", again.ran);
    // The shared step is one step, listed once.
    let shared = again.cached.iter().filter(|n| n.contains("echo built-on"));
    assert_eq!(shared.count(), 1, "{:?}", again.cached);
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
}

/// No RUN: each platform's files are made without emulation.
const FILES: &str = "FROM scratch AS merged
ARG TARGETOS TARGETARCH
COPY hello /hello-$TARGETOS-$TARGETARCH
FROM scratch AS clash
COPY hello /hello
";

#[test]
fn files_outputs_split_or_merge_platforms_as_buildkit() {
    let s = support::setup();
    let ctx = s.context("files", &[("Dockerfile", FILES), ("hello", "hi\n")]);
    let both = "linux/amd64,linux/arm64";
    let build = |target: &str, output: String| {
        s.buildwit(&[
            "build",
            ctx.to_str().unwrap(),
            "--platform",
            both,
            "--target",
            target,
            "-o",
            &output,
        ])
    };

    // A tar holds a directory per platform.
    let tar = s.dir.path().join("out.tar");
    let out = build("clash", format!("type=tar,dest={}", tar.display()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    let mut names: Vec<String> = text(&list.stdout).lines().map(str::to_string).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "linux_amd64/",
            "linux_amd64/hello",
            "linux_arm64/",
            "linux_arm64/hello"
        ]
    );

    // Merged into one directory: each platform's files side by side...
    let merged = s.dir.path().join("merged");
    let out = build(
        "merged",
        format!("type=local,dest={},platform-split=false", merged.display()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut files: Vec<String> = std::fs::read_dir(&merged)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["hello-linux-amd64", "hello-linux-arm64"]);

    // ...but never one platform's file over another's.
    let clash = s.dir.path().join("clash");
    let out = build(
        "clash",
        format!("type=local,dest={},platform-split=false", clash.display()),
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot overwrite hello from linux/amd64 with linux/arm64"),
        "{err}"
    );

    // A Docker archive holds one platform, as in BuildKit.
    let out = build(
        "merged",
        format!("type=docker,dest={}", s.dir.path().join("d.tar").display()),
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("docker exporter does not currently support exporting manifest lists"),
        "{err}"
    );

    // A platform an annotation names must be one of the build's.
    let out = build(
        "merged",
        format!(
            "type=oci,dest={},annotation-manifest[linux/s390x].a=1",
            s.dir.path().join("a.tar").display()
        ),
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("invalid annotation: no platform linux/s390x found in source"),
        "{err}"
    );
}

#[test]
fn the_first_platform_to_fail_stops_the_others() {
    let s = support::setup();
    let multi = s.push_multiarch_busybox();
    let dockerfile = format!(
        "FROM {multi}\nARG TARGETARCH\n\
         RUN if [ $TARGETARCH = arm64 ]; then sleep 1; exit 3; else sleep 60; echo finished; fi\n"
    );
    let ctx = s.context("fail", &[("Dockerfile", &dockerfile)]);
    let b = s.build(&ctx, &["--platform", "linux/amd64,linux/arm64"]);
    assert!(!b.out.status.success());
    let err = text(&b.out.stderr);
    assert!(err.contains("exit code: 3"), "{err}");
    // The amd64 step was stopped in its sleep: it never got to say it finished.
    assert!(!b.logs.iter().any(|l| l == "finished"), "{:?}", b.logs);
}

#[test]
fn a_base_image_without_the_platform_fails_with_buildkits_error() {
    let s = support::setup();
    let multi = s.push_multiarch_busybox();
    let ctx = s.context(
        "no-platform",
        &[("Dockerfile", &format!("FROM {multi}\nRUN true\n"))],
    );
    let b = s.build(&ctx, &["--platform", "linux/s390x"]);
    assert!(!b.out.status.success());
    let err = text(&b.out.stderr);
    assert!(
        err.contains("no match for platform in manifest sha256:")
            && err.contains("not found")
            && err.contains("linux/amd64, linux/arm64"),
        "{err}"
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

    // `[worker.oci] platforms` is the list, when set: arm64 is then refused too.
    let config = s.dir.path().join("amd64-only.toml");
    let mut toml = std::fs::read_to_string(&s.config).unwrap();
    toml.push_str("[worker.oci]\nplatforms = [\"linux/amd64\"]\n");
    std::fs::write(&config, toml).unwrap();
    let b = s.build_with(&config, &ctx, &["--platform", "linux/arm64"]);
    assert!(!b.out.status.success());
    let err = text(&b.out.stderr);
    assert!(
        err.contains("cannot run steps for linux/arm64: this worker runs linux/amd64"),
        "{err}"
    );
    assert!(!b.ran_any("RUN"), "{:?}", b.ran);
}

#[test]
fn a_build_that_names_no_platform_is_for_the_workers_own() {
    let s = support::setup();
    let multi = s.push_multiarch_busybox();
    let ctx = s.context(
        "worker-platform",
        &[(
            "Dockerfile",
            &format!(
                "FROM {multi}\nARG TARGETPLATFORM\nARG BUILDPLATFORM\nRUN uname -m > /arch && echo $TARGETPLATFORM $BUILDPLATFORM > /target\n"
            ),
        )],
    );
    // A worker whose own platform is arm64 (as on an arm64 host), amd64 under it.
    let config = s.dir.path().join("arm64-worker.toml");
    let mut toml = std::fs::read_to_string(&s.config).unwrap();
    toml.push_str("[worker.oci]\nplatforms = [\"linux/arm64\", \"linux/amd64\"]\n");
    std::fs::write(&config, toml).unwrap();
    let fs = s.dir.path().join("fs");
    let dest = format!("type=local,dest={}", fs.display());
    s.build_with(&config, &ctx, &["-o", &dest]).ok();
    let read = |f: &str| std::fs::read_to_string(fs.join(f)).unwrap();
    assert_eq!(read("arch").trim(), "aarch64");
    assert_eq!(read("target").trim(), "linux/arm64 linux/arm64");
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
