//! Build cache export and import (`--export-cache` / `--import-cache`) on real parts: a
//! build exports its cache, a daemon with an empty root imports it and finds every step
//! cached.

use std::path::Path;
use std::process::Command;

mod support;

use support::{Build, Setup, json, setup, text};

const DOCKERFILE: &str = "FROM BASE AS build\nWORKDIR /src\nCOPY app.txt .\n\
    RUN cat app.txt > out.txt && echo built >> out.txt\n\
    FROM BASE\nCOPY --from=build /src/out.txt /out.txt\nCOPY other.txt /other.txt\n\
    RUN cat /other.txt > /seen\n";

fn context(s: &Setup) -> std::path::PathBuf {
    s.context(
        "app",
        &[
            ("Dockerfile", DOCKERFILE),
            ("app.txt", "hello\n"),
            ("other.txt", "one\n"),
        ],
    )
}

/// Steps of a build that ran (not cached).
fn ran_steps(b: &Build) -> Vec<&String> {
    b.ran
        .iter()
        .filter(|n| n.contains("RUN") || n.contains("COPY"))
        .collect()
}

/// Start over with an empty state root.
fn fresh_root(s: &mut Setup, name: &str) {
    s.root = s.dir.path().join(name);
}

/// The blobs of a local cache directory, and those the manifests of its index.json name.
fn blobs(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    on_disk.sort();
    let mut named = Vec::new();
    for digest in versions(dir) {
        let manifest = json(&blob(dir, &digest));
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.buildkit.cacheconfig.v0"
        );
        named.push(digest);
        named.push(manifest["config"]["digest"].as_str().unwrap().to_string());
        for l in manifest["layers"].as_array().unwrap() {
            named.push(l["digest"].as_str().unwrap().to_string());
        }
    }
    named.sort();
    named.dedup();
    (on_disk, named)
}

/// The manifests a local cache directory's index.json names, the latest first.
fn versions(dir: &Path) -> Vec<String> {
    let index = json(&dir.join("index.json"));
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect()
}

fn blob(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("blobs/sha256").join(&digest["sha256:".len()..])
}

/// The line the cache export logs: `N records, M blobs written (B bytes), K already there`.
fn export_line(b: &Build) -> &String {
    b.logs
        .iter()
        .find(|l| l.contains("blobs written"))
        .unwrap_or_else(|| panic!("no export line in {:?}", b.logs))
}

#[test]
fn a_local_cache_fills_an_empty_root() {
    let mut s = setup();
    let ctx = context(&s);
    let cache = s.dir.path().join("cache");
    let dest = format!("type=local,dest={},mode=max", cache.display());
    let first = s.build(&ctx, &["--export-cache", &dest]).ok();
    assert!(first.ran_any("RUN cat app.txt"), "ran: {:?}", first.ran);
    let (on_disk, named) = blobs(&cache);
    assert_eq!(
        on_disk, named,
        "the directory holds exactly what index.json names"
    );

    // An ordinary OCI layout: skopeo reads its manifest.
    if Path::new("/usr/bin/skopeo").exists() {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:latest", cache.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("application/vnd.buildkit.cacheconfig.v0"));
    }

    fresh_root(&mut s, "root2");
    let src = format!("type=local,src={}", cache.display());
    let second = s.build(&ctx, &["--import-cache", &src]).ok();
    assert!(
        ran_steps(&second).is_empty(),
        "re-ran {:?}",
        ran_steps(&second)
    );
    assert!(
        second
            .cached
            .iter()
            .any(|n| n.contains("RUN cat /other.txt")),
        "cached: {:?}",
        second.cached
    );

    // mode=max brought the intermediate records too: a change to the last COPY's source
    // re-runs only what reads it.
    std::fs::write(ctx.join("other.txt"), "two\n").unwrap();
    let third = s.build(&ctx, &["--import-cache", &src]).ok();
    assert!(third.ran_any("COPY other.txt"), "ran: {:?}", third.ran);
    assert!(!third.ran_any("RUN cat app.txt"), "ran: {:?}", third.ran);
    assert!(!third.ran_any("COPY app.txt"), "ran: {:?}", third.ran);
}

