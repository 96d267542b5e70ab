//! A client's credentials (a BuildKit client's `docker login`, asked through its session):
//! asked only when a registry wants credentials, once per host for one access, and what
//! they unlocked is not served to a view without them. Its own test binary with a single
//! test, because it sets `DOCKER_CONFIG` for the process.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use buildwit_registry::{
    Access, ClientCredentials, CredentialsFuture, Registries, RegistryErrorKind,
};
use common::*;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

/// A client that holds `tester:s3cret` for every host and counts how often it is asked.
#[derive(Default)]
struct Login {
    asked: AtomicUsize,
}

impl ClientCredentials for Login {
    fn credentials<'a>(&'a self, _host: &'a str) -> CredentialsFuture<'a> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Some(("tester".to_string(), "s3cret".to_string())) })
    }
}

#[tokio::test]
async fn client_credentials_are_asked_when_needed_and_kept_to_their_client() {
    let docker_config = tempfile::tempdir().unwrap();
    // SAFETY: this binary has this one test, which sets the variable before it starts
    // anything that could read the environment concurrently.
    unsafe { std::env::set_var("DOCKER_CONFIG", docker_config.path()) };

    // A registry anyone reads, and one that wants a password.
    let public = start_registry(None);
    let private = start_password_registry(docker_config.path());
    let client = pusher(None);
    for (reg, auth) in [
        (&public, RegistryAuth::Anonymous),
        (
            &private,
            RegistryAuth::Basic("tester".into(), "s3cret".into()),
        ),
    ] {
        let target = Reference::with_tag(reg.host(), "app".into(), "v1".into());
        client
            .auth(&target, &auth, RegistryOperation::Push)
            .await
            .unwrap();
        push_image(&client, &target, "amd64", OCI_CONFIG).await;
    }
    let registries = Registries::new(&plain_http(&[&public.host(), &private.host()])).unwrap();
    let resolve = |view: &Registries, host: String| {
        let view = view.clone();
        async move {
            view.resolve_image_config(&format!("{host}/app:v1"), "linux", "amd64", "")
                .await
        }
    };

    // A public image never asks the client.
    let login = Arc::new(Login::default());
    let first = registries.with_access(&Access::client(login.clone()));
    resolve(&first, public.host()).await.unwrap();
    assert_eq!(login.asked.load(Ordering::Relaxed), 0);

    // A private one asks once for the host, and pulls with what it gave.
    resolve(&first, private.host()).await.unwrap();
    let mut blob = Vec::new();
    let pulled = first
        .pull_manifest(&format!("{}/app:v1", private.host()), "linux", "amd64", "")
        .await
        .unwrap();
    assert!(!pulled.manifest.is_empty());
    let manifest: serde_json::Value = serde_json::from_slice(&pulled.manifest).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    first
        .pull_blob(
            &format!("{}/app:v1", private.host()),
            layer,
            None,
            &mut blob,
        )
        .await
        .unwrap();
    assert_eq!(login.asked.load(Ordering::Relaxed), 1);

    // The daemon's own view (no credentials) is refused, though the client's resolve of
    // the same image is cached.
    let err = resolve(&registries, private.host()).await.unwrap_err();
    assert_eq!(err.kind(), RegistryErrorKind::Unauthorized, "{err}");

    // The next build of the client asks again, and is served from the cache.
    let second = registries.with_access(&Access::client(login.clone()));
    resolve(&second, private.host()).await.unwrap();
    assert_eq!(login.asked.load(Ordering::Relaxed), 2);
}
