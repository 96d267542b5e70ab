//! OCI distribution for the daemon: resolve an image reference to the digest to pin and the
//! platform's image config, through the `[registry."host"]` settings of buildkitd.toml
//! (mirrors with path prefixes, `http`, `insecure`, `ca`, `tlsconfigdir`) and the credentials
//! of `~/.docker/config.json`.
//!
//! The HTTP and token auth are our own client's (`client.rs`, on reqwest), with
//! `oci-client`'s reference and error types; digest checks, mirror fallback, Docker
//! credentials and platform choice are done here.

#![warn(missing_docs)]

mod access;
mod client;
mod error;
mod platform;
mod pull;
mod push;
mod reference;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use buildwit_config::RegistryConfig;
use client::{HttpClient, Principal};
use oci_client::client::{Certificate, CertificateEncoding};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

pub use access::{Access, ClientCredentials, CredentialsFuture};
pub use error::{RegistryError, RegistryErrorKind};
pub use platform::Platform;
pub use pull::{PlatformManifest, PulledBlob};
pub use push::Pushed;
pub use reference::parse_reference;

/// At most this many requests run at once against one registry host.
pub const MAX_CONNECTIONS_PER_REGISTRY: usize = 4;

/// The name Docker Hub has in references.
const DOCKER_HUB: &str = "docker.io";
const USER_AGENT: &str = concat!("buildwit/", env!("CARGO_PKG_VERSION"));
/// The host Docker Hub's registry API is served from.
const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
/// The server key Docker Hub credentials are stored under in config.json.
const DOCKER_HUB_CREDENTIAL_KEY: &str = "https://index.docker.io/v1/";

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const ACCEPTED_MANIFESTS: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// Largest image config we download.
const MAX_CONFIG_SIZE: i64 = 32 << 20;
/// How many resolved images the cache keeps before it starts over.
const CACHE_LIMIT: usize = 512;

/// The result of resolving an image reference for one platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The normalised reference (`alpine` → `docker.io/library/alpine:latest`).
    pub reference: String,
    /// The digest to pin: the index digest for a multi-platform image, else the manifest digest.
    pub digest: String,
    /// The raw image config JSON of the platform's image, verified against its digest.
    pub config: Vec<u8>,
    /// The digest of the platform's image manifest.
    pub manifest_digest: String,
}

/// TLS and protocol settings of one registry host.
struct HostSettings {
    http: bool,
    insecure: bool,
    ca: Vec<Certificate>,
    /// A client certificate and its key, PEM (`keypair`, or a tlsconfigdir's
    /// `.cert`/`.key`).
    identity: Option<Vec<u8>>,
}

/// The client for one host's settings, made on first use: making one reads the system's
/// CA certificates, milliseconds that a build which never talks to the host should not
/// pay.
struct HostClient {
    host: String,
    settings: HostSettings,
    /// The client, or why it could not be made (told as a configuration error).
    made: OnceLock<Result<HttpClient, String>>,
}

impl HostClient {
    fn new(host: &str, settings: HostSettings) -> Self {
        HostClient {
            host: host.to_string(),
            settings,
            made: OnceLock::new(),
        }
    }

    fn made(&self) -> Result<&HttpClient, OciDistributionError> {
        let made = match self.made.get() {
            Some(made) => made,
            None => {
                let made = build_client(&self.host, &self.settings).map_err(|e| e.to_string());
                // Two builds may have made one at once: either will do.
                self.made.get_or_init(|| made)
            }
        };
        made.as_ref()
            .map_err(|e| OciDistributionError::GenericError(Some(format!("{CLIENT_SETUP}{e}"))))
    }

    async fn auth(
        &self,
        r: &Reference,
        who: &Principal,
        op: RegistryOperation,
    ) -> Result<(), OciDistributionError> {
        self.made()?.auth(r, who, op).await
    }

    async fn pull_manifest_raw(
        &self,
        r: &Reference,
        who: &Principal,
        accepted: &[&str],
    ) -> Result<(bytes::Bytes, String), OciDistributionError> {
        self.made()?.pull_manifest_raw(r, who, accepted).await
    }

    async fn pull_blob<W: tokio::io::AsyncWrite + Unpin + ?Sized>(
        &self,
        r: &Reference,
        who: &Principal,
        digest: &str,
        out: &mut W,
    ) -> Result<(), OciDistributionError> {
        self.made()?.pull_blob(r, who, digest, out).await
    }

    async fn blob_exists(
        &self,
        r: &Reference,
        who: &Principal,
        digest: &str,
    ) -> Result<bool, OciDistributionError> {
        self.made()?.blob_exists(r, who, digest).await
    }

    /// Upload a blob streamed from `path` (`size` bytes): a layer is never held in memory.
    async fn push_blob(
        &self,
        r: &Reference,
        who: &Principal,
        path: &Path,
        size: u64,
        digest: &str,
    ) -> Result<(), OciDistributionError> {
        self.made()?.push_blob(r, who, path, size, digest).await
    }