#[test]
fn a_local_cache_keeps_three_versions_and_removes_the_rest() {
    let mut s = setup();
    let ctx = context(&s);
    let cache = s.dir.path().join("cache");
    let dest = format!("type=local,dest={},mode=max", cache.display());
    let mut kept = Vec::new();
    for (i, content) in ["one\n", "two\n", "three\n", "four\n"].iter().enumerate() {
        std::fs::write(ctx.join("other.txt"), content).unwrap();
        let b = s.build(&ctx, &["--export-cache", &dest]).ok();
        assert!(
            !export_line(&b).contains(" 0 blobs written"),
            "{:?}",
            b.logs
        );
        let (on_disk, named) = blobs(&cache);
        assert_eq!(on_disk, named, "export {i}: exactly what index.json names");
        kept.push((versions(&cache)[0].clone(), on_disk.len()));
    }
    let now = versions(&cache);
    assert_eq!(now.len(), 3, "{now:?}");
    assert_eq!(now, [&kept[3].0, &kept[2].0, &kept[1].0].map(String::clone));
    assert!(
        kept[3].1 <= kept[2].1 + 2,
        "the directory stopped growing: {kept:?}"
    );

    // The same build exported again writes nothing.
    let b = s.build(&ctx, &["--export-cache", &dest]).ok();
    assert!(export_line(&b).contains(" 0 blobs written"), "{:?}", b.logs);

    // An older version by digest=: the build of that time is all cached.
    fresh_root(&mut s, "root2");
    std::fs::write(ctx.join("other.txt"), "two\n").unwrap();
    let src = format!("type=local,src={},digest={}", cache.display(), kept[1].0);
    let b = s.build(&ctx, &["--import-cache", &src]).ok();
    assert!(ran_steps(&b).is_empty(), "re-ran {:?}", ran_steps(&b));
}

#[test]
fn a_registry_cache_fills_an_empty_root() {
    let mut s = setup();
    let ctx = context(&s);
    let host = s.image.split('/').next().unwrap().to_string();
    let reference = format!("{host}/app-cache:latest");
    let dest = format!("type=registry,ref={reference},mode=max,compression=zstd");
    s.build(&ctx, &["--cache-to", &dest]).ok();

    fresh_root(&mut s, "root2");
    let second = s
        .build(
            &ctx,
            &["--cache-from", &format!("type=registry,ref={reference}")],
        )
        .ok();
    assert!(
        ran_steps(&second).is_empty(),
        "re-ran {:?}",
        ran_steps(&second)
    );
    assert!(
        second
            .cached
            .iter()
            .any(|n| n.contains("RUN cat /other.txt")),
        "cached: {:?}",
        second.cached
    );
}

