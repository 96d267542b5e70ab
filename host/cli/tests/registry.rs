//! `buildwit build` resolving base images from a real registry (Debian's docker-registry
//! on 127.0.0.1) through the `[registry."host"]` settings of the config.

use std::path::Path;
use std::process::{Command, Output, Stdio};

#[path = "../../registry/tests/common/mod.rs"]
mod common;

fn buildwit(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_buildwit"))
        .args(args)
        .env("BUILDWIT_ROOT", root)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn from_resolves_through_the_configured_registry() {
    let registry = common::start_registry(None);
    let host = registry.host();
    let reference: oci_client::Reference =
        format!("{host}/library/busybox:latest").parse().unwrap();
    let pushed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(common::push_image(
            &common::pusher(None),
            &reference,
            "amd64",
            common::OCI_CONFIG,
        ));

    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("# syntax=docker/dockerfile:1\nFROM {host}/library/busybox\nRUN echo hi > /hi\n"),
    )
    .unwrap();
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, "").unwrap();
    let http = dir.path().join("http.toml");
    std::fs::write(&http, format!("[registry.\"{host}\"]\nhttp = true\n")).unwrap();
    let root = dir.path().join("root");

    // A plain-HTTP registry needs `http = true`; the error says so and names the image.
    let out = buildwit(
        &root,
        &[
            "--config",
            plain.to_str().unwrap(),
            "build",
            context.to_str().unwrap(),
            "--dump-llb",
        ],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("[registry.\"{host}\"] http = true")),
        "{stderr}"
    );
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");

    let out = buildwit(
        &root,
        &[
            "--config",
            http.to_str().unwrap(),
            "build",
            context.to_str().unwrap(),
            "--dump-llb",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pinned = format!(
        "docker-image://{host}/library/busybox:latest@{}",
        pushed.manifest_digest
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&pinned), "{stdout}");
    // The base image's environment reaches the RUN step.
    assert!(stdout.contains("\"env\":[\"PATH=/bin\"]"), "{stdout}");
}
