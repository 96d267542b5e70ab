//! Credentials from `$DOCKER_CONFIG/config.json` against a `docker-registry` with htpasswd auth.
//! Its own test binary with a single test, because it sets `DOCKER_CONFIG` for the process.

mod common;

use buildwit_registry::{Registries, RegistryErrorKind};
use common::*;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

#[tokio::test]
async fn docker_config_credentials_are_used() {
    let docker_config = tempfile::tempdir().unwrap();
    // SAFETY: this binary has this one test, which sets the variable before it starts
    // anything that could read the environment concurrently.
    unsafe { std::env::set_var("DOCKER_CONFIG", docker_config.path()) };

    let auth_dir = tempfile::tempdir().unwrap();
    let reg = start_password_registry(auth_dir.path());
    let host = reg.host();

    let client = pusher(None);
    let target = Reference::with_tag(host.clone(), "private/app".into(), "v1".into());
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
    let reference = format!("{host}/private/app:v1");

    // No config.json entry: anonymous, refused.
    std::fs::write(docker_config.path().join("config.json"), r#"{"auths":{}}"#).unwrap();
    let err = Registries::new(&config)
        .unwrap()
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind(), RegistryErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains(&reference), "{err}");
    assert!(err.to_string().contains("docker login"), "{err}");

    // With `docker login`-style credentials.
    let auth = format!(r#"{{"auths":{{"{host}":{{"username":"tester","password":"s3cret"}}}}}}"#);
    std::fs::write(docker_config.path().join("config.json"), auth).unwrap();
    let got = Registries::new(&config)
        .unwrap()
        .resolve_image_config(&reference, "linux", "amd64", "")
        .await
        .unwrap();
    assert_eq!(got.digest, pushed.manifest_digest);
    assert_eq!(got.config, pushed.config);
}