#[test]
fn a_missing_import_only_warns_and_a_failed_export_fails_unless_ignored() {
    let s = setup();
    let ctx = context(&s);
    // Warnings show in plain progress (rawjson carries only the solve's vertexes).
    let plain = |extra: &[&str]| {
        let mut args = vec!["build", ctx.to_str().unwrap(), "--progress=plain"];
        args.extend_from_slice(extra);
        s.buildwit(&args)
    };
    let missing = s.dir.path().join("no-such-cache");
    let out = plain(&[
        "--import-cache",
        &format!("type=local,src={}", missing.display()),
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("WARNING: importing cache: local cache") && err.contains("no-such-cache"),
        "{err}"
    );

    // A destination under a regular file cannot be written.
    let file = s.dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let dest = format!("type=local,dest={}", file.join("cache").display());
    let out = plain(&["--export-cache", &dest]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("exporting cache: local cache"), "{err}");

    let out = plain(&["--export-cache", &format!("{dest},ignore-error=true")]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("WARNING: exporting cache: local cache"),
        "{err}"
    );

    let out = plain(&["--export-cache", "type=local,dest=/tmp/x,mode=all"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("mode=\"all\""), "{err}");
}

#[test]
fn mode_min_exports_the_steps_of_the_result_only() {
    let mut s = setup();
    let ctx = context(&s);
    let cache = s.dir.path().join("cache");
    let dest = format!("type=local,dest={}", cache.display());
    s.build(&ctx, &["--export-cache", &dest]).ok();
    let (on_disk, named) = blobs(&cache);
    assert_eq!(on_disk, named);
    let manifest = json(&blob(&cache, &versions(&cache)[0]));
    let config = json(&blob(
        &cache,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(config["keyFormat"], "buildwit.v1");
    let described: Vec<&str> = config["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["description"].as_str().unwrap())
        .collect();
    // The final stage's steps, whose layers the result is made of; not the build stage's.
    for step in ["RUN cat /other.txt", "COPY other.txt", "COPY --from=build"] {
        assert!(
            described.iter().any(|d| d.contains(step)),
            "{step}: {described:?}"
        );
    }
    assert!(
        !described.iter().any(|d| d.contains("RUN cat app.txt")),
        "{described:?}"
    );

    // Enough to build the same thing without running anything ...
    fresh_root(&mut s, "root2");
    let src = format!("type=local,src={}", cache.display());
    let second = s.build(&ctx, &["--import-cache", &src]).ok();
    assert!(
        ran_steps(&second).is_empty(),
        "re-ran {:?}",
        ran_steps(&second)
    );
    // ... and, after an edit to a late step's input, to skip the build stage.
    fresh_root(&mut s, "root3");
    std::fs::write(ctx.join("other.txt"), "two\n").unwrap();
    let third = s.build(&ctx, &["--import-cache", &src]).ok();
    assert!(third.ran_any("COPY other.txt"), "ran: {:?}", third.ran);
    assert!(!third.ran_any("RUN cat app.txt"), "ran: {:?}", third.ran);
}

#[test]
fn a_registry_cache_in_older_layouts_and_a_second_export_uploads_nothing() {
    let mut s = setup();
    let ctx = context(&s);
    let host = s.image.split('/').next().unwrap().to_string();
    for (tag, options) in [
        ("index", "image-manifest=false"),
        ("docker", "oci-mediatypes=false"),
    ] {
        let reference = format!("{host}/app-cache-{tag}:c");
        let dest = format!("type=registry,ref={reference},mode=max,{options}");
        let first = s.build(&ctx, &["--cache-to", &dest]).ok();
        assert!(!export_line(&first).contains(" 0 blobs written"));
        let again = s.build(&ctx, &["--cache-to", &dest]).ok();
        assert!(
            export_line(&again).contains(" 0 blobs written (")
                && !export_line(&again).contains(" 0 already there"),
            "{:?}",
            again.logs
        );

        // skopeo sees the index (or Docker manifest list) the cache is.
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo: {}", text(&out.stderr));
        let raw = text(&out.stdout);
        let want = if tag == "docker" {
            "application/vnd.docker.distribution.manifest.list.v2+json"
        } else {
            "application/vnd.oci.image.index.v1+json"
        };
        assert!(raw.contains(want) && raw.contains("cacheconfig"), "{raw}");

        fresh_root(&mut s, &format!("root-{tag}"));
        let src = format!("type=registry,ref={reference}");
        let b = s.build(&ctx, &["--cache-from", &src]).ok();
        assert!(ran_steps(&b).is_empty(), "re-ran {:?}", ran_steps(&b));
    }
}

#[test]
fn an_inline_cache_travels_in_the_image() {
    let mut s = setup();
    let ctx = context(&s);
    let host = s.image.split('/').next().unwrap().to_string();
    let image = format!("{host}/app:inline");
    // Both ways of asking for it: the flag and BuildKit's build argument.
    for (i, how) in [
        ["--cache-to", "type=inline"],
        ["--build-arg", "BUILDKIT_INLINE_CACHE=1"],
    ]
    .iter()
    .enumerate()
    {
        let mut args = vec!["-t", &image, "--push"];
        args.extend_from_slice(how);
        s.build(&ctx, &args).ok();

        let out = Command::new("skopeo")
            .args(["inspect", "--config", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{image}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo: {}", text(&out.stderr));
        let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(config["moby.buildkit.cache.v0"].is_string(), "{config}");

        fresh_root(&mut s, &format!("root-inline-{i}"));
        let b = s.build(&ctx, &["--cache-from", &image]).ok();
        assert!(ran_steps(&b).is_empty(), "re-ran {:?}", ran_steps(&b));
    }

    // An image without one: a warning, and the build goes on.
    let plain = s.buildwit(&[
        "build",
        ctx.to_str().unwrap(),
        "--progress=plain",
        "--cache-from",
        &s.image,
    ]);
    let err = text(&plain.stderr);
    assert!(plain.status.success(), "{err}");
    assert!(err.contains("has no inline cache"), "{err}");
}

#[test]
fn a_multi_platform_build_carries_its_cache_for_every_platform() {
    let mut s = setup();
    let host = s.image.split('/').next().unwrap().to_string();
    // No RUN: a step of another architecture needs no emulator to build. Each platform
    // copies its own file, so their caches hold different steps.
    let ctx = s.context(
        "platforms",
        &[
            (
                "Dockerfile",
                "FROM scratch\nARG TARGETARCH\nCOPY ${TARGETARCH}.txt /a.txt\nCOPY common.txt /c.txt\n",
            ),
            ("amd64.txt", "amd64\n"),
            ("arm64.txt", "arm64\n"),
            ("common.txt", "both\n"),
        ],
    );
    let both = ["--platform", "linux/amd64,linux/arm64"];
    let steps = |b: &Build, arch: &str| {
        let mut steps: Vec<String> = b
            .cached
            .iter()
            .chain(&b.ran)
            .filter(|n| n.contains(arch) && (n.contains("COPY") || n.contains("RUN")))
            .cloned()
            .collect();
        steps.sort();
        steps.dedup();
        steps
    };

    // An image pushed with its inline cache: each platform's image holds its own.
    let image = format!("{host}/app:multi");
    let first = s
        .build(
            &ctx,
            &[
                &both[..],
                &["-t", &image, "--push", "--cache-to", "type=inline"],
            ]
            .concat(),
        )
        .ok();
    assert!(first.ran_any("COPY amd64.txt") && first.ran_any("COPY arm64.txt"));
    for arch in ["amd64", "arm64"] {
        let config = support::skopeo(&[
            "--override-arch",
            arch,
            "inspect",
            "--config",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{image}"),
        ]);
        assert!(config["moby.buildkit.cache.v0"].is_string(), "{config}");
    }
    // An empty root finds every platform's steps in it, or one platform's.
    for (i, platforms) in ["linux/amd64,linux/arm64", "linux/arm64"]
        .iter()
        .enumerate()
    {
        fresh_root(&mut s, &format!("root-inline-{i}"));
        let b = s
            .build(&ctx, &["--platform", platforms, "--cache-from", &image])
            .ok();
        assert!(ran_steps(&b).is_empty(), "{platforms} re-ran {:?}", b.ran);
        assert!(!steps(&b, "arm64").is_empty(), "{:?}", b.cached);
    }

    // A local cache of both platforms, exported once, fills an empty root the same way.
    let cache = s.dir.path().join("multi-cache");
    let dest = format!("type=local,dest={},mode=max", cache.display());
    s.build(&ctx, &[&both[..], &["--cache-to", &dest]].concat())
        .ok();
    let index = json(&cache.join("index.json"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
    let src = format!("type=local,src={}", cache.display());
    for (i, platforms) in ["linux/amd64,linux/arm64", "linux/arm64"]
        .iter()
        .enumerate()
    {
        fresh_root(&mut s, &format!("root-local-{i}"));
        let b = s
            .build(&ctx, &["--platform", platforms, "--cache-from", &src])
            .ok();
        assert!(ran_steps(&b).is_empty(), "{platforms} re-ran {:?}", b.ran);
    }
}
