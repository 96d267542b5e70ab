//! Build caches in object stores: `type=s3` (Amazon S3 and the services that speak its API)
//! and `type=azblob` (Azure Blob Storage), through Apache Arrow's `object_store`.
//!
//! The layout is BuildKit's: each layer blob under `<prefix><blobs_prefix><digest>`, and
//! under `<prefix><manifests_prefix><name>` the cache config with each layer's media type,
//! diff id and size. Blobs go first and the config last, so an import never finds a config
//! whose blobs are not all there; a blob already in the bucket is not uploaded again.

use std::sync::Arc;
use std::time::Duration;

use crate::cache_io::MAX_CONFIG_SIZE;
use buildwit_exporter::cache::{BucketCache, BucketService, BuiltCache, Written};
use buildwit_worker::{ContentStore, Descriptor};
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

/// An opened object store cache.
pub(crate) struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// The key of a blob is this and its digest; of a manifest, `manifests` and its name.
    blobs: String,
    manifests: String,
    /// Azure's keys are joined as paths (BuildKit uses `filepath.Join` there), S3's are
    /// concatenated.
    join: bool,
    names: Vec<String>,
    upload_parallelism: usize,
    touch_refresh: Option<Duration>,
    /// Said with a refused request when the credentials came from nowhere in particular.
    credentials_hint: Option<&'static str>,
    /// An Azure container to create before an export if it is missing.
    container: Option<AzureContainer>,
}

/// An Azure container and the account key that may create it.
struct AzureContainer {
    account_url: String,
    account: String,
    name: String,
    key: String,
}

/// Blobs an import downloads at once.
const DOWNLOADS: usize = 4;

/// Three tries, as the AWS SDK's standard retry mode: object_store's own default retries
/// for three minutes, which an unreachable endpoint would make a hung build.
fn retries() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(60),
        ..Default::default()
    }
}

/// The daemon's environment variable `name`, if set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A client of a service, and what the service makes of a cache spec.
struct Service {
    store: Arc<dyn ObjectStore>,
    join: bool,
    touch_refresh: Option<Duration>,
    prefix: Option<String>,
    credentials_hint: Option<&'static str>,
    container: Option<AzureContainer>,
}

