//! Pulling manifests and blobs from a real `docker-registry` on 127.0.0.1.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;

use buildwit_config::RegistryConfig;
use buildwit_registry::{Registries, RegistryErrorKind};
use common::*;
use oci_client::Reference;

/// `[registry."host"] http = true` for each host, and `mirrors` for the first.
fn config(hosts: &[&str], mirrors: &[String]) -> BTreeMap<String, RegistryConfig> {
    let mut out = plain_http(hosts);
    out.get_mut(hosts[0]).unwrap().mirrors = mirrors.to_vec();
    out
}

/// The layer `push_image` pushes for `arch` (gzip output is deterministic).
fn pushed_layer(arch: &str) -> Vec<u8> {
    layer("hello.txt", format!("hello from {arch}\n").as_bytes())
}

#[tokio::test]
async fn manifest_of_the_platform_and_its_blobs() {
    let reg = start_registry(None);
    let host = reg.host();
    let client = pusher(None);
    let amd64 = push_image(
        &client,
        &Reference::with_tag(host.clone(), "lib/app".into(), "amd64".into()),
        "amd64",
        OCI_CONFIG,
    )
    .await;
    let arm64 = push_image(
        &client,
        &Reference::with_tag(host.clone(), "lib/app".into(), "arm64".into()),
        "arm64",
        OCI_CONFIG,
    )
    .await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd64.manifest_digest, "size": amd64.manifest_size,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm64.manifest_digest, "size": arm64.manifest_size,
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    }))
    .unwrap();
    let index_digest = digest(&index);
    client
        .push_manifest_raw(
            &Reference::with_tag(host.clone(), "lib/app".into(), "multi".into()),
            index,
            http::HeaderValue::from_static(OCI_INDEX),
        )
        .await
        .unwrap();

    let regs = Registries::new(&config(&[&host], &[])).unwrap();
    let reference = format!("{host}/lib/app:multi");
    let m = regs
        .pull_manifest(&reference, "linux", "arm64", "")
        .await
        .unwrap();
    assert_eq!(m.reference, reference);
    assert_eq!(m.digest, index_digest);
    assert_eq!(m.manifest_digest, arm64.manifest_digest);
    assert_eq!(digest(&m.manifest), arm64.manifest_digest);
    assert_eq!(m.registry, host);
    let manifest: serde_json::Value = serde_json::from_slice(&m.manifest).unwrap();
    let layer_desc = &manifest["layers"][0];
    let layer_digest = layer_desc["digest"].as_str().unwrap();
    let layer_size = layer_desc["size"].as_u64().unwrap();

    // The layer, streamed and checked.
    let mut out = Vec::new();
    let got = regs
        .pull_blob(&reference, layer_digest, Some(layer_size), &mut out)
        .await
        .unwrap();
    assert_eq!(out, pushed_layer("arm64"));
    assert_eq!(got.size, layer_size);
    assert_eq!(got.registry, host);

    // A single-platform image pins its own manifest; another platform is refused by name.
    let single = format!("{host}/lib/app:amd64");
    let m = regs
        .pull_manifest(&single, "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(m.digest, amd64.manifest_digest);
    assert_eq!(m.manifest_digest, amd64.manifest_digest);
    let err = regs
        .pull_manifest(&reference, "linux", "s390x", "")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RegistryErrorKind::NoPlatform, "{err}");
    assert!(err.to_string().contains("linux/arm64"), "{err}");

    // A size that does not match is an error, not a silent truncation.
    let err = regs
        .pull_blob(
            &reference,
            layer_digest,
            Some(layer_size - 1),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RegistryErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains(layer_digest), "{err}");
    let err = regs
        .pull_blob(
            &reference,
            layer_digest,
            Some(layer_size + 1),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the manifest says"), "{err}");

    // A blob the registry does not have, and a digest that is not one.
    let missing = digest(b"nothing");
    let err = regs
        .pull_blob(&reference, &missing, None, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RegistryErrorKind::NotFound, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&missing) && msg.contains(&reference) && msg.contains(&host),
        "{msg}"
    );
    let err = regs
        .pull_blob(&reference, "sha256:../../etc", None, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RegistryErrorKind::Invalid, "{err}");
}

#[tokio::test]
async fn corrupt_blob_is_a_digest_mismatch() {
    let reg = start_registry(None);
    let host = reg.host();
    let client = pusher(None);
    push_image(
        &client,
        &Reference::with_tag(host.clone(), "lib/bad".into(), "v1".into()),
        "amd64",
        OCI_CONFIG,
    )
    .await;
    let layer = pushed_layer("amd64");
    let layer_digest = digest(&layer);
    // Flip a byte behind the registry's back (same length).
    let path = reg.blob_path(&layer_digest);
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes, layer);
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let regs = Registries::new(&config(&[&host], &[])).unwrap();
    let reference = format!("{host}/lib/bad:v1");
    let err = regs
        .pull_blob(
            &reference,
            &layer_digest,
            Some(layer.len() as u64),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::Invalid, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("digest mismatch"), "{msg}");
    assert!(
        msg.contains(&reference) && msg.contains(&host) && msg.contains(&layer_digest),
        "{msg}"
    );
}

#[tokio::test]
async fn mirror_without_the_image_falls_back_to_the_origin() {
    let origin = start_registry(None);
    let mirror = start_registry(None);
    let client = pusher(None);
    let pushed = push_image(
        &client,
        &Reference::with_tag(origin.host(), "lib/app".into(), "v1".into()),
        "amd64",
        OCI_CONFIG,
    )
    .await;
    let layer = pushed_layer("amd64");
    let layer_digest = digest(&layer);

    let regs =
        Registries::new(&config(&[&origin.host(), &mirror.host()], &[mirror.host()])).unwrap();
    let reference = format!("{}/lib/app:v1", origin.host());
    let m = regs
        .pull_manifest(&reference, "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(m.manifest_digest, pushed.manifest_digest);
    assert_eq!(m.registry, origin.host());
    let mut out = Vec::new();
    let got = regs
        .pull_blob(&reference, &layer_digest, None, &mut out)
        .await
        .unwrap();
    assert_eq!(out, layer);
    assert_eq!(got.registry, origin.host());

    // Once the mirror has the content, it serves it.
    push_image(
        &client,
        &Reference::with_tag(mirror.host(), "lib/app".into(), "v1".into()),
        "amd64",
        OCI_CONFIG,
    )
    .await;
    let got = regs
        .pull_blob(&reference, &layer_digest, None, &mut Vec::new())
        .await
        .unwrap();
    assert!(got.registry.starts_with(&mirror.host()), "{}", got.registry);
    assert!(got.registry.contains("mirror of"), "{}", got.registry);
}
