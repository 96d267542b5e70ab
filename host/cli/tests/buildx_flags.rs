//! `buildwit build` with the flags of `docker buildx build`: each one's effect is seen in
//! the result (the image's config, manifest and index, the files a step wrote, what ran).

mod support;

use std::path::Path;

use serde_json::Value;
use support::{Setup, json, skopeo, text};

const DOCKERFILE: &str = "FROM BASE AS base
RUN echo base > /base.txt
FROM base AS app
COPY --from=extra hello.txt /extra.txt
RUN cat /etc/hosts > /hosts.txt; ulimit -n > /nofile.txt; df -k /dev/shm | tail -1 > /shm.txt; \\
    cat /proc/self/cgroup > /cgroup.txt; ls /sys/class/net > /nets.txt
";

#[test]
fn buildx_flags_show_in_the_image_and_the_steps() {
    let s = support::setup();
    let ctx = s.context("flags", &[("Dockerfile", DOCKERFILE)]);
    let extra = s.context("extra", &[("hello.txt", "from the extra context\n")]);
    let oci = s.dir.path().join("oci");
    let fs = s.dir.path().join("fs");
    let iid = s.dir.path().join("iid");
    let meta = s.dir.path().join("meta.json");
    let out = s.buildwit(&[
        "build",
        ctx.to_str().unwrap(),
        "-q",
        "--label",
        "org.example.team=build",
        "--annotation",
        "org.example.a=1",
        "--annotation",
        "manifest-descriptor:org.example.d=2",
        "--build-context",
        &format!("extra={}", extra.display()),
        "--add-host",
        "db.internal:10.1.2.3",
        "--ulimit",
        "nofile=1234:2048",
        "--shm-size",
        "32m",
        "--cgroup-parent",
        "buildwit-test",
        "--network",
        "none",
        "-t",
        "example.com/app:1",
        "-o",
        &format!("type=oci,dest={},tar=false", oci.display()),
        "-o",
        &format!("type=local,dest={}", fs.display()),
        "--iidfile",
        iid.to_str().unwrap(),
        "--metadata-file",
        meta.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The image: the label in its config, the annotations on its manifest and in the index.
    // The layout names the image by its tag, as BuildKit's does.
    let layout = format!("oci:{}:1", oci.display());
    let config = skopeo(&["inspect", "--config", &layout]);
    assert_eq!(config["config"]["Labels"]["org.example.team"], "build");
    let manifest = skopeo(&["inspect", "--raw", &layout]);
    assert_eq!(manifest["annotations"]["org.example.a"], "1");
    let index = json(&oci.join("index.json"));
    let descriptor = &index["manifests"][0];
    assert_eq!(descriptor["annotations"]["org.example.d"], "2");

    // -q prints the image id alone; --iidfile holds it; --metadata-file says what buildx says.
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(text(&out.stdout), format!("{config_digest}\n"));
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), config_digest);
    let meta = json(&meta);
    assert_eq!(meta["containerimage.config.digest"], config_digest);
    assert_eq!(meta["containerimage.digest"], descriptor["digest"]);
    assert_eq!(
        meta["containerimage.descriptor"]["digest"],
        descriptor["digest"]
    );
    assert_eq!(
        meta["containerimage.descriptor"]["size"],
        descriptor["size"]
    );
    assert_eq!(
        meta["containerimage.descriptor"]["mediaType"],
        descriptor["mediaType"]
    );
    assert_eq!(meta["image.name"], "example.com/app:1");
    let build_ref = meta["buildx.build.ref"].as_str().unwrap();
    let id = build_ref.rsplit('/').next().unwrap();
    let history = s.buildwit(&["history", "inspect", id]);
    assert!(history.status.success(), "{}", text(&history.stderr));

    // The steps: the extra context, the host entry, the ulimit, /dev/shm, the cgroup, and
    // no network but loopback.
    let read = |p: &str| std::fs::read_to_string(fs.join(p)).unwrap();
    assert_eq!(read("extra.txt"), "from the extra context\n");
    assert!(
        read("hosts.txt").contains("10.1.2.3\tdb.internal"),
        "{}",
        read("hosts.txt")
    );
    assert_eq!(read("nofile.txt").trim(), "1234");
    let shm: Vec<String> = read("shm.txt")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(shm[1], "32768", "{shm:?}");
    assert!(
        read("cgroup.txt").contains("/buildwit-test/buildkit/"),
        "{}",
        read("cgroup.txt")
    );
    assert_eq!(read("nets.txt").trim(), "lo");
}