impl Service {
    /// An S3 client: what the spec leaves unset comes from the environment, as the AWS SDK
    /// reads it for BuildKit.
    fn s3(spec: &BucketCache) -> Result<Service, String> {
        let BucketService::S3 {
            bucket,
            region,
            endpoint_url,
            use_path_style,
            access_key_id,
            secret_access_key,
            session_token,
            touch_refresh,
        } = &spec.service
        else {
            unreachable!("an s3 spec")
        };
        let bucket = bucket
            .clone()
            .or_else(|| env("AWS_BUCKET"))
            .ok_or("bucket ($AWS_BUCKET) not set for the s3 cache")?;
        let region = region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .ok_or("region ($AWS_REGION) not set for the s3 cache")?;
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_region(region)
            .with_virtual_hosted_style_request(!use_path_style)
            .with_retry(retries());
        if let Some(url) = endpoint_url {
            let endpoint = if *use_path_style {
                url.clone()
            } else {
                virtual_host(url, &bucket)?
            };
            b = b
                .with_allow_http(url.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        let mut credentials_hint = None;
        if let (Some(id), Some(key)) = (access_key_id, secret_access_key) {
            b = b
                .with_access_key_id(id)
                .with_secret_access_key(&key.0)
                .with_token(session_token.as_ref().map_or("", |t| &t.0));
        } else if env("AWS_ACCESS_KEY_ID").is_none() {
            credentials_hint = Some(
                "no access_key_id and secret_access_key, and no $AWS_ACCESS_KEY_ID in buildwit's environment",
            );
        }
        let store = b.build().map_err(|e| format!("s3 cache: {e}"))?;
        Ok(Service {
            store: Arc::new(store),
            join: false,
            touch_refresh: Some(*touch_refresh),
            prefix: spec.prefix.clone(),
            credentials_hint,
            container: None,
        })
    }

    /// An Azure Blob client, with BuildKit's environment defaults.
    fn azure(spec: &BucketCache) -> Result<Service, String> {
        let BucketService::Azure {
            account_url,
            account_name,
            secret_access_key,
            container,
        } = &spec.service
        else {
            unreachable!("an azblob spec")
        };
        let url = account_url
            .clone()
            .or_else(|| env("BUILDKIT_AZURE_STORAGE_ACCOUNT_URL"))
            .ok_or(
                "account_url ($BUILDKIT_AZURE_STORAGE_ACCOUNT_URL) not set for the azblob cache",
            )?;
        let account = account_name
            .clone()
            .or_else(|| env("BUILDKIT_AZURE_STORAGE_ACCOUNT_NAME"))
            .or_else(|| first_host_label(&url))
            .ok_or("azblob cache: no account name in account_url, account_name or $BUILDKIT_AZURE_STORAGE_ACCOUNT_NAME")?;
        let container = container
            .clone()
            .or_else(|| env("BUILDKIT_AZURE_STORAGE_CONTAINER"))
            .unwrap_or_else(|| "buildkit-cache".into());
        let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_account(&account)
            .with_container_name(&container)
            .with_allow_http(url.starts_with("http://"))
            .with_endpoint(url.clone())
            .with_retry(retries());
        let (mut credentials_hint, mut to_create) = (None, None);
        if let Some(key) = secret_access_key {
            b = b.with_access_key(&key.0);
            to_create = Some(AzureContainer {
                account_url: url,
                account,
                name: container,
                key: key.0.clone(),
            });
        } else if env("AZURE_STORAGE_ACCOUNT_KEY").is_none() && env("AZURE_CLIENT_ID").is_none() {
            credentials_hint = Some(
                "no secret_access_key, and no $AZURE_STORAGE_ACCOUNT_KEY or $AZURE_CLIENT_ID in buildwit's environment",
            );
        }
        let store = b.build().map_err(|e| format!("azblob cache: {e}"))?;
        Ok(Service {
            store: Arc::new(store),
            join: true,
            touch_refresh: None,
            prefix: spec
                .prefix
                .clone()
                .or_else(|| env("BUILDKIT_AZURE_STORAGE_PREFIX")),
            credentials_hint,
            container: to_create,
        })
    }
}

impl Bucket {
    /// The client of `spec`, with what it leaves unset read from the environment.
    pub(crate) fn open(spec: &BucketCache) -> Result<Self, String> {
        let service = match &spec.service {
            BucketService::S3 { .. } => Service::s3(spec)?,
            BucketService::Azure { .. } => Service::azure(spec)?,
        };
        let prefix = service.prefix.unwrap_or_default();
        // BuildKit's defaults: S3's prefixes end in a slash, Azure's are joined as paths.
        let (blobs, manifests) = if service.join {
            (
                path_join(&[&prefix, spec.blobs_prefix.as_deref().unwrap_or("blobs")]),
                path_join(&[
                    &prefix,
                    spec.manifests_prefix.as_deref().unwrap_or("manifests"),
                ]),
            )
        } else {
            (
                prefix.clone() + spec.blobs_prefix.as_deref().unwrap_or("blobs/"),
                prefix + spec.manifests_prefix.as_deref().unwrap_or("manifests/"),
            )
        };
        Ok(Bucket {
            store: service.store,
            blobs,
            manifests,
            join: service.join,
            names: spec.names.clone(),
            upload_parallelism: spec.upload_parallelism,
            touch_refresh: service.touch_refresh,
            credentials_hint: service.credentials_hint,
            container: service.container,
        })
    }

    /// What failed, with a hint where the service refused the request.
    fn failed(&self, doing: &str, e: object_store::Error) -> String {
        use object_store::Error::{NotFound, PermissionDenied, Unauthenticated};
        let hint = match (&e, self.credentials_hint) {
            (PermissionDenied { .. } | Unauthenticated { .. }, None) => {
                " (access denied: check the credentials and what they may reach)"
            }
            (NotFound { .. }, _) => "",
            (_, Some(hint)) => return format!("{doing}: {} ({hint})", tidy(e.to_string())),
            _ => "",
        };
        format!("{doing}: {}{hint}", tidy(e.to_string()))
    }

    /// The key of `name` under `dir` (a blob or manifest prefix).
    fn key(&self, dir: &str, name: &str) -> Result<Path, String> {
        let key = if self.join {
            path_join(&[dir, name])
        } else {
            format!("{dir}{name}")
        };
        Path::parse(&key).map_err(|e| format!("object key {key:?}: {e}"))
    }

    /// Upload the blobs of `built` that are not there yet, then its config under every
    /// name. Returns what was written and the config's digest.
    pub(crate) async fn export(
        &self,
        content: &ContentStore,
        built: &BuiltCache,
    ) -> Result<(Written, String), String> {
        let config = built.annotated_config().map_err(|e| e.to_string())?;
        if let Some(container) = &self.container {
            container.create().await?;
        }
        let uploads = futures_util::stream::iter(built.layers.iter().map(|desc| async move {
            let key = self.key(&self.blobs, &desc.digest)?;
            let fresh = match self.store.head(&key).await {
                Ok(meta) => self.touch_refresh.is_none_or(|refresh| {
                    let age = age_of(meta.last_modified.timestamp());
                    age < refresh
                }),
                Err(object_store::Error::NotFound { .. }) => false,
                Err(e) => return Err(self.failed(&format!("looking for blob {}", desc.digest), e)),
            };
            if fresh {
                return Ok(None);
            }
            self.upload(content, desc, &key).await?;
            Ok(Some(desc.size))
        }))
        .buffer_unordered(self.upload_parallelism)
        .try_collect::<Vec<Option<u64>>>()
        .await?;
        for name in &self.names {
            let key = self.key(&self.manifests, name)?;
            self.store
                .put(&key, PutPayload::from(config.clone()))
                .await
                .map_err(|e| self.failed(&format!("writing manifest {name}"), e))?;
        }
        Ok((
            crate::cache_io::written(&uploads),
            buildwit_worker::content::sha256_digest(&config),
        ))
    }

    /// Stream a blob of the content store to `key`, in parts when it is large.
    async fn upload(
        &self,
        content: &ContentStore,
        desc: &Descriptor,
        key: &Path,
    ) -> Result<(), String> {
        use tokio::io::AsyncWriteExt as _;
        let failed =
            |e: &dyn std::fmt::Display| tidy(format!("uploading blob {}: {e}", desc.digest));
        let path = content.path(&desc.digest).map_err(|e| failed(&e))?;
        let mut file = tokio::fs::File::open(&path).await.map_err(|e| failed(&e))?;
        let mut writer = object_store::buffered::BufWriter::new(self.store.clone(), key.clone());
        if let Err(e) = tokio::io::copy(&mut file, &mut writer).await {
            // Nothing is left: an unfinished multipart upload is aborted.
            let _ = writer.abort().await;
            return Err(failed(&e));
        }
        writer.shutdown().await.map_err(|e| failed(&e))
    }

    /// The config the first name holds.
    pub(crate) async fn manifest(&self) -> Result<Vec<u8>, String> {
        let name = &self.names[0];
        let key = self.key(&self.manifests, name)?;
        let got = self.store.get(&key).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                format!("nothing at {key} (no such cache, name or bucket)")
            }
            e => self.failed(&format!("reading manifest {key}"), e),
        })?;
        if got.meta.size > MAX_CONFIG_SIZE {
            return Err(format!(
                "manifest {key} is {} bytes, more than the {MAX_CONFIG_SIZE} allowed",
                got.meta.size
            ));
        }
        let bytes = got
            .bytes()
            .await
            .map_err(|e| format!("reading manifest {key}: {e}"))?;
        Ok(bytes.to_vec())
    }

    /// Stream blobs into the content store, `upload_parallelism` at once; a blob whose bytes
    /// do not match its digest is not kept.
    pub(crate) async fn fetch_blobs(
        &self,
        content: &ContentStore,
        blobs: &[&Descriptor],
    ) -> Result<(), String> {
        futures_util::stream::iter(blobs.iter().map(|desc| async move {
            let key = self.key(&self.blobs, &desc.digest)?;
            let stream = self
                .store
                .get(&key)
                .await
                .map_err(|e| self.failed(&format!("blob {}", desc.digest), e))?
                .into_stream();
            crate::cache_io::ingest_stream(content, desc, stream).await
        }))
        .buffer_unordered(DOWNLOADS)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }
}

