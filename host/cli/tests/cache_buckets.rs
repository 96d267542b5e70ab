//! Build caches in object stores, against real servers started here on 127.0.0.1: moto (an
//! S3 server, from PyPI) for `type=s3`, Azurite (Azure Blob Storage's emulator, from npm)
//! for `type=azblob`, and for `type=gha` a test implementation of GitHub Actions' cache
//! service whose blobs are in the same Azurite. `.ci/run` installs moto and Azurite.

use std::path::{Path, PathBuf};

mod support;

use support::buckets::{AZURITE_ACCOUNT, AZURITE_KEY, GhaService, Server, free_port};
use support::{Build, Setup, setup, skopeo, text};

const DOCKERFILE: &str = "FROM BASE AS build\nWORKDIR /src\nCOPY app.txt .\n\
    RUN cat app.txt > out.txt && echo built >> out.txt\n\
    FROM BASE\nCOPY --from=build /src/out.txt /out.txt\nCOPY other.txt /other.txt\n\
    RUN cat /other.txt > /seen\n";

/// One backend under test: its server and the spec of a cache in it.
struct Backend {
    server: Server,
    spec: String,
}

fn s3(s: &Setup) -> Backend {
    let server = Server::moto(s.dir.path(), "ci-cache");
    let spec = format!(
        "type=s3,bucket=ci-cache,region=us-east-1,endpoint_url=http://127.0.0.1:{},use_path_style=true,access_key_id=test,secret_access_key=test,prefix=team/,name=app;app-latest",
        server.port
    );
    Backend { server, spec }
}

fn azblob(s: &Setup) -> Backend {
    let server = Server::azurite(s.dir.path());
    let spec = format!(
        "type=azblob,account_url=http://127.0.0.1:{}/{AZURITE_ACCOUNT},account_name={AZURITE_ACCOUNT},secret_access_key={AZURITE_KEY},container=ci-cache,prefix=team,name=app;app-latest",
        server.port
    );
    Backend { server, spec }
}