#[test]
fn no_cache_and_no_cache_filter_miss_exactly_what_they_name() {
    let s = support::setup();
    let ctx = s.context(
        "nocache",
        &[(
            "Dockerfile",
            "FROM BASE AS base\nRUN echo base > /base.txt\nFROM base AS app\nRUN echo app > /app.txt\n",
        )],
    );
    s.build(&ctx, &[]).ok();
    let again = s.build(&ctx, &[]).ok();
    assert!(
        again.ran.iter().all(|n| !n.contains("RUN")),
        "{:?}",
        again.ran
    );

    let filtered = s.build(&ctx, &["--no-cache-filter", "app"]).ok();
    assert!(filtered.ran_any("echo app"), "{:?}", filtered.ran);
    assert!(!filtered.ran_any("echo base"), "{:?}", filtered.ran);

    let none = s.build(&ctx, &["--no-cache"]).ok();
    assert!(none.ran_any("echo app"), "{:?}", none.ran);
    assert!(none.ran_any("echo base"), "{:?}", none.ran);
}

#[test]
fn pull_check_and_refusals_as_buildx_has_them() {
    let s = support::setup();
    let ctx = s.context("misc", &[("Dockerfile", "FROM BASE\nRUN true\n")]);

    // --pull asks the source to resolve the image again.
    let out = s.buildwit(&["build", ctx.to_str().unwrap(), "--pull", "--dump-llb"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(r#""image.resolvemode":"pull""#),
        "{}",
        text(&out.stdout)
    );

    // --check is --call check: the Dockerfile's lint, nothing built.
    let lint = s.context("lint", &[("Dockerfile", "from BASE as Base\nRUN true\n")]);
    let out = s.buildwit(&["build", lint.to_str().unwrap(), "--check"]);
    assert!(
        text(&out.stdout).contains("StageNameCasing"),
        "{}",
        text(&out.stdout)
    );

    // --network host needs the daemon's permission, as in BuildKit.
    let out = s.buildwit(&["build", ctx.to_str().unwrap(), "--network", "host"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("network.host"),
        "{}",
        text(&out.stderr)
    );

    for (args, says) in [
        (&["--load"][..], "no Docker engine"),
        (&["--builder", "x"][..], "--addr"),
        (&["--provenance", "mode=all"][..], "use min or max"),
        (&["--attest", "type=sbom"][..], "not supported yet"),
        (&["--attest", "mode=max"][..], "expected type=provenance"),
        (&["--sbom=true"][..], "not supported yet"),
        (&["--add-host", "db:nope"][..], "not an IP address"),
        (&["--ulimit", "nofile"][..], "NAME=SOFT[:HARD]"),
        (&["--shm-size", "2x"][..], "unknown unit"),
        (&["--network", "bridge"][..], "default, none or host"),
        (
            &["--build-context", "x=/nonexistent"][..],
            "must be a directory",
        ),
    ] {
        let mut all = vec!["build", ctx.to_str().unwrap()];
        all.extend(args);
        let out = s.buildwit(&all);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // Turning attestations off is no error.
    let out = s.buildwit(&[
        "build",
        ctx.to_str().unwrap(),
        "--provenance=false",
        "--sbom=false",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn flags_reach_buildwitd_too() {
    let s: Setup = support::setup();
    let daemon = support::Daemon::unix(&s, "flags");
    let ctx = s.context("remote", &[("Dockerfile", DOCKERFILE)]);
    let extra = s.context("remote-extra", &[("hello.txt", "remote extra\n")]);
    let oci = s.dir.path().join("remote-oci");
    let fs = s.dir.path().join("remote-fs");
    let meta = s.dir.path().join("remote-meta.json");
    let out = daemon.cli(&[
        "build",
        ctx.to_str().unwrap(),
        "--annotation",
        "org.example.a=remote",
        "--build-context",
        &format!("extra={}", extra.display()),
        "--add-host",
        "db.internal=10.9.8.7",
        "-o",
        &format!("type=oci,dest={},tar=false", oci.display()),
        "-o",
        &format!("type=local,dest={}", fs.display()),
        "--metadata-file",
        meta.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let index = json(&oci.join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = json(&oci.join("blobs/sha256").join(&digest["sha256:".len()..]));
    assert_eq!(manifest["annotations"]["org.example.a"], "remote");
    assert_eq!(json(&meta)["containerimage.digest"], digest);
    assert_eq!(
        std::fs::read_to_string(fs.join("extra.txt")).unwrap(),
        "remote extra\n"
    );
    assert!(
        std::fs::read_to_string(fs.join("hosts.txt"))
            .unwrap()
            .contains("10.9.8.7\tdb.internal")
    );
}

/// An OCI layout's blob, as JSON.
fn blob(layout: &Path, digest: &str) -> Value {
    json(
        &layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
}

#[test]
fn provenance_is_attached_as_buildkit_attaches_it() {
    let s = support::setup();
    let host = s.image.split('/').next().unwrap().to_string();
    let ctx = s.context(
        "provenance",
        &[(
            "Dockerfile",
            "FROM BASE AS base\nARG GREETING=hi\nRUN echo $GREETING > /g\nFROM scratch\nCOPY --from=base /g /g\n",
        )],
    );
    let oci = s.dir.path().join("prov-oci");
    let meta = s.dir.path().join("prov-meta.json");
    let pushed = format!("{host}/example/app:prov");
    let out = s.buildwit(&[
        "build",
        ctx.to_str().unwrap(),
        "--provenance",
        "mode=max",
        "--build-arg",
        "GREETING=hello",
        "-t",
        "example.com/app:1",
        "-o",
        &format!("type=oci,dest={},tar=false", oci.display()),
        "--metadata-file",
        meta.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The names point at an index: the image, then its attestation manifest.
    let index = skopeo(&["inspect", "--raw", &format!("oci:{}:1", oci.display())]);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let image = &index["manifests"][0];
    let attestation = &index["manifests"][1];
    assert_eq!(image["platform"]["os"], "linux");
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.digest"],
        image["digest"]
    );
    assert_eq!(attestation["platform"]["os"], "unknown");
    let index_digest = json(&oci.join("index.json"))["manifests"][0]["digest"].clone();
    assert_eq!(json(&meta)["containerimage.digest"], index_digest);

    // The statement: the image as its subject, the base image and the frontend as
    // dependencies, the request with its build arguments, the LLB.
    let attestation = blob(&oci, attestation["digest"].as_str().unwrap());
    assert_eq!(
        attestation["artifactType"],
        "application/vnd.docker.attestation.manifest.v1+json"
    );
    assert_eq!(attestation["subject"]["digest"], image["digest"]);
    let layer = &attestation["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.in-toto+json");
    assert_eq!(
        layer["annotations"]["in-toto.io/predicate-type"],
        "https://slsa.dev/provenance/v1"
    );
    let statement = blob(&oci, layer["digest"].as_str().unwrap());
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        statement["subject"][0]["name"],
        "pkg:docker/example.com/app@1?platform=linux%2Famd64"
    );
    assert_eq!(
        format!(
            "sha256:{}",
            statement["subject"][0]["digest"]["sha256"]
                .as_str()
                .unwrap()
        ),
        image["digest"].as_str().unwrap()
    );
    let definition = &statement["predicate"]["buildDefinition"];
    let dependencies = definition["resolvedDependencies"].as_array().unwrap();
    let base = format!(
        "pkg:docker/{}@latest?platform=linux%2Famd64",
        s.image.trim_end_matches(":latest").replacen(':', "%3A", 1)
    );
    assert!(
        dependencies
            .iter()
            .any(|d| d["uri"] == base.as_str() && d["digest"]["sha256"].is_string()),
        "{base} not in {dependencies:?}"
    );
    assert!(
        dependencies.iter().any(|d| d["uri"]
            .as_str()
            .unwrap()
            .starts_with("pkg:generic/buildwit-frontend/dockerfile@")),
        "{dependencies:?}"
    );
    let request = &definition["externalParameters"]["request"];
    assert_eq!(request["frontend"], "dockerfile.v0");
    assert_eq!(request["args"]["build-arg:GREETING"], "hello");
    assert!(request["args"].get("attest:provenance").is_none());
    assert_eq!(request["locals"][0]["name"], "context");
    let llb = definition["internalParameters"]["buildConfig"]["llbDefinition"]
        .as_array()
        .unwrap();
    assert!(
        llb.iter().any(|step| step["op"]["Op"]["exec"].is_object()),
        "{llb:?}"
    );

    // Pushed: the index under the tag, each manifest by digest.
    let out = s.buildwit(&[
        "build",
        ctx.to_str().unwrap(),
        "--attest",
        "type=provenance,mode=min",
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
    let attestation_digest = remote["manifests"][1]["digest"].as_str().unwrap();
    let remote_attestation = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{host}/example/app@{attestation_digest}"),
    ]);
    assert_eq!(
        remote_attestation["layers"][0]["mediaType"],
        "application/vnd.in-toto+json"
    );

    // Off: a plain manifest.
    let plain = s.dir.path().join("plain-oci");
    let out = s.buildwit(&[
        "build",
        ctx.to_str().unwrap(),
        "--provenance=false",
        "-o",
        &format!("type=oci,dest={},tar=false", plain.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        json(&plain.join("index.json"))["manifests"][0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
}
