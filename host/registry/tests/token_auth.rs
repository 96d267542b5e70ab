//! Token auth as Docker Hub does it, against a `docker-registry` with `auth: token`: a 401
//! names a realm, the realm hands out a JWT for the repository scope, the registry checks
//! its signature against a certificate it trusts. The token server here signs with a key of
//! its own; pulls are anonymous (the realm grants `pull` to anyone, `push` only with the
//! password). Its own test binary, because it sets `DOCKER_CONFIG` for the process.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use buildwit_registry::{Registries, RegistryErrorKind};
use common::*;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use rcgen::{CertificateParams, KeyPair, SigningKey};

const SERVICE: &str = "buildwit-test-registry";
const ISSUER: &str = "buildwit-test-issuer";
/// `tester:s3cret`.
const PASSWORD: &str = "Basic dGVzdGVyOnMzY3JldA==";

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A JWT for `scope` (`repository:NAME:ACTIONS`), granting pull, and push when `authorized`.
fn token(key: &KeyPair, cert_der: &[u8], scope: &str, authorized: bool) -> String {
    let mut parts = scope.splitn(3, ':');
    let (kind, name, asked) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let actions: Vec<&str> = asked
        .split(',')
        .filter(|a| *a == "pull" || (*a == "push" && authorized))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "RS256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(cert_der)],
    });
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": if authorized { "tester" } else { "" },
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{scope}"),
        "access": [{"type": kind, "name": name, "actions": actions}],
    });
    let signed = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = key.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64url(&signature))
}

/// Serves `GET /token?scope=…&service=…` on a thread; counts the tokens handed out.
fn start_token_server(key: KeyPair, cert_der: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let issued = Arc::new(AtomicUsize::new(0));
    let count = issued.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut authorized = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    authorized |=
                        name.eq_ignore_ascii_case("authorization") && value.trim() == PASSWORD;
                }
            }
            let target = request_line.split(' ').nth(1).unwrap_or_default();
            let scope = target
                .split_once('?')
                .map(|(_, q)| q)
                .unwrap_or_default()
                .split('&')
                .find_map(|kv| kv.strip_prefix("scope="))
                .unwrap_or_default()
                .replace("%3A", ":")
                .replace("%2C", ",")
                .replace("%2F", "/");
            let body = serde_json::json!({"token": token(&key, &cert_der, &scope, authorized)})
                .to_string();
            count.fetch_add(1, Ordering::SeqCst);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (realm, issued)
}

#[tokio::test]
async fn bearer_tokens_from_the_realm_a_401_names() {
    let docker_config = tempfile::tempdir().unwrap();
    // SAFETY: this binary has this one test, which sets the variable before it starts
    // anything that could read the environment concurrently.
    unsafe { std::env::set_var("DOCKER_CONFIG", docker_config.path()) };
    std::fs::write(docker_config.path().join("config.json"), r#"{"auths":{}}"#).unwrap();

    let key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "buildwit test token issuer");
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("token-ca.pem");
    std::fs::write(&bundle, cert.pem()).unwrap();
    let (realm, issued) = start_token_server(key, cert.der().to_vec());
    let reg = start_registry_with(
        None,
        &format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            bundle.display()
        ),
    );
    let host = reg.host();

    // Pushed with oci-client and the password.
    let client = pusher(None);
    let target = Reference::with_tag(host.clone(), "team/app".into(), "v1".into());
    client
        .auth(
            &target,
            &RegistryAuth::Basic("tester".into(), "s3cret".into()),
            RegistryOperation::Push,
        )
        .await
        .unwrap();
    let pushed = push_image(&client, &target, "amd64", OCI_CONFIG).await;

    let config = plain_http(&[&host]);
    let registries = Registries::new(&config).unwrap();
    let reference = format!("{host}/team/app:v1");
    let before = issued.load(Ordering::SeqCst);
    let got = registries
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(got.digest, pushed.manifest_digest);
    assert_eq!(got.config, pushed.config);
    // The manifest and the config blob: one token for the repository, held for both.
    assert_eq!(issued.load(Ordering::SeqCst) - before, 1);

    let manifest = registries.pull_raw_manifest(&reference).await.unwrap();
    assert_eq!(manifest.manifest_digest, pushed.manifest_digest);
    assert_eq!(
        issued.load(Ordering::SeqCst) - before,
        1,
        "the token is reused"
    );

    // Anonymous push: the realm grants pull only, and the registry refuses.
    let err = registries
        .push_image(
            &format!("{host}/team/app:v2"),
            &[],
            &serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": digest(&pushed.config), "size": pushed.config.len()},
                "layers": [],
            }))
            .unwrap(),
            OCI_MANIFEST,
        )
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::Unauthorized, "{err}");
}