    async fn push_manifest_raw(
        &self,
        r: &Reference,
        who: &Principal,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), OciDistributionError> {
        self.made()?
            .push_manifest_raw(r, who, body, content_type)
            .await
    }
}

/// A mirror entry: `host[:port][/path]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mirror {
    host: String,
    prefix: String,
}

/// One place to try for a reference: a mirror or the origin.
struct Endpoint<'a> {
    /// `host[:port]` we connect to.
    host: String,
    /// The `[registry."key"]` whose settings apply (named in hints).
    settings_key: String,
    /// Repository path prefix on this host (mirrors only).
    prefix: String,
    /// For a mirror: the registry it mirrors.
    mirror_of: Option<String>,
    /// The server key to look credentials up with.
    credential_key: String,
    client: &'a HostClient,
}

impl Endpoint<'_> {
    /// How the endpoint is named in messages.
    fn label(&self) -> String {
        match &self.mirror_of {
            Some(origin) if self.prefix.is_empty() => format!("{} (mirror of {origin})", self.host),
            Some(origin) => format!("{}/{} (mirror of {origin})", self.host, self.prefix),
            None => self.host.clone(),
        }
    }

    /// The reference as this endpoint serves it.
    fn reference(&self, r: &Reference) -> Reference {
        let repository = if self.prefix.is_empty() {
            r.repository().to_string()
        } else {
            format!("{}/{}", self.prefix, r.repository())
        };
        match (r.tag(), r.digest()) {
            (Some(tag), Some(digest)) => Reference::with_tag_and_digest(
                self.host.clone(),
                repository,
                tag.to_string(),
                digest.to_string(),
            ),
            (None, Some(digest)) => {
                Reference::with_digest(self.host.clone(), repository, digest.to_string())
            }
            (tag, None) => Reference::with_tag(
                self.host.clone(),
                repository,
                tag.unwrap_or("latest").to_string(),
            ),
        }
    }
}

/// Registry access for the daemon: per-host clients, credentials, limits and a resolve
/// cache. A value is a view with one [`Access`]; [`Registries::with_access`] makes another
/// over the same clients, limits and caches.
#[derive(Clone)]
pub struct Registries {
    shared: Arc<Shared>,
    access: Access,
}

/// What every view of [`Registries`] shares.
struct Shared {
    mirrors: BTreeMap<String, Vec<Mirror>>,
    clients: BTreeMap<String, HostClient>,
    default_client: HostClient,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// The daemon's own credentials by host.
    auth: Mutex<HashMap<String, RegistryAuth>>,
    /// Resolved images by (the origin's principal scope, reference, platform).
    cache: Mutex<HashMap<(String, String, Platform), ResolvedImage>>,
}

impl Registries {
    /// Builds the registry clients from the `[registry."host"]` tables of buildkitd.toml.
    pub fn new(config: &BTreeMap<String, RegistryConfig>) -> Result<Self, RegistryError> {
        let mut mirrors = BTreeMap::new();
        let mut settings: BTreeMap<String, HostSettings> = BTreeMap::new();
        let mut plain_mirrors = Vec::new();
        for (host, rc) in config {
            let mut list = Vec::new();
            for m in &rc.mirrors {
                let (mirror, http) = parse_mirror(m).ok_or_else(|| {
                    RegistryError::config(
                        host,
                        format!(
                            "[registry.\"{host}\"] mirrors has an invalid entry {m:?} (expected host[:port][/path])"
                        ),
                    )
                })?;
                if http {
                    plain_mirrors.push(mirror.host.clone());
                }
                list.push(mirror);
            }
            if !list.is_empty() {
                mirrors.insert(host.clone(), list);
            }
            settings.insert(host.clone(), host_settings(host, rc)?);
        }
        // `http://mirror` entries for mirrors without settings of their own.
        for host in plain_mirrors {
            settings.entry(host).or_insert(HostSettings {
                http: true,
                insecure: false,
                ca: Vec::new(),
                identity: None,
            });
        }
        let mut clients = BTreeMap::new();
        for (host, s) in settings {
            clients.insert(host.clone(), HostClient::new(&host, s));
        }
        let default_client = HostClient::new(
            "",
            HostSettings {
                http: false,
                insecure: false,
                ca: Vec::new(),
                identity: None,
            },
        );
        Ok(Registries {
            shared: Arc::new(Shared {
                mirrors,
                clients,
                default_client,
                limits: Mutex::new(HashMap::new()),
                auth: Mutex::new(HashMap::new()),
                cache: Mutex::new(HashMap::new()),
            }),
            access: Access::daemon(),
        })
    }

    /// The same registries with `access`'s credentials (a BuildKit client's, for its build).
    pub fn with_access(&self, access: &Access) -> Registries {
        Registries {
            shared: self.shared.clone(),
            access: access.clone(),
        }
    }