impl AzureContainer {
    /// Create the container unless it exists: Azure's Create Container, signed with the
    /// account key (Shared Key authorization).
    async fn create(&self) -> Result<(), String> {
        use base64::Engine as _;
        use hmac::{KeyInit as _, Mac as _};
        let failed =
            |e: &dyn std::fmt::Display| tidy(format!("creating container {}: {e}", self.name));
        let base = self.account_url.trim_end_matches('/');
        let path = base
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .unwrap_or("");
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        const VERSION: &str = "2021-08-06";
        // Verb, eleven standard headers (all empty here), the x-ms- headers, the resource.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{VERSION}\n/{}{path}/{}\nrestype:container",
            self.account, self.name
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(&self.key)
            .map_err(|e| failed(&format!("the account key is not base64: {e}")))?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|e| failed(&e))?;
        mac.update(to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let response = reqwest::Client::new()
            .put(format!("{base}/{}?restype=container", self.name))
            .header("x-ms-date", date)
            .header("x-ms-version", VERSION)
            .header(
                "Authorization",
                format!("SharedKey {}:{signature}", self.account),
            )
            .send()
            .await
            .map_err(|e| failed(&e))?;
        match response.status().as_u16() {
            201 | 409 => Ok(()),
            status => {
                let body = response.text().await.unwrap_or_default();
                Err(failed(&format!("{status} {}", body.trim())))
            }
        }
    }
}

