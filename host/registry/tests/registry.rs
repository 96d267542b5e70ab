//! Resolving images against real registries: Debian's `docker-registry` (distribution 2.8)
//! started on 127.0.0.1 by each test, with content pushed by oci-client.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use buildwit_config::RegistryConfig;
use buildwit_registry::{Registries, RegistryErrorKind};
use common::*;
use oci_client::{Client, Reference};

/// Pushes a linux/amd64 + linux/arm64/v8 image and its index under `host/repo:tag`;
/// returns the index digest and the two images.
async fn push_multiplatform(
    client: &Client,
    host: &str,
    repo: &str,
    tag: &str,
) -> (String, Pushed, Pushed) {
    // Push each image under a scratch tag, then the index under `tag`.
    let amd64 = push_image(
        client,
        &Reference::with_tag(host.into(), repo.into(), "amd64".into()),
        "amd64",
        OCI_CONFIG,
    )
    .await;
    let arm64 = push_image(
        client,
        &Reference::with_tag(host.into(), repo.into(), "arm64".into()),
        "arm64",
        OCI_CONFIG,
    )
    .await;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd64.manifest_digest, "size": amd64.manifest_size,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm64.manifest_digest, "size": arm64.manifest_size,
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    });
    let index = serde_json::to_vec(&index).unwrap();
    let index_digest = digest(&index);
    client
        .push_manifest_raw(
            &Reference::with_tag(host.into(), repo.into(), tag.into()),
            index,
            http::HeaderValue::from_static(OCI_INDEX),
        )
        .await
        .expect("push index");
    (index_digest, amd64, arm64)
}

#[tokio::test]
async fn tag_and_digest_resolve_to_manifest_and_config() {
    let reg = start_registry(None);
    let host = reg.host();
    let client = pusher(None);
    let pushed = push_image(
        &client,
        &Reference::with_tag(host.clone(), "library/busybox".into(), "latest".into()),
        "amd64",
        OCI_CONFIG,
    )
    .await;
    let regs = Registries::new(&plain_http(&[&host])).unwrap();

    // No tag means :latest.
    let got = regs
        .resolve_image_config(&format!("{host}/library/busybox"), "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(got.reference, format!("{host}/library/busybox:latest"));
    assert_eq!(got.digest, pushed.manifest_digest);
    assert_eq!(got.manifest_digest, pushed.manifest_digest);
    assert_eq!(got.config, pushed.config);

    // Pinned by digest.
    let pinned = format!("{host}/library/busybox@{}", pushed.manifest_digest);
    let got = regs
        .resolve_image_config(&pinned, "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(got.reference, pinned);
    assert_eq!(got.digest, pushed.manifest_digest);
    assert_eq!(got.config, pushed.config);

    // A digest the registry does not have.
    let missing = format!("{host}/library/busybox@{}", digest(b"nothing"));
    let err = regs
        .resolve_image_config(&missing, "linux", "amd64", "")
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains(&missing), "{err}");
}

#[tokio::test]
async fn index_picks_the_platform() {
    let reg = start_registry(None);
    let host = reg.host();
    let client = pusher(None);
    let (index_digest, amd64, arm64) =
        push_multiplatform(&client, &host, "library/multi", "1.0").await;
    let regs = Registries::new(&plain_http(&[&host])).unwrap();
    let reference = format!("{host}/library/multi:1.0");

    let got = regs
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(got.digest, index_digest);
    assert_eq!(got.manifest_digest, amd64.manifest_digest);
    assert_eq!(got.config, amd64.config);

    // arm64 matches arm64/v8, and aarch64 is arm64.
    for (arch, variant) in [("arm64", ""), ("arm64", "v8"), ("aarch64", "")] {
        let got = regs
            .resolve_image_config(&reference, "linux", arch, variant)
            .await
            .unwrap();
        assert_eq!(got.digest, index_digest);
        assert_eq!(got.manifest_digest, arm64.manifest_digest);
        assert_eq!(got.config, arm64.config);
    }

    // Pinning the index digest gives the same answer.
    let pinned = format!("{host}/library/multi@{index_digest}");
    let got = regs
        .resolve_image_config(&pinned, "linux", "arm64", "")
        .await
        .unwrap();
    assert_eq!(got.digest, index_digest);
    assert_eq!(got.manifest_digest, arm64.manifest_digest);

    // A platform the index lacks.
    let err = regs
        .resolve_image_config(&reference, "linux", "arm", "v7")
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::NoPlatform, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&reference), "{msg}");
    assert!(msg.contains("no image for linux/arm/v7"), "{msg}");
    assert!(
        msg.contains(&format!(
            "no match for platform in manifest {index_digest}: not found"
        )),
        "{msg}"
    );
    assert!(msg.contains("linux/amd64, linux/arm64"), "{msg}");
}