    /// Resolves `reference` (normalised like Docker) for a platform (`os`, `architecture`,
    /// `variant`): returns the normalised reference, the digest to pin, the platform's
    /// manifest digest and its raw config JSON. Mirrors are tried in order, then the origin.
    pub async fn resolve_image_config(
        &self,
        reference: &str,
        os: &str,
        architecture: &str,
        variant: &str,
    ) -> Result<ResolvedImage, RegistryError> {
        let parsed = parse_reference(reference)?;
        let normalized = parsed.whole();
        let platform = Platform::normalize(os, architecture, variant);
        let endpoints = self.endpoints(&parsed);
        let origin = endpoints.last().expect("the origin is always an endpoint");
        if let Some(hit) = self.cached(&normalized, &platform, origin).await {
            return Ok(hit);
        }

        let count = endpoints.len();
        let mut tried: Vec<String> = Vec::new();
        for (i, ep) in endpoints.iter().enumerate() {
            match self.resolve_at(ep, &parsed, &normalized, &platform).await {
                Ok((image, scope)) => {
                    let mut cache = lock(&self.shared.cache);
                    if cache.len() >= CACHE_LIMIT {
                        cache.clear();
                    }
                    cache.insert((scope, normalized, platform), image.clone());
                    return Ok(image);
                }
                Err(e) if e.falls_back() && i + 1 < count => {
                    tracing::debug!("{e}; trying the next endpoint");
                    tried.push(format!("{}: {}", ep.label(), e.kind()));
                }
                Err(e) if tried.is_empty() => return Err(e),
                Err(e) => {
                    return Err(
                        e.with_note(&format!(" (mirrors tried first: {})", tried.join(", ")))
                    );
                }
            }
        }
        unreachable!("the origin is always an endpoint")
    }