/// A service's error document (`<?xml …><Error><Code>NoSuchBucket</Code><Message>…`) in a
/// message, said as its code and message.
fn tidy(message: String) -> String {
    let Some(start) = message.find("<?xml") else {
        return message;
    };
    let element = |name: &str| {
        let open = format!("<{name}>");
        let from = message[start..].find(&open)? + start + open.len();
        let to = message[from..].find(&format!("</{name}>"))? + from;
        Some(message[from..to].to_string())
    };
    match (element("Code"), element("Message")) {
        (Some(code), Some(text)) => {
            let text = text.lines().next().unwrap_or_default();
            format!("{}{code}: {text}", &message[..start])
        }
        _ => message,
    }
}

/// How long ago Unix time `secs` was (zero if in the future).
fn age_of(secs: i64) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Duration::from_secs(now.saturating_sub(secs).max(0) as u64)
}

/// `scheme://host…` as `scheme://bucket.host…`: the virtual-hosted form BuildKit's S3
/// client uses with an endpoint unless `use_path_style`.
fn virtual_host(url: &str, bucket: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("endpoint_url {url:?} is not a URL"))?;
    Ok(format!("{scheme}://{bucket}.{rest}"))
}

/// The first label of a URL's host: an Azure account URL's account name.
fn first_host_label(url: &str) -> Option<String> {
    let host = url.split_once("://")?.1.split(['/', ':']).next()?;
    let label = host.split('.').next()?;
    (!label.is_empty()).then(|| label.to_string())
}

/// Non-empty parts joined with `/`, as Go's `filepath.Join` cleans them.
fn path_join(parts: &[&str]) -> String {
    parts
        .iter()
        .flat_map(|p| p.split('/'))
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_services_error_document_is_said_as_its_code_and_message() {
        let raw = "PUT http://x/b/k - 404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>b</BucketName></Error>";
        assert_eq!(
            tidy(raw.into()),
            "PUT http://x/b/k - 404 Not Found: NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(tidy("plain".into()), "plain");
    }

    #[test]
    fn keys_are_laid_out_as_buildkit_lays_them_out() {
        assert_eq!(path_join(&["", "blobs"]), "blobs");
        assert_eq!(
            path_join(&["team/", "/blobs/", "sha256:ab"]),
            "team/blobs/sha256:ab"
        );
        assert_eq!(
            virtual_host("http://127.0.0.1:9000", "cache").unwrap(),
            "http://cache.127.0.0.1:9000"
        );
        assert_eq!(
            first_host_label("https://acct.blob.core.windows.net/").as_deref(),
            Some("acct")
        );
        assert_eq!(
            first_host_label("http://127.0.0.1:10000/devstoreaccount1").as_deref(),
            Some("127")
        );
    }
}