#[tokio::test]
async fn missing_repository_names_reference_and_registry() {
    let reg = start_registry(None);
    let host = reg.host();
    let regs = Registries::new(&plain_http(&[&host])).unwrap();
    let reference = format!("{host}/library/nothere:latest");
    let err = regs
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::NotFound, "{err}");
    assert_eq!(err.host(), host);
    assert_eq!(err.reference(), reference);
    let msg = err.to_string();
    assert!(msg.contains(&reference) && msg.contains(&host), "{msg}");
    assert!(msg.contains("not found"), "{msg}");
}

#[tokio::test]
async fn unreachable_registry_says_so() {
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let reference = format!("{host}/library/busybox:latest");

    let regs = Registries::new(&BTreeMap::new()).unwrap();
    let err = regs
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::Unreachable, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("cannot reach registry {host} for {reference}")),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("connection refused"), "{msg}");
    assert!(
        msg.contains(&format!("set [registry.\"{host}\"] http = true")),
        "{msg}"
    );

    let regs = Registries::new(&plain_http(&[&host])).unwrap();
    let err = regs
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::Unreachable, "{err}");
    assert!(err.to_string().contains("is it running?"), "{err}");
}

#[tokio::test]
async fn plain_http_registry_needs_http_true() {
    let reg = start_registry(None);
    let host = reg.host();
    let client = pusher(None);
    push_image(
        &client,
        &Reference::with_tag(host.clone(), "library/busybox".into(), "latest".into()),
        "amd64",
        OCI_CONFIG,
    )
    .await;
    let reference = format!("{host}/library/busybox:latest");
    let regs = Registries::new(&BTreeMap::new()).unwrap();
    let err = regs
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::Unreachable, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("set [registry.\"{host}\"] http = true")),
        "{err}"
    );
    let regs = Registries::new(&plain_http(&[&host])).unwrap();
    regs.resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap();
}