    /// Mirrors of the reference's registry in order, then the origin.
    fn endpoints(&self, r: &Reference) -> Vec<Endpoint<'_>> {
        let registry = r.registry();
        let mut out = Vec::new();
        let shared = &*self.shared;
        for m in shared.mirrors.get(registry).into_iter().flatten() {
            out.push(Endpoint {
                host: m.host.clone(),
                settings_key: m.host.clone(),
                prefix: m.prefix.clone(),
                mirror_of: Some(registry.to_string()),
                credential_key: m.host.clone(),
                client: shared
                    .clients
                    .get(&m.host)
                    .unwrap_or(&shared.default_client),
            });
        }
        let (host, credential_key) = if registry == DOCKER_HUB {
            (DOCKER_HUB_HOST, DOCKER_HUB_CREDENTIAL_KEY)
        } else {
            (registry, registry)
        };
        let client = shared
            .clients
            .get(registry)
            .or_else(|| shared.clients.get(host))
            .unwrap_or(&shared.default_client);
        out.push(Endpoint {
            host: host.to_string(),
            settings_key: registry.to_string(),
            prefix: String::new(),
            mirror_of: None,
            credential_key: credential_key.to_string(),
            client,
        });
        out
    }

    /// A resolve made earlier that this view may be given: one made without credentials
    /// (anyone's), or one made with the credentials this view's requests carry to `origin`.
    async fn cached(
        &self,
        normalized: &str,
        platform: &Platform,
        origin: &Endpoint<'_>,
    ) -> Option<ResolvedImage> {
        let get = |scope: String| {
            let key = (scope, normalized.to_string(), platform.clone());
            lock(&self.shared.cache).get(&key).cloned()
        };
        if let Some(hit) = get(String::new()) {
            return Some(hit);
        }
        // The client is asked who it is only for an image that needed credentials before.
        let private = || {
            lock(&self.shared.cache)
                .keys()
                .any(|(s, r, p)| !s.is_empty() && r == normalized && p == platform)
        };
        let own = match self.access.has_client() {
            true if !private() => return None,
            true => match self.access.client_auth(&origin.host).await {
                Some(auth) => auth,
                None => self.daemon_auth(origin).await,
            },
            false => self.daemon_auth(origin).await,
        };
        let scope = Principal::new(own).scope;
        (!scope.is_empty()).then(|| get(scope)).flatten()
    }

    /// Resolves at one endpoint; also the scope of who resolved it.
    async fn resolve_at(
        &self,
        ep: &Endpoint<'_>,
        parsed: &Reference,
        normalized: &str,
        platform: &Platform,
    ) -> Result<(ResolvedImage, String), RegistryError> {
        self.as_needed(ep, |who| async move {
            let m = self
                .manifest_at(ep, parsed, normalized, platform, &who)
                .await?;
            let Parsed::Manifest(config) = classify(&m.manifest, ep, normalized)? else {
                unreachable!("manifest_at returns an image manifest")
            };
            let r = ep.reference(parsed);
            let config = self.fetch_config(ep, &r, &who, &config, normalized).await?;
            Ok(ResolvedImage {
                reference: normalized.to_string(),
                digest: m.digest,
                config,
                manifest_digest: m.manifest_digest,
            })
        })
        .await
    }

    /// Pulls a manifest or index and checks its digest; returns the body and its digest.
    async fn fetch_manifest(
        &self,
        ep: &Endpoint<'_>,
        r: &Reference,
        who: &Principal,
        normalized: &str,
    ) -> Result<(Vec<u8>, String), RegistryError> {
        let _permit = self.permit(&ep.host).await;
        let (body, digest) = ep
            .client
            .pull_manifest_raw(r, who, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| map_error(e, ep, normalized, "manifest"))?;
        let body = body.to_vec();
        let digest = match r.digest() {
            Some(pinned) => pinned.to_string(),
            None => digest,
        };
        verify_digest(&body, &digest).map_err(|actual| {
            mismatch(
                ep,
                normalized,
                &format!("manifest {digest}"),
                &digest,
                &actual,
            )
        })?;
        Ok((body, digest))
    }

    /// Downloads the image config blob and checks its size and digest.
    async fn fetch_config(
        &self,
        ep: &Endpoint<'_>,
        r: &Reference,
        who: &Principal,
        desc: &RawDescriptor,
        normalized: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        if desc.size > MAX_CONFIG_SIZE {
            return Err(RegistryError::new(
                RegistryErrorKind::Invalid,
                normalized,
                &ep.host,
                format!(
                    "{normalized} on registry {}: its image config is {} bytes, more than the {} allowed",
                    ep.label(),
                    desc.size,
                    MAX_CONFIG_SIZE
                ),
            ));
        }
        let what = format!("config blob {}", desc.digest);
        let mut out: Vec<u8> = Vec::with_capacity(desc.size.max(0) as usize);
        {
            let _permit = self.permit(&ep.host).await;
            ep.client
                .pull_blob(r, who, desc.digest.as_str(), &mut out)
                .await
                .map_err(|e| map_error(e, ep, normalized, &what))?;
        }
        verify_digest(&out, &desc.digest)
            .map_err(|actual| mismatch(ep, normalized, &what, &desc.digest, &actual))?;
        if desc.size > 0 && out.len() as i64 != desc.size {
            return Err(RegistryError::new(
                RegistryErrorKind::Invalid,
                normalized,
                &ep.host,
                format!(
                    "registry {} sent {what} for {normalized} with {} bytes, but the manifest says {}",
                    ep.label(),
                    out.len(),
                    desc.size
                ),
            ));
        }
        Ok(out)
    }

    /// A permit of the host's connection limit.
    async fn permit(&self, host: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = lock(&self.shared.limits)
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_CONNECTIONS_PER_REGISTRY)))
            .clone();
        sem.acquire_owned().await.ok()
    }

    /// Who a first request to the endpoint is made as. For a client's access: as the client
    /// once it gave credentials for the host, else anonymously (the client is asked only
    /// when the registry wants credentials, as buildkitd asks). Otherwise: as the daemon.
    async fn first_principal(&self, ep: &Endpoint<'_>) -> Principal {
        let auth = match self.access.has_client() {
            true => self
                .access
                .answered(&ep.host)
                .unwrap_or(RegistryAuth::Anonymous),
            false => self.daemon_auth(ep).await,
        };
        Principal::new(auth)
    }

    /// Who to try after the one of scope `refused` was refused: the client's credentials
    /// for the host, or where it has none the daemon's; `None` if that is who was refused.
    async fn next_principal(&self, ep: &Endpoint<'_>, refused: &str) -> Option<Principal> {
        if !self.access.has_client() {
            return None;
        }
        let auth = match self.access.client_auth(&ep.host).await {
            Some(auth) => auth,
            None => self.daemon_auth(ep).await,
        };
        let next = Principal::new(auth);
        (next.scope != refused).then_some(next)
    }

    /// Run `op` as the first principal, and once more as the next if the registry refused
    /// the first; its result and the scope of who got it.
    async fn as_needed<T, F, Fut>(
        &self,
        ep: &Endpoint<'_>,
        op: F,
    ) -> Result<(T, String), RegistryError>
    where
        F: Fn(Principal) -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let first = self.first_principal(ep).await;
        let scope = first.scope.clone();
        match op(first).await {
            Err(e) if e.kind() == RegistryErrorKind::Unauthorized => {
                match self.next_principal(ep, &scope).await {
                    Some(next) => {
                        let scope = next.scope.clone();
                        op(next).await.map(|v| (v, scope))
                    }
                    None => Err(e),
                }
            }
            result => result.map(|v| (v, scope)),
        }
    }

    /// The daemon's credentials for the endpoint, from its Docker config (helpers run off
    /// the runtime).
    async fn daemon_auth(&self, ep: &Endpoint<'_>) -> RegistryAuth {
        if let Some(auth) = lock(&self.shared.auth).get(&ep.host) {
            return auth.clone();
        }
        let server = ep.credential_key.clone();
        let found =
            tokio::task::spawn_blocking(move || docker_credential::get_credential(&server)).await;
        use docker_credential::{CredentialRetrievalError as E, DockerCredential as C};
        let auth = match found {
            Ok(Ok(C::UsernamePassword(user, pass))) => RegistryAuth::Basic(user, pass),
            Ok(Ok(C::IdentityToken(_))) => {
                tracing::warn!(
                    "the Docker config has an identity token for {}; identity tokens are not supported yet, pulling anonymously",
                    ep.credential_key
                );
                RegistryAuth::Anonymous
            }
            Ok(Err(E::NoCredentialConfigured | E::ConfigNotFound | E::ConfigReadError)) => {
                RegistryAuth::Anonymous
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    "cannot get credentials for {} from the Docker config: {e}; pulling anonymously",
                    ep.credential_key
                );
                RegistryAuth::Anonymous
            }
            Err(e) => {
                tracing::warn!("credential lookup for {} failed: {e}", ep.credential_key);
                RegistryAuth::Anonymous
            }
        };
        lock(&self.shared.auth).insert(ep.host.clone(), auth.clone());
        auth
    }
}