fn context(s: &Setup) -> PathBuf {
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

/// A build with `extra` options that also writes its image to `<name>.tar`, dated so that
/// the same build gives the same image; the image's manifest digest.
fn build_image(s: &Setup, ctx: &Path, name: &str, extra: &[&str]) -> (Build, String) {
    let tar = s.dir.path().join(format!("{name}.tar"));
    let output = format!("type=oci,dest={}", tar.display());
    let mut args = vec!["--build-arg", "SOURCE_DATE_EPOCH=1700000000", "-o", &output];
    args.extend_from_slice(extra);
    let b = s.build(ctx, &args).ok();
    let inspected = skopeo(&["inspect", &format!("oci-archive:{}", tar.display())]);
    (b, inspected["Digest"].as_str().unwrap().to_string())
}

/// Export with `mode=max` from one root, import into an empty one: every step cached, the
/// same image; a second export uploads nothing; `mode=min` brings the result's steps only.
fn fills_an_empty_root(backend: Backend, mut s: Setup) {
    let ctx = context(&s);
    let to = format!("{},mode=max", backend.spec);
    let (first, image) = build_image(&s, &ctx, "first", &["--export-cache", &to]);
    assert!(first.ran_any("RUN cat app.txt"), "ran: {:?}", first.ran);
    let uploads = backend.server.blob_uploads();
    assert!(uploads > 0, "no blob was uploaded");

    // The same cache again: every blob is there, none is uploaded.
    let (again, _) = build_image(&s, &ctx, "again", &["--export-cache", &to]);
    let line = export_line(&again);
    assert!(line.contains(" 0 blobs written"), "{line}");
    let max_records = records(line);
    assert_eq!(
        backend.server.blob_uploads(),
        uploads,
        "a second export uploaded blobs"
    );

    // An empty root imports it (from the second name): nothing runs, the image is the same.
    s.root = s.dir.path().join("root2");
    let from = backend
        .spec
        .replace("name=app;app-latest", "name=app-latest");
    let (second, same) = build_image(&s, &ctx, "second", &["--import-cache", &from]);
    assert!(
        ran_steps(&second).is_empty(),
        "re-ran {:?}",
        ran_steps(&second)
    );
    assert_eq!(
        same, image,
        "the image built from the imported cache differs"
    );

    // mode=max brought the steps of the first stage: an edit to the last COPY's source
    // re-runs only what reads it.
    std::fs::write(ctx.join("other.txt"), "two\n").unwrap();
    let (third, _) = build_image(&s, &ctx, "third", &["--import-cache", &from]);
    assert!(third.ran_any("COPY other.txt"), "ran: {:?}", third.ran);
    assert!(!third.ran_any("RUN cat app.txt"), "ran: {:?}", third.ran);
    std::fs::write(ctx.join("other.txt"), "one\n").unwrap();

    // mode=min under another name: fewer records, enough to build the same without
    // running anything.
    let min = backend.spec.replace("name=app;app-latest", "name=min");
    let (exported, _) = build_image(&s, &ctx, "min", &["--export-cache", &min]);
    let min_records = records(export_line(&exported));
    assert!(
        min_records < max_records,
        "min {min_records}, max {max_records}"
    );
    s.root = s.dir.path().join("root3");
    let (fourth, _) = build_image(&s, &ctx, "fourth", &["--import-cache", &min]);
    assert!(
        ran_steps(&fourth).is_empty(),
        "re-ran {:?}",
        ran_steps(&fourth)
    );
}

/// The progress line of a cache export.
fn export_line(b: &Build) -> &String {
    b.logs
        .iter()
        .find(|l| l.contains("blobs written"))
        .unwrap_or_else(|| panic!("no export line in {:?}", b.logs))
}

/// The records an export line counts.
fn records(line: &str) -> usize {
    line.split(" records")
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no record count in {line:?}"))
}

#[test]
fn an_s3_cache_fills_an_empty_root() {
    let s = setup();
    let backend = s3(&s);
    fills_an_empty_root(backend, s);
}

#[test]
fn an_azblob_cache_fills_an_empty_root() {
    let s = setup();
    let backend = azblob(&s);
    fills_an_empty_root(backend, s);
}

/// `buildwit build` of `ctx` with plain progress (where warnings show), and what it said.
fn plain(s: &Setup, ctx: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["build", ctx.to_str().unwrap(), "--progress=plain"];
    args.extend_from_slice(extra);
    let out = s.buildwit(&args);
    (out.status.success(), text(&out.stderr))
}

#[test]
fn bad_buckets_and_credentials_warn_on_import_and_fail_an_export_unless_ignored() {
    let s = setup();
    let s3 = s3(&s);
    let az = azblob(&s);
    let ctx = context(&s);

    // No such bucket: the import warns and the build goes on; the export fails, naming the
    // cache and what the service said, unless ignore-error=true.
    let missing = s3.spec.replace("bucket=ci-cache", "bucket=missing");
    let (ok, err) = plain(&s, &ctx, &["--import-cache", &missing]);
    assert!(
        ok && err.contains("WARNING: importing cache: s3 cache missing"),
        "{err}"
    );
    let (ok, err) = plain(&s, &ctx, &["--export-cache", &missing]);
    assert!(
        !ok && err.contains("s3 cache missing") && err.contains("NoSuchBucket"),
        "{err}"
    );
    let ignored = format!("{missing},ignore-error=true");
    let (ok, err) = plain(&s, &ctx, &["--export-cache", &ignored]);
    assert!(
        ok && err.contains("WARNING: exporting cache: s3 cache missing"),
        "{err}"
    );

    // Credentials S3 does not know: the import warns, the export fails, both say so.
    let refusing = Server::moto_refusing(s.dir.path());
    let unknown = s3.spec.replace(
        &format!("127.0.0.1:{}", s3.server.port),
        &format!("127.0.0.1:{}", refusing.port),
    );
    let (ok, err) = plain(&s, &ctx, &["--import-cache", &unknown]);
    assert!(
        ok && err.contains("WARNING: importing cache: s3 cache ci-cache"),
        "{err}"
    );
    assert!(
        err.contains("InvalidAccessKeyId") && err.contains("access denied"),
        "{err}"
    );
    let (ok, err) = plain(&s, &ctx, &["--export-cache", &unknown]);
    assert!(
        !ok && err.contains("s3 cache ci-cache") && err.contains("access denied"),
        "{err}"
    );

    // A wrong account key: Azurite refuses it, and the message says so.
    let wrong = az
        .spec
        .replace(AZURITE_KEY, "d3Jvbmcga2V5IGZvciB0aGUgdGVzdA==");
    let (ok, err) = plain(&s, &ctx, &["--import-cache", &wrong]);
    assert!(
        ok && err.contains("WARNING: importing cache: azblob cache ci-cache"),
        "{err}"
    );
    assert!(err.contains("access denied"), "{err}");
    let (ok, err) = plain(&s, &ctx, &["--export-cache", &wrong]);
    assert!(!ok && err.contains("azblob cache ci-cache"), "{err}");
    assert!(err.contains("AuthorizationFailure"), "{err}");

    // An endpoint nobody listens on: a clear error after a few quick retries.
    let unreachable = s3.spec.replace(
        &format!("127.0.0.1:{}", s3.server.port),
        &format!("127.0.0.1:{}", free_port()),
    );
    let (ok, err) = plain(&s, &ctx, &["--export-cache", &unreachable]);
    assert!(!ok && err.contains("error sending request"), "{err}");

    // A cache another tool wrote there (BuildKit's own keys): one warning, built uncached.
    let (status, body) = s3.server.http(
        "PUT",
        "/ci-cache/team/manifests/buildkit",
        br#"{"layers":[],"records":[]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let foreign = s3.spec.replace("name=app;app-latest", "name=buildkit");
    let (ok, err) = plain(&s, &ctx, &["--import-cache", &foreign]);
    assert!(
        ok && err.contains("only caches exported by buildwit can be imported"),
        "{err}"
    );
}

#[test]
fn a_gha_cache_fills_an_empty_root() {
    gha_fills_an_empty_root("url_v2");
}

#[test]
fn a_gha_cache_of_the_legacy_service_fills_an_empty_root() {
    gha_fills_an_empty_root("version=1,url");
}

/// The cache service at `<url_option>=`: export with mode=max, again (nothing new), import
/// into an empty root, mode=min, another scope, a token the service refuses.
fn gha_fills_an_empty_root(url_option: &str) {
    let mut s = setup();
    let azurite = Server::azurite(s.dir.path());
    let service = GhaService::start(&azurite);
    let ctx = context(&s);
    let spec = format!(
        "type=gha,{url_option}={},token={},scope=app",
        service.url, service.token
    );
    let to = format!("{spec},mode=max");
    let (first, image) = build_image(&s, &ctx, "first", &["--export-cache", &to]);
    assert!(first.ran_any("RUN cat app.txt"), "ran: {:?}", first.ran);
    let created = service.blob_creates();
    assert!(created > 0, "no blob entry was created");

    // Again: every blob is there, none is created; a new index entry is.
    let (again, _) = build_image(&s, &ctx, "again", &["--export-cache", &to]);
    let line = export_line(&again);
    assert!(line.contains(" 0 blobs written"), "{line}");
    assert_eq!(service.blob_creates(), created);

    s.root = s.dir.path().join("root2");
    let (second, same) = build_image(&s, &ctx, "second", &["--import-cache", &spec]);
    assert!(
        ran_steps(&second).is_empty(),
        "re-ran {:?}",
        ran_steps(&second)
    );
    assert_eq!(
        same, image,
        "the image built from the imported cache differs"
    );

    // mode=min in its own scope: fewer records, enough to build without running anything.
    let min = spec.replace("scope=app", "scope=min");
    let (exported, _) = build_image(&s, &ctx, "min", &["--export-cache", &min]);
    assert!(records(export_line(&exported)) < records(line));
    s.root = s.dir.path().join("root3");
    let (third, _) = build_image(&s, &ctx, "third", &["--import-cache", &min]);
    assert!(
        ran_steps(&third).is_empty(),
        "re-ran {:?}",
        ran_steps(&third)
    );

    // Another scope has no cache: a warning, and the build runs.
    let other = spec.replace("scope=app", "scope=other");
    let (ok, err) = plain(&s, &ctx, &["--import-cache", &other]);
    assert!(
        ok && err.contains("WARNING: importing cache: gha cache other"),
        "{err}"
    );

    // A token the service refuses: the import warns, the export fails, both say why.
    let claims = service.token.split('.').nth(1).unwrap();
    let forged = spec.replace(&service.token, &format!("e30.{claims}.forged"));
    let (ok, err) = plain(&s, &ctx, &["--import-cache", &forged]);
    assert!(ok && err.contains("401"), "{err}");
    let (ok, err) = plain(&s, &ctx, &["--export-cache", &forged]);
    assert!(
        !ok && err.contains("gha cache app") && err.contains("401"),
        "{err}"
    );
}
