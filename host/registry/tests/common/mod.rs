//! Test helpers: a real `docker-registry` process and images pushed with oci-client.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use buildwit_config::RegistryConfig;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A running `docker-registry`; killed on drop.
pub struct RegistryProcess {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RegistryProcess {
    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the registry stores a blob's bytes (its filesystem storage layout).
    pub fn blob_path(&self, digest: &str) -> std::path::PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self._dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a registry storing in a temp dir; with `tls`, serves HTTPS with that cert and key.
pub fn start_registry(tls: Option<(&Path, &Path)>) -> RegistryProcess {
    start_registry_with(tls, "")
}

/// A registry that wants a password (htpasswd): user `tester`, password `s3cret`; the
/// password file goes in `dir`.
pub fn start_password_registry(dir: &Path) -> RegistryProcess {
    let htpasswd = dir.join("htpasswd");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(&htpasswd, format!("tester:{hash}\n")).unwrap();
    start_registry_with(
        None,
        &format!(
            "auth:\n  htpasswd:\n    realm: buildwit-test\n    path: {}\n",
            htpasswd.display()
        ),
    )
}

/// `[registry."host"] http = true` for each host.
pub fn plain_http(hosts: &[&str]) -> BTreeMap<String, RegistryConfig> {
    hosts
        .iter()
        .map(|h| {
            (
                h.to_string(),
                RegistryConfig {
                    http: Some(true),
                    ..Default::default()
                },
            )
        })
        .collect()
}

/// Like [`start_registry`], with extra top-level YAML (e.g. an `auth:` section).
pub fn start_registry_with(tls: Option<(&Path, &Path)>, extra_yaml: &str) -> RegistryProcess {
    assert!(
        Path::new(REGISTRY_BIN).exists(),
        "{REGISTRY_BIN} is missing: apt-get install -y docker-registry"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut yaml = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.path().join("data").display()
    );
    if let Some((cert, key)) = tls {
        yaml.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        ));
    }
    yaml.push_str(extra_yaml);
    let config = dir.path().join("config.yml");
    std::fs::write(&config, yaml).unwrap();
    let log = dir.path().join("registry.log");
    let mut child = Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start docker-registry");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "docker-registry exited early: {status}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    RegistryProcess {
        child,
        port,
        _dir: dir,
    }
}

/// `sha256:<hex>` of some bytes.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A gzip tar with one file.
pub fn layer(name: &str, content: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, name, content).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// A pusher talking plain HTTP, or HTTPS trusting `ca`.
pub fn pusher(ca: Option<&[u8]>) -> Client {
    let config = match ca {
        None => ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        },
        Some(pem) => ClientConfig {
            extra_root_certificates: vec![Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.to_vec(),
            }],
            ..Default::default()
        },
    };
    Client::try_from(config).unwrap()
}

/// What a pushed image is made of.
pub struct Pushed {
    pub manifest_digest: String,
    pub manifest_size: usize,
    pub config: Vec<u8>,
}

/// Pushes a single-layer image under `reference` (tag or digest); `config_type` is the config
/// media type (an OCI image config unless testing artifacts).
pub async fn push_image(
    client: &Client,
    reference: &Reference,
    arch: &str,
    config_type: &str,
) -> Pushed {
    let layer = layer("hello.txt", format!("hello from {arch}\n").as_bytes());
    let layer_digest = digest(&layer);
    let diff_id = {
        let mut d = flate2::read::GzDecoder::new(&layer[..]);
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut tar).unwrap();
        digest(&tar)
    };
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    )
    .into_bytes();
    let config_digest = digest(&config);
    client
        .push_blob(reference, layer.clone(), &layer_digest)
        .await
        .expect("push layer");
    client
        .push_blob(reference, config.clone(), &config_digest)
        .await
        .expect("push config");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": layer.len()}],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = digest(&manifest);
    let manifest_size = manifest.len();
    client
        .push_manifest_raw(
            reference,
            manifest,
            http::HeaderValue::from_static(OCI_MANIFEST),
        )
        .await
        .expect("push manifest");
    Pushed {
        manifest_digest,
        manifest_size,
        config,
    }
}