/// Locks a mutex, ignoring poisoning (the guarded maps stay consistent).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Parses `[scheme://]host[:port][/path]`; the bool says the entry asked for plain HTTP.
fn parse_mirror(entry: &str) -> Option<(Mirror, bool)> {
    let entry = entry.trim();
    let (rest, http) = if let Some(r) = entry.strip_prefix("http://") {
        (r, true)
    } else if let Some(r) = entry.strip_prefix("https://") {
        (r, false)
    } else {
        (entry, false)
    };
    let rest = rest.trim_matches('/');
    let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((
        Mirror {
            host: host.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        },
        http,
    ))
}

/// Reads the TLS settings of `[registry."host"]` (CA files are read now).
fn host_settings(host: &str, rc: &RegistryConfig) -> Result<HostSettings, RegistryError> {
    let mut ca = Vec::new();
    for path in &rc.ca {
        ca.extend(read_certificates(host, Path::new(path))?);
    }
    let mut pairs: Vec<(PathBuf, PathBuf)> = rc
        .keypair
        .iter()
        .map(|k| (PathBuf::from(&k.cert), PathBuf::from(&k.key)))
        .collect();
    for dir in &rc.tlsconfigdir {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!("[registry.\"{host}\"] tlsconfigdir {dir}: {e}");
                continue;
            }
        };
        let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for file in files {
            match file.extension().and_then(|e| e.to_str()) {
                Some("crt") => ca.extend(read_certificates(host, &file)?),
                // containerd's convention: NAME.cert goes with NAME.key.
                Some("cert") => pairs.push((file.clone(), file.with_extension("key"))),
                _ => {}
            }
        }
    }
    if pairs.len() > 1 {
        tracing::warn!(
            "[registry.\"{host}\"]: {} client certificates given; using the first, {}",
            pairs.len(),
            pairs[0].0.display()
        );
    }
    let identity = match pairs.first() {
        Some((cert, key)) => Some(read_identity(host, cert, key)?),
        None => None,
    };
    Ok(HostSettings {
        http: rc.http.unwrap_or(false),
        insecure: rc.insecure.unwrap_or(false),
        ca,
        identity,
    })
}

/// A client certificate and its key, as one PEM for the TLS client.
fn read_identity(host: &str, cert: &Path, key: &Path) -> Result<Vec<u8>, RegistryError> {
    let read = |what: &str, path: &Path| {
        std::fs::read(path).map_err(|e| {
            RegistryError::config(
                host,
                format!(
                    "cannot read the client {what} {} of [registry.\"{host}\"] keypair: {e}",
                    path.display()
                ),
            )
        })
    };
    let mut pem = read("certificate", cert)?;
    pem.push(b'\n');
    pem.extend(read("key", key)?);
    // Checked now, so a bad pair stops the engine from starting rather than a pull.
    reqwest::Identity::from_pem(&pem).map_err(|e| {
        RegistryError::config(
            host,
            format!(
                "the keypair {} + {} of [registry.\"{host}\"] is not a PEM certificate and key: {e}",
                cert.display(),
                key.display()
            ),
        )
    })?;
    Ok(pem)
}

/// Reads one CA file: PEM (one or more certificates) or DER.
fn read_certificates(host: &str, path: &Path) -> Result<Vec<Certificate>, RegistryError> {
    let data = std::fs::read(path).map_err(|e| {
        RegistryError::config(
            host,
            format!(
                "cannot read CA certificate {} of [registry.\"{host}\"]: {e}",
                path.display()
            ),
        )
    })?;
    let text = String::from_utf8_lossy(&data);
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    if !text.contains("-----BEGIN") {
        return Ok(vec![Certificate {
            encoding: CertificateEncoding::Der,
            data,
        }]);
    }
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data: format!("{}\n", &rest[start..end]).into_bytes(),
        });
        rest = &rest[end..];
    }
    if out.is_empty() {
        return Err(RegistryError::config(
            host,
            format!(
                "CA file {} of [registry.\"{host}\"] holds no PEM certificate",
                path.display()
            ),
        ));
    }
    // Checked now, as the keypair is: the clients are only made when first used.
    for c in &out {
        reqwest::Certificate::from_pem_bundle(&c.data).map_err(|e| {
            RegistryError::config(
                host,
                format!(
                    "CA file {} of [registry.\"{host}\"] holds a certificate that does not parse: {e}",
                    path.display()
                ),
            )
        })?;
    }
    Ok(out)
}

