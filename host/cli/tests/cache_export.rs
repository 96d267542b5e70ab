//! Build cache export and import (`--export-cache` / `--import-cache`) on real parts: a
//! build exports its cache, a daemon with an empty root imports it and finds every step
//! cached.

use std::path::Path;
use std::process::Command;

mod support;

use support::{Build, Setup, setup, text};

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

/// The blobs of a local cache directory, and those its manifest (via index.json) names.
fn blobs(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    on_disk.sort();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = |d: &str| dir.join("blobs/sha256").join(&d["sha256:".len()..]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.buildkit.cacheconfig.v0"
    );
    let mut named = vec![
        manifest_digest,
        manifest["config"]["digest"].as_str().unwrap().to_string(),
    ];
    for l in manifest["layers"].as_array().unwrap() {
        named.push(l["digest"].as_str().unwrap().to_string());
    }
    named.sort();
    (on_disk, named)
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
fn exporting_again_to_a_local_cache_removes_what_it_no_longer_names() {
    let s = setup();
    let ctx = context(&s);
    let cache = s.dir.path().join("cache");
    let dest = format!("type=local,dest={},mode=max", cache.display());
    s.build(&ctx, &["--export-cache", &dest]).ok();
    let (before, _) = blobs(&cache);

    std::fs::write(ctx.join("other.txt"), "two\n").unwrap();
    s.build(&ctx, &["--export-cache", &dest]).ok();
    let (after, named) = blobs(&cache);
    assert_eq!(after, named, "unreferenced blobs were removed");
    assert_eq!(after.len(), before.len(), "the directory did not grow");
    assert_ne!(after, before, "the changed steps have new blobs");

    // The same build exported again changes nothing.
    s.build(&ctx, &["--export-cache", &dest]).ok();
    assert_eq!(blobs(&cache).0, after);
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
fn mode_min_exports_only_the_result_record() {
    let mut s = setup();
    let ctx = context(&s);
    let cache = s.dir.path().join("cache");
    let dest = format!("type=local,dest={}", cache.display());
    s.build(&ctx, &["--export-cache", &dest]).ok();
    let (on_disk, named) = blobs(&cache);
    assert_eq!(on_disk, named);
    // The config is the blob with the cache config media type.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| cache.join("blobs/sha256").join(&d["sha256:".len()..]);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(config["keyFormat"], "buildwit.v1");
    let records = config["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{config}");
    assert!(
        records[0]["description"]
            .as_str()
            .unwrap()
            .contains("RUN cat /other.txt"),
        "{config}"
    );

    // The result record alone is enough to build the same thing without running anything.
    fresh_root(&mut s, "root2");
    let src = format!("type=local,src={}", cache.display());
    let second = s.build(&ctx, &["--import-cache", &src]).ok();
    assert!(
        ran_steps(&second).is_empty(),
        "re-ran {:?}",
        ran_steps(&second)
    );
}