#[tokio::test]
async fn mirrors_with_path_prefix_and_fallback_to_origin() {
    let origin = start_registry(None);
    let mirror = start_registry(None);
    let (o, m) = (origin.host(), mirror.host());
    let client = pusher(None);
    // Only the mirror has app/only-mirror (under its path prefix); only the origin has app/only-origin.
    let in_mirror = push_image(
        &client,
        &Reference::with_tag(m.clone(), "proxy/app/only-mirror".into(), "v1".into()),
        "amd64",
        OCI_CONFIG,
    )
    .await;
    let in_origin = push_image(
        &client,
        &Reference::with_tag(o.clone(), "app/only-origin".into(), "v1".into()),
        "amd64",
        OCI_CONFIG,
    )
    .await;

    let dead = format!("127.0.0.1:{}", free_port());
    let mut config = plain_http(&[&o, &m, &dead]);
    config.get_mut(&o).unwrap().mirrors = vec![dead.clone(), format!("{m}/proxy")];
    let regs = Registries::new(&config).unwrap();

    // Dead mirror → mirror with prefix has it.
    let got = regs
        .resolve_image_config(&format!("{o}/app/only-mirror:v1"), "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(got.reference, format!("{o}/app/only-mirror:v1"));
    assert_eq!(got.digest, in_mirror.manifest_digest);
    assert_eq!(got.config, in_mirror.config);

    // Neither mirror has it → origin.
    let got = regs
        .resolve_image_config(&format!("{o}/app/only-origin:v1"), "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(got.digest, in_origin.manifest_digest);
    assert_eq!(got.config, in_origin.config);

    // Nobody has it: the origin's error, with the mirrors tried.
    let err = regs
        .resolve_image_config(&format!("{o}/app/nowhere:v1"), "linux", "amd64", "")
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::NotFound, "{err}");
    assert_eq!(err.host(), o);
    let msg = err.to_string();
    assert!(msg.contains("mirrors tried first"), "{msg}");
    assert!(msg.contains(&format!("{m}/proxy (mirror of {o})")), "{msg}");

    // Docker Hub references go to a mirror with a path, never to the Internet when it has them.
    let mut config = plain_http(&[&m]);
    config.insert(
        "docker.io".into(),
        RegistryConfig {
            mirrors: vec![format!("{m}/hub")],
            ..Default::default()
        },
    );
    let hub = push_image(
        &client,
        &Reference::with_tag(m.clone(), "hub/library/alpine".into(), "3.20".into()),
        "amd64",
        OCI_CONFIG,
    )
    .await;
    let regs = Registries::new(&config).unwrap();
    let got = regs
        .resolve_image_config("alpine:3.20", "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(got.reference, "docker.io/library/alpine:3.20");
    assert_eq!(got.digest, hub.manifest_digest);
}

#[tokio::test]
async fn results_are_cached_for_the_life_of_registries() {
    let reg = start_registry(None);
    let host = reg.host();
    let client = pusher(None);
    let pushed = push_image(
        &client,
        &Reference::with_tag(host.clone(), "library/cached".into(), "latest".into()),
        "amd64",
        OCI_CONFIG,
    )
    .await;
    let regs = Registries::new(&plain_http(&[&host])).unwrap();
    let reference = format!("{host}/library/cached");
    let first = regs
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap();
    drop(reg);
    let again = regs
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(again.digest, pushed.manifest_digest);
    // Another platform is another key: it needs the (now stopped) registry.
    let err = regs
        .resolve_image_config(&reference, "linux", "arm64", "")
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::Unreachable, "{err}");
}

#[tokio::test]
async fn non_image_artifacts_are_refused() {
    let reg = start_registry(None);
    let host = reg.host();
    let client = pusher(None);
    push_image(
        &client,
        &Reference::with_tag(host.clone(), "charts/thing".into(), "1".into()),
        "amd64",
        "application/vnd.example.config.v1+json",
    )
    .await;
    let regs = Registries::new(&plain_http(&[&host])).unwrap();
    let err = regs
        .resolve_image_config(&format!("{host}/charts/thing:1"), "linux", "amd64", "")
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::Invalid, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("is not a container image"), "{msg}");
    assert!(
        msg.contains("application/vnd.example.config.v1+json"),
        "{msg}"
    );
}

#[tokio::test]
async fn corrupt_config_blob_is_a_digest_mismatch() {
    let reg = start_registry(None);
    let host = reg.host();
    let client = pusher(None);
    let pushed = push_image(
        &client,
        &Reference::with_tag(host.clone(), "library/corrupt".into(), "latest".into()),
        "amd64",
        OCI_CONFIG,
    )
    .await;
    // Flip the stored config bytes behind the registry's back (same length).
    let path = reg.blob_path(&digest(&pushed.config));
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes, pushed.config);
    bytes[0] = b' ';
    std::fs::write(&path, bytes).unwrap();

    let regs = Registries::new(&plain_http(&[&host])).unwrap();
    let reference = format!("{host}/library/corrupt:latest");
    let err = regs
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::Invalid, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("digest mismatch"), "{msg}");
    assert!(msg.contains(&reference) && msg.contains(&host), "{msg}");
}

/// A CA and a server certificate for 127.0.0.1 signed by it, written to `dir`.
fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "buildwit test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, server.pem()).unwrap();
    std::fs::write(&key_path, server_key.serialize_pem()).unwrap();
    // A client certificate from the same CA, named as containerd's tlsconfigdir wants.
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "buildwit test client");
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &ca).unwrap();
    std::fs::write(dir.join("client.cert"), client.pem()).unwrap();
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