/// Marks the error of a client that could not be made, so it is told as the
/// configuration error it is rather than as the registry's answer.
const CLIENT_SETUP: &str = "client setup: ";

/// Builds the client for one host's settings.
fn build_client(host: &str, s: &HostSettings) -> Result<HttpClient, RegistryError> {
    HttpClient::new(s.http, s.insecure, &s.ca, s.identity.as_deref(), USER_AGENT).map_err(|e| {
        RegistryError::config(
            host,
            format!("cannot set up the client for [registry.\"{host}\"]: {e}"),
        )
    })
}

/// Checks `body` against a `sha256:` digest; other algorithms were checked by oci-client.
/// Returns the actual digest on mismatch.
fn verify_digest(body: &[u8], expected: &str) -> Result<(), String> {
    if expected.starts_with("sha256:") {
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(body)));
        if actual != expected {
            return Err(actual);
        }
    }
    Ok(())
}

/// The error for content that does not match its digest.
pub(crate) fn mismatch(
    ep: &Endpoint<'_>,
    reference: &str,
    what: &str,
    expected: &str,
    actual: &str,
) -> RegistryError {
    RegistryError::new(
        RegistryErrorKind::Invalid,
        reference,
        &ep.host,
        format!(
            "registry {} sent {what} for {reference} that fails verification: digest mismatch (expected {expected}, got {actual}); the registry or a proxy in between is serving corrupt data",
            ep.label()
        ),
    )
}

/// The innermost message of an error chain (e.g. "Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    let mut messages = vec![cur.to_string()];
    while let Some(next) = cur.source() {
        messages.push(next.to_string());
        cur = next;
    }
    messages
        .into_iter()
        .rev()
        .find(|m| !m.trim().is_empty())
        .unwrap_or_default()
}

/// Maps an oci-client error to a `RegistryError` naming the reference and host.
fn map_error(
    e: OciDistributionError,
    ep: &Endpoint<'_>,
    reference: &str,
    what: &str,
) -> RegistryError {
    use RegistryErrorKind as K;
    let label = ep.label();
    let key = &ep.settings_key;
    let not_found = |detail: String| {
        let subject = if what == "manifest" {
            reference.to_string()
        } else {
            format!("{what} of {reference}")
        };
        RegistryError::new(
            K::NotFound,
            reference,
            &ep.host,
            format!(
                "{subject} not found on registry {label} ({detail}); check the repository name and tag"
            ),
        )
    };
    let unauthorized = |detail: String| {
        RegistryError::new(
            K::Unauthorized,
            reference,
            &ep.host,
            format!(
                "registry {label} refused access to {reference}: {detail} (log in with `docker login {}` or check its credentials in $DOCKER_CONFIG/config.json; some registries also say this for a repository that does not exist)",
                ep.host
            ),
        )
    };
    let unreachable = |detail: String| {
        RegistryError::new(
            K::Unreachable,
            reference,
            &ep.host,
            format!("cannot reach registry {label} for {reference}: {detail}"),
        )
    };
    let invalid = |detail: String| {
        RegistryError::new(
            K::Invalid,
            reference,
            &ep.host,
            format!("registry {label} sent an unusable {what} for {reference}: {detail}"),
        )
    };
    match e {
        OciDistributionError::GenericError(Some(m)) if m.starts_with(CLIENT_SETUP) => {
            RegistryError::config(&ep.host, m[CLIENT_SETUP.len()..].to_string())
        }
        OciDistributionError::RequestError(err) => {
            let cause = root_cause(&err);
            let lower = cause.to_ascii_lowercase();
            let hint = if lower.contains("fatal alert")
                && (lower.contains("badcertificate")
                    || lower.contains("certificaterequired")
                    || lower.contains("unknownca"))
            {
                if ep.client.settings.identity.is_some() {
                    format!(
                        "it refused our client certificate: check the keypair of [registry.\"{key}\"] is signed by a CA it trusts"
                    )
                } else {
                    format!(
                        "it wants a client certificate: add [[registry.\"{key}\".keypair]] with cert and key, or NAME.cert and NAME.key in a tlsconfigdir"
                    )
                }
            } else if lower.contains("certificate")
                || lower.contains("unknownissuer")
                || lower.contains("notvalidforname")
            {
                format!(
                    "its TLS certificate is not trusted: add its CA with [registry.\"{key}\"] ca = [\"/path/to/ca.pem\"], or set insecure = true to skip verification"
                )
            } else if !ep.client.settings.http
                && (lower.contains("corrupt message")
                    || lower.contains("invalidcontenttype")
                    || lower.contains("wrong version number"))
            {
                format!(
                    "it answered in plain HTTP: set [registry.\"{key}\"] http = true for a plain-HTTP registry"
                )
            } else if ep.client.settings.http && lower.contains("http") && lower.contains("version")
            {
                format!("it may only speak HTTPS: remove http = true from [registry.\"{key}\"]")
            } else if ep.client.settings.http {
                "is it running?".to_string()
            } else {
                format!(
                    "is it running? set [registry.\"{key}\"] http = true for a plain-HTTP registry"
                )
            };
            unreachable(format!("{cause} ({hint})"))
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let detail = envelope
                .errors
                .iter()
                .map(|e| {
                    if e.message.is_empty() {
                        format!("{:?}", e.code)
                    } else {
                        e.message.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            let code = envelope.errors.first().map(|e| &e.code);
            match code {
                Some(
                    OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::ManifestBlobUnknown
                    | OciErrorCode::NotFound,
                ) => not_found(detail),
                Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => unauthorized(detail),
                Some(OciErrorCode::Toomanyrequests) => unreachable(format!(
                    "{detail} (rate limited; try again later or log in)"
                )),
                _ => invalid(detail),
            }
        }
        OciDistributionError::ServerError { code, message, .. } => {
            let detail = format!("HTTP {code} {}", message.trim());
            match code {
                404 => not_found(detail),
                401 | 403 => unauthorized(detail),
                429 => unreachable(format!(
                    "{detail} (rate limited; try again later or log in)"
                )),
                500..=599 => unreachable(detail),
                _ => invalid(detail),
            }
        }
        OciDistributionError::UnauthorizedError { .. } => unauthorized("HTTP 401".into()),
        OciDistributionError::AuthenticationFailure(reason) => {
            unauthorized(format!("token request failed: {}", reason.trim()))
        }
        OciDistributionError::ImageManifestNotFoundError(detail) => not_found(detail),
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => mismatch(ep, reference, what, &expected, &actual),
        other => invalid(other.to_string()),
    }
}

/// A manifest or index, as much as we read of it.
#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    config: Option<RawDescriptor>,
}

/// A content descriptor.
#[derive(Clone, Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

/// The platform of an index entry.
#[derive(Clone, Deserialize)]
struct RawPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

impl RawPlatform {
    fn variant_str(&self) -> &str {
        self.variant.as_deref().unwrap_or("")
    }
}

/// What a manifest body turned out to be.
enum Parsed {
    /// An image manifest, with its config descriptor.
    Manifest(RawDescriptor),
    /// An index / manifest list, with its entries.
    Index(Vec<RawDescriptor>),
}

/// Classifies a manifest body and checks it describes a container image.
fn classify(body: &[u8], ep: &Endpoint<'_>, reference: &str) -> Result<Parsed, RegistryError> {
    parse_manifest(body).map_err(|problem| {
        let registry = ep.label();
        let message = match problem {
            ManifestProblem::NotJson(e) => {
                format!("registry {registry} sent a manifest for {reference} that is not valid JSON: {e}")
            }
            ManifestProblem::NoConfig => {
                format!("registry {registry} sent a manifest for {reference} without a config")
            }
            ManifestProblem::NotImage(media_type) => format!(
                "{reference} on registry {registry} is not a container image (media type {media_type})"
            ),
        };
        RegistryError::new(RegistryErrorKind::Invalid, reference, &ep.host, message)
    })
}

/// Why a manifest body is not one of a container image.
enum ManifestProblem {
    NotJson(serde_json::Error),
    NoConfig,
    /// Its media type (with the config's, for a manifest whose config is not an image's).
    NotImage(String),
}

/// Reads a manifest or index body: the part of [`classify`] that needs no registry.
fn parse_manifest(body: &[u8]) -> Result<Parsed, ManifestProblem> {
    let raw: RawManifest = serde_json::from_slice(body).map_err(ManifestProblem::NotJson)?;
    if raw.schema_version == Some(1) {
        const SCHEMA1: &str =
            "application/vnd.docker.distribution.manifest.v1+json, the old schema 1 format";
        let media_type = raw.media_type.unwrap_or_else(|| SCHEMA1.into());
        return Err(ManifestProblem::NotImage(media_type));
    }
    let media_type = raw.media_type.unwrap_or_default();
    let is_index = match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        "" if raw.manifests.is_some() => true,
        "" if raw.config.is_some() => false,
        "" => return Err(ManifestProblem::NotImage("none".into())),
        _ => return Err(ManifestProblem::NotImage(media_type)),
    };
    if is_index {
        return Ok(Parsed::Index(raw.manifests.unwrap_or_default()));
    }
    let config = raw.config.ok_or(ManifestProblem::NoConfig)?;
    match config.media_type.as_str() {
        OCI_CONFIG | DOCKER_CONFIG => Ok(Parsed::Manifest(config)),
        other => {
            let media_type = format!("{media_type}, config {other}");
            Err(ManifestProblem::NotImage(media_type))
        }
    }
}

/// The fuzz target's way in: reads a manifest or index body as a registry's answer is read
/// and, for an index, picks an entry for a few platforms. Returns the descriptors found.
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn fuzz_manifest(body: &[u8]) -> usize {
    match parse_manifest(body) {
        Ok(Parsed::Manifest(_)) => 1,
        Ok(Parsed::Index(entries)) => {
            let wants = [
                ("linux", "amd64", ""),
                ("linux", "arm", "v7"),
                ("linux", "arm64", "v8"),
                ("windows", "amd64", ""),
            ];
            for (os, arch, variant) in wants {
                let _ = choose_platform(&entries, &Platform::normalize(os, arch, variant));
            }
            entries.len()
        }
        Err(_) => 0,
    }
}

/// Picks the index entry that best fits the platform (exact first, then compatible variants).
fn choose_platform<'a>(entries: &'a [RawDescriptor], want: &Platform) -> Option<&'a RawDescriptor> {
    // Entries without a platform match anything, after every entry that names one.
    entries
        .iter()
        .filter(|e| !matches!(e.media_type.as_str(), OCI_INDEX | DOCKER_LIST))
        .filter_map(|e| match e.platform.as_ref() {
            Some(p) => {
                let have = Platform::normalize(&p.os, &p.architecture, p.variant_str());
                want.rank(&have).map(|rank| (rank, e))
            }
            None => Some((u32::MAX, e)),
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mirrors() {
        assert_eq!(
            parse_mirror("mirror.local:5000/proxy.docker.io"),
            Some((
                Mirror {
                    host: "mirror.local:5000".into(),
                    prefix: "proxy.docker.io".into()
                },
                false
            ))
        );
        assert_eq!(
            parse_mirror("http://127.0.0.1:5000/"),
            Some((
                Mirror {
                    host: "127.0.0.1:5000".into(),
                    prefix: String::new()
                },
                true
            ))
        );
        assert_eq!(parse_mirror(""), None);
    }

    #[test]
    fn endpoints_put_mirrors_first_and_map_docker_hub() {
        let mut config = BTreeMap::new();
        config.insert(
            "docker.io".to_string(),
            RegistryConfig {
                mirrors: vec!["mirror.local:5000/proxy.docker.io".into(), "m2".into()],
                ..Default::default()
            },
        );
        let regs = Registries::new(&config).unwrap();
        let r: Reference = "alpine".parse().unwrap();
        assert_eq!(r.whole(), "docker.io/library/alpine:latest");
        let eps = regs.endpoints(&r);
        let hosts: Vec<String> = eps.iter().map(|e| e.reference(&r).whole()).collect();
        assert_eq!(
            hosts,
            [
                "mirror.local:5000/proxy.docker.io/library/alpine:latest",
                "m2/library/alpine:latest",
                "registry-1.docker.io/library/alpine:latest",
            ]
        );
        assert_eq!(eps[2].credential_key, DOCKER_HUB_CREDENTIAL_KEY);
    }

    #[test]
    fn registries_can_be_shared_across_tasks() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let regs = Registries::new(&BTreeMap::new()).unwrap();
        send_sync(&regs);
        send(&regs.resolve_image_config("alpine", "linux", "amd64", ""));
    }

    #[tokio::test]
    async fn at_most_four_requests_per_registry() {
        let regs = Registries::new(&BTreeMap::new()).unwrap();
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS_PER_REGISTRY {
            held.push(regs.permit("r.example").await.unwrap());
        }
        let fifth = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            regs.permit("r.example"),
        );
        assert!(fifth.await.is_err(), "a fifth request must wait");
        // Other registries have their own limit.
        assert!(regs.permit("other.example").await.is_some());
        held.pop();
        assert!(regs.permit("r.example").await.is_some());
    }

    #[test]
    fn missing_ca_file_is_a_config_error() {
        let mut config = BTreeMap::new();
        config.insert(
            "r.example".to_string(),
            RegistryConfig {
                ca: vec!["/nonexistent/ca.pem".into()],
                ..Default::default()
            },
        );
        let err = Registries::new(&config).err().unwrap();
        assert_eq!(err.kind(), RegistryErrorKind::Config);
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    /// Clients are made when first used, but their files are checked at the start.
    #[test]
    fn unparsable_ca_or_keypair_is_a_config_error_at_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let junk = junk.display().to_string();
        for rc in [
            RegistryConfig {
                ca: vec![junk.clone()],
                ..Default::default()
            },
            RegistryConfig {
                keypair: vec![buildwit_config::KeyPair {
                    cert: junk.clone(),
                    key: junk.clone(),
                }],
                ..Default::default()
            },
        ] {
            let config = BTreeMap::from([("r.example".to_string(), rc)]);
            let err = Registries::new(&config).err().unwrap();
            assert_eq!(err.kind(), RegistryErrorKind::Config);
            assert!(err.to_string().contains(&junk), "{err}");
        }
    }
}