#[tokio::test]
async fn client_certificates_from_keypair_or_tlsconfigdir() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_tls(certs.path());
    // The registry asks for a client certificate signed by the CA.
    let reg = start_registry_with(
        Some((&cert, &key)),
        &format!("    clientcas:\n      - {}\n", ca.display()),
    );
    let host = reg.host();
    let reference = format!("{host}/library/mtls:latest");
    let with = |rc: RegistryConfig| Registries::new(&BTreeMap::from([(host.clone(), rc)])).unwrap();
    let keypair = RegistryConfig {
        ca: vec![ca.display().to_string()],
        keypair: vec![buildwit_config::KeyPair {
            cert: certs.path().join("client.cert").display().to_string(),
            key: certs.path().join("client.key").display().to_string(),
        }],
        ..Default::default()
    };

    // Push through the keypair client: a config blob and a manifest naming it.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = sha256(config);
    let config_path = certs.path().join("config.json");
    std::fs::write(&config_path, config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [],
    }))
    .unwrap();
    let pushed = with(keypair.clone())
        .push_image(
            &reference,
            &[(config_digest.clone(), config_path)],
            &manifest,
            OCI_MANIFEST,
        )
        .await
        .unwrap();
    assert_eq!(pushed.blobs, 1);

    let got = with(keypair)
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(got.config, config);
    assert_eq!(got.manifest_digest, sha256(&manifest));

    // Without the certificate the registry refuses the connection: a clear error.
    let err = with(RegistryConfig {
        ca: vec![ca.display().to_string()],
        ..Default::default()
    })
    .resolve_image_config(&reference, "linux", "amd64", "")
    .await
    .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::Unreachable, "{err}");
    assert!(err.to_string().contains(&host), "{err}");
    assert!(
        err.to_string().contains(".keypair]] with cert and key"),
        "{err}"
    );

    // containerd's layout: ca.crt, client.cert and client.key in a tlsconfigdir.
    let tlsdir = tempfile::tempdir().unwrap();
    std::fs::copy(&ca, tlsdir.path().join("ca.crt")).unwrap();
    for f in ["client.cert", "client.key"] {
        std::fs::copy(certs.path().join(f), tlsdir.path().join(f)).unwrap();
    }
    let regs = with(RegistryConfig {
        tlsconfigdir: vec![tlsdir.path().display().to_string()],
        ..Default::default()
    });
    let mut blob = Vec::new();
    regs.pull_blob(
        &reference,
        &config_digest,
        Some(config.len() as u64),
        &mut blob,
    )
    .await
    .unwrap();
    assert_eq!(blob, config);
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

#[tokio::test]
async fn tls_registry_with_ca_or_insecure() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_tls(certs.path());
    let reg = start_registry(Some((&cert, &key)));
    let host = reg.host();
    let client = pusher(Some(&std::fs::read(&ca).unwrap()));
    let pushed = push_image(
        &client,
        &Reference::with_tag(host.clone(), "library/secure".into(), "latest".into()),
        "amd64",
        OCI_CONFIG,
    )
    .await;
    let reference = format!("{host}/library/secure:latest");

    // Untrusted certificate: says to add the CA or set insecure.
    let regs = Registries::new(&BTreeMap::new()).unwrap();
    let err = regs
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::Unreachable, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("[registry.\"{host}\"] ca = [")),
        "{msg}"
    );
    assert!(msg.contains("insecure = true"), "{msg}");

    // ca = [...]
    let mut config = BTreeMap::new();
    config.insert(
        host.clone(),
        RegistryConfig {
            ca: vec![ca.display().to_string()],
            ..Default::default()
        },
    );
    let got = Registries::new(&config)
        .unwrap()
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(got.digest, pushed.manifest_digest);

    // tlsconfigdir with a .crt
    let tlsdir = tempfile::tempdir().unwrap();
    std::fs::copy(&ca, tlsdir.path().join("ca.crt")).unwrap();
    let mut config = BTreeMap::new();
    config.insert(
        host.clone(),
        RegistryConfig {
            tlsconfigdir: vec![tlsdir.path().display().to_string()],
            ..Default::default()
        },
    );
    let got = Registries::new(&config)
        .unwrap()
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(got.config, pushed.config);

    // insecure = true
    let mut config = BTreeMap::new();
    config.insert(
        host.clone(),
        RegistryConfig {
            insecure: Some(true),
            ..Default::default()
        },
    );
    let got = Registries::new(&config)
        .unwrap()
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(got.digest, pushed.manifest_digest);
}
