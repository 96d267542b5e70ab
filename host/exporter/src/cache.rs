//! Build cache export and import formats (`--cache-to` / `--cache-from`).
//!
//! The exported cache is an OCI artifact shaped like BuildKit's: an OCI image manifest whose
//! config is a cache config JSON (`application/vnd.buildkit.cacheconfig.v0`) and whose
//! layers are the compressed layer blobs. The config lists the layers (each with its parent,
//! so a result is the chain ending at one layer) and the records, each mapping one of
//! buildwit's cache keys to the layer chain of each output. The keys are buildwit's own
//! (see the solver's `keys.rs`), not BuildKit's, so only buildwit can use such a cache:
//! `keyFormat` says so and the importer checks it.
//!
//! `type=local` writes an ordinary OCI image layout directory whose `index.json` names the
//! cache manifest; `type=registry` pushes the same manifest (see the daemon).

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use buildwit_worker::content::{digest_hex, sha256_digest};
use buildwit_worker::{ContentStore, Descriptor, Layer};
use serde::{Deserialize, Serialize};

use crate::ExportError;
use crate::atomic::AtomicFile;
use crate::layer::{Compression, LayerCompression, layer_blob_with};
use crate::layout::{DOCKER_CONFIG, DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};

/// Media type of the cache config (BuildKit's).
pub const CACHE_CONFIG: &str = "application/vnd.buildkit.cacheconfig.v0";
/// The key format this build of buildwit writes and reads.
pub const KEY_FORMAT: &str = "buildwit.v1";
/// The image config key of an inline cache (BuildKit's; the value is the base64 of the
/// cache config JSON).
pub const INLINE_CACHE_KEY: &str = "moby.buildkit.cache.v0";
/// Annotation of a layer descriptor: the digest of its uncompressed tar.
const ANNOTATION_UNCOMPRESSED: &str = "containerd.io/uncompressed";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Held while a local cache directory is written, so two exports cannot interleave.
pub const LOCK_FILE: &str = ".buildwit-cache.lock";
/// Versions a local cache directory keeps (the newest is tagged `latest`): older ones can
/// still be imported with `digest=`, and the directory stays bounded.
pub const KEPT_VERSIONS: usize = 3;

/// Where a cache goes or comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheTarget {
    /// An OCI image layout directory.
    Local(PathBuf),
    /// An image reference in a registry.
    Registry(String),
    /// In the config of the image the build exports (`type=inline`, export only).
    Inline,
    /// In an S3 bucket or an Azure Blob container (`type=s3`, `type=azblob`).
    Bucket(Box<BucketCache>),
    /// In GitHub Actions' cache service (`type=gha`).
    Gha(Box<GhaCache>),
}

/// A cache in GitHub Actions' cache service, laid out as BuildKit lays it out there: each
/// blob an entry `buildkit-blob-1-<digest>`, the cache config (as in an object store) an
/// entry `index-<scope>-1-<token scope hash>#<n>`, a new `n` on every export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GhaCache {
    /// `url=`: the legacy cache service.
    pub url: Option<String>,
    /// `url_v2=`: the cache service v2 (Twirp, blobs behind signed Azure Blob URLs).
    pub url_v2: Option<String>,
    /// `token=`: the runner's `ACTIONS_RUNTIME_TOKEN`.
    pub token: Option<Secret>,
    /// `scope=` (default `buildkit`).
    pub scope: String,
    /// `version=`: the service's protocol, 1 or 2 (default 2 with `url_v2`).
    pub version: Option<u32>,
    /// `timeout=` (default 10 minutes): each request's.
    pub timeout: std::time::Duration,
}

/// A cache in an object store, laid out as BuildKit lays out its `type=s3` and
/// `type=azblob` caches: each blob under `<prefix><blobs_prefix><digest>`, the cache
/// config (with each layer's media type, diff id and size) under
/// `<prefix><manifests_prefix><name>`. What is not set here is read from the daemon's
/// environment when the cache is used, as BuildKit reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketCache {
    /// The service and how to reach it.
    pub service: BucketService,
    /// `prefix=`.
    pub prefix: Option<String>,
    /// `blobs_prefix=`.
    pub blobs_prefix: Option<String>,
    /// `manifests_prefix=`.
    pub manifests_prefix: Option<String>,
    /// `name=`, `;`-separated: the manifests an export writes; an import reads the first.
    pub names: Vec<String>,
    /// `upload_parallelism=`: blobs uploaded at once.
    pub upload_parallelism: usize,
}

/// An object store service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketService {
    /// Amazon S3 or a service that speaks its API.
    S3 {
        /// `bucket=`, else `$AWS_BUCKET`.
        bucket: Option<String>,
        /// `region=`, else `$AWS_REGION`.
        region: Option<String>,
        /// `endpoint_url=`: another service than AWS's.
        endpoint_url: Option<String>,
        /// `use_path_style=`: the bucket in the path, not the host name.
        use_path_style: bool,
        /// `access_key_id=`, else the AWS SDK's environment and credential chain.
        access_key_id: Option<String>,
        /// `secret_access_key=`.
        secret_access_key: Option<Secret>,
        /// `session_token=`.
        session_token: Option<Secret>,
        /// `touch_refresh=` (default 24 h): a blob already there but older than this is
        /// written again, so a bucket's expiry rules keep what builds still use.
        touch_refresh: std::time::Duration,
    },
    /// Azure Blob Storage.
    Azure {
        /// `account_url=`, else `$BUILDKIT_AZURE_STORAGE_ACCOUNT_URL`.
        account_url: Option<String>,
        /// `account_name=`, else `$BUILDKIT_AZURE_STORAGE_ACCOUNT_NAME`, else the first
        /// label of the account URL's host.
        account_name: Option<String>,
        /// `secret_access_key=`: the account key, else Azure's environment credentials.
        secret_access_key: Option<Secret>,
        /// `container=`, else `$BUILDKIT_AZURE_STORAGE_CONTAINER`, else `buildkit-cache`.
        container: Option<String>,
    },
}

/// A credential from a cache spec: kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Which records an export holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// The record of the build's result only.
    #[default]
    Min,
    /// Every record of the build.
    Max,
}

/// A parsed `--cache-to` / `--cache-from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSpec {
    /// Where.
    pub target: CacheTarget,
    /// `mode=` (export only).
    pub mode: CacheMode,
    /// `compression=`, `compression-level=`, `force-compression=` (export only).
    pub compression: LayerCompression,
    /// `ignore-error=true`: a failed export only warns.
    pub ignore_error: bool,
    /// `digest=` (local import): which manifest of the layout; default the one tagged
    /// `latest`, else the only one.
    pub digest: Option<String>,
    /// `oci-mediatypes=` (export): OCI media types (default), else Docker's.
    pub oci_mediatypes: bool,
    /// `image-manifest=` (export): the cache is an image manifest whose config is the cache
    /// config (default); false: BuildKit's older layout, an index listing the layers and
    /// the config.
    pub image_manifest: bool,
}

impl CacheSpec {
    /// Where it goes, for messages.
    pub fn describe(&self) -> String {
        match &self.target {
            CacheTarget::Local(p) => format!("local cache {}", p.display()),
            CacheTarget::Registry(r) => format!("registry cache {r}"),
            CacheTarget::Inline => "inline cache".into(),
            CacheTarget::Gha(g) => format!("gha cache {}", g.scope),
            CacheTarget::Bucket(b) => match &b.service {
                BucketService::S3 { bucket, .. } => format!(
                    "s3 cache {}{}",
                    bucket.as_deref().unwrap_or("$AWS_BUCKET"),
                    b.prefix
                        .as_deref()
                        .map(|p| format!(" prefix {p}"))
                        .unwrap_or_default()
                ),
                BucketService::Azure { container, .. } => format!(
                    "azblob cache {}{}",
                    container
                        .as_deref()
                        .unwrap_or("$BUILDKIT_AZURE_STORAGE_CONTAINER"),
                    b.prefix
                        .as_deref()
                        .map(|p| format!(" prefix {p}"))
                        .unwrap_or_default()
                ),
            },
        }
    }

    /// A spec for `target` with the default options.
    pub fn new(target: CacheTarget) -> Self {
        CacheSpec {
            target,
            mode: CacheMode::Min,
            compression: LayerCompression::default(),
            ignore_error: false,
            digest: None,
            oci_mediatypes: true,
            image_manifest: true,
        }
    }
}

/// Parse a buildx cache spec: `type=local,dest=DIR`, `type=registry,ref=REF`,
/// `type=inline` (export only), or a bare reference (a registry cache, as buildx reads `--cache-from user/app:cache`).
/// `export`: the spec is for `--cache-to` (`dest=`) rather than `--cache-from` (`src=`).
pub fn parse_cache_spec(spec: &str, export: bool) -> Result<CacheSpec, ExportError> {
    if !spec.contains('=') {
        if spec.trim().is_empty() {
            return Err(refused(spec, export, "empty cache spec".into()));
        }
        return Ok(CacheSpec::new(CacheTarget::Registry(
            spec.trim().to_string(),
        )));
    }
    let pairs: Vec<(&str, &str)> = spec
        .split(',')
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            (k.trim(), v)
        })
        .collect();
    from_pairs(spec, &pairs, export)
}

/// A cache entry as BuildKit's API carries one: its type, and attributes taken as they are
/// (a comma or `type=` inside a key or value is no separator, so it cannot choose another
/// type or path).
pub fn cache_from_attrs(
    kind: &str,
    attrs: &[(String, String)],
    export: bool,
) -> Result<CacheSpec, ExportError> {
    let label = format!("type={kind}");
    let mut pairs = vec![("type", kind)];
    for (k, v) in attrs {
        if k == "type" {
            return Err(refused(
                &label,
                export,
                "an attribute cannot be named type".into(),
            ));
        }
        pairs.push((k, v));
    }
    from_pairs(&label, &pairs, export)
}

/// Why the cache spec `spec` is refused, naming the flag it came with.
fn refused(spec: &str, export: bool, why: String) -> ExportError {
    let flag = if export {
        "--export-cache/--cache-to"
    } else {
        "--import-cache/--cache-from"
    };
    ExportError::Conflict(format!("{flag} {spec:?}: {why}"))
}

/// A cache spec from its `key=value` pairs; `spec` names it in errors.
fn from_pairs(spec: &str, pairs: &[(&str, &str)], export: bool) -> Result<CacheSpec, ExportError> {
    let bad = |m: String| refused(spec, export, m);
    let mut kind = None;
    let mut path = None;
    let mut reference = None;
    let mut out = CacheSpec::new(CacheTarget::Inline);
    let mut image_manifest = None;
    let mut options = Vec::new();
    // The options of s3, azblob and gha caches, checked once the type is known.
    let mut bucket_options: Vec<(&str, &str)> = Vec::new();
    let bool_of = |k: &str, v: &str| match v {
        "true" | "" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(format!("{k}={v:?} is not true or false"))),
    };
    for &(k, v) in pairs {
        if k != "type" {
            options.push(k);
        }
        if BUCKET_OPTIONS.contains(&k) || GHA_OPTIONS.contains(&k) {
            bucket_options.push((k, v));
            continue;
        }
        match k {
            "type" => kind = Some(v.to_string()),
            "dest" if export => path = Some(PathBuf::from(v)),
            "src" if !export => path = Some(PathBuf::from(v)),
            "ref" => reference = Some(v.to_string()),
            "mode" if export => {
                out.mode = match v {
                    "min" => CacheMode::Min,
                    "max" => CacheMode::Max,
                    _ => return Err(bad(format!("mode={v:?}: use min or max"))),
                }
            }
            "compression" if export => {
                out.compression.compression = match Compression::parse(v) {
                    Some(Compression::Uncompressed) | None => {
                        return Err(bad(format!("compression={v:?}: use gzip or zstd")));
                    }
                    Some(c) => c,
                }
            }
            "compression-level" if export => {
                out.compression.level = Some(
                    v.parse()
                        .map_err(|_| bad(format!("compression-level={v:?} is not a number")))?,
                )
            }
            "force-compression" if export => out.compression.force = bool_of(k, v)?,
            "ignore-error" => out.ignore_error = bool_of(k, v)?,
            "digest" if !export => out.digest = Some(v.to_string()),
            "oci-mediatypes" if export => out.oci_mediatypes = bool_of(k, v)?,
            "image-manifest" if export => image_manifest = Some(bool_of(k, v)?),
            other => return Err(bad(format!("unknown or unsupported option {other:?}"))),
        }
    }
    let compression = &out.compression;
    if let Some(level) = compression.level
        && !compression.compression.levels().contains(&level)
    {
        return Err(bad(format!(
            "compression-level={level} is out of range for {}",
            compression.compression
        )));
    }
    if !out.oci_mediatypes {
        if compression.compression == Compression::Zstd {
            return Err(bad(
                "compression=zstd needs oci-mediatypes=true (Docker media types have no zstd)"
                    .into(),
            ));
        }
        if image_manifest == Some(true) {
            return Err(bad("image-manifest=true needs oci-mediatypes=true".into()));
        }
    }
    out.image_manifest = image_manifest.unwrap_or(out.oci_mediatypes);
    out.target = match kind.as_deref() {
        Some("local") => {
            let key = if export { "dest" } else { "src" };
            CacheTarget::Local(path.ok_or_else(|| bad(format!("type=local needs {key}=DIR")))?)
        }
        Some("registry") => CacheTarget::Registry(
            reference.ok_or_else(|| bad("type=registry needs ref=REF".into()))?,
        ),
        // BuildKit's inline cache takes no options: it is the records of the image's own
        // layers, in the image's config. It is imported with type=registry.
        Some("inline") if export => {
            if let Some(option) = options.first() {
                return Err(bad(format!("type=inline takes no options, not {option:?}")));
            }
            CacheTarget::Inline
        }
        Some("inline") => {
            return Err(bad(
                "an inline cache is imported with type=registry,ref=IMAGE".into(),
            ));
        }
        Some("gha") => CacheTarget::Gha(Box::new(parse_gha(&bucket_options).map_err(&bad)?)),
        Some(kind @ ("s3" | "azblob")) => CacheTarget::Bucket(Box::new(
            parse_bucket(kind, &bucket_options, export).map_err(&bad)?,
        )),
        Some(other) => {
            return Err(bad(format!(
                "cache type {other:?} is not supported (use local, registry, inline, s3, azblob or gha)"
            )));
        }
        None => return Err(bad("type= is missing".into())),
    };
    if let Some((k, _)) = bucket_options.first()
        && !matches!(out.target, CacheTarget::Bucket(_) | CacheTarget::Gha(_))
    {
        return Err(bad(format!("unknown or unsupported option {k:?}")));
    }
    Ok(out)
}

/// The options of `type=s3` and `type=azblob`, BuildKit's names.
const BUCKET_OPTIONS: &[&str] = &[
    "bucket",
    "region",
    "prefix",
    "blobs_prefix",
    "manifests_prefix",
    "name",
    "endpoint_url",
    "use_path_style",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "touch_refresh",
    "upload_parallelism",
    "disable_accept_encoding",
    "account_url",
    "account_name",
    "container",
];

/// The value of the last `key=` of `options`.
fn last_value(options: &[(&str, &str)], key: &str) -> Option<String> {
    options
        .iter()
        .rev()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

/// The options of `type=gha`, BuildKit's names.
const GHA_OPTIONS: &[&str] = &[
    "url",
    "url_v2",
    "token",
    "scope",
    "version",
    "timeout",
    "repository",
    "ghtoken",
];

/// The options of a gha cache.
fn parse_gha(options: &[(&str, &str)]) -> Result<GhaCache, String> {
    let get = |key: &str| last_value(options, key);
    if let Some((k, _)) = options.iter().find(|(k, _)| !GHA_OPTIONS.contains(k)) {
        return Err(format!("type=gha has no option {k:?}"));
    }
    let version = match get("version") {
        None => None,
        Some(v) => match v.parse::<u32>() {
            Ok(n @ (1 | 2)) => Some(n),
            _ => return Err(format!("version={v:?}: use 1 or 2")),
        },
    };
    let timeout = match get("timeout") {
        None => std::time::Duration::from_secs(600),
        Some(v) => buildwit_config::Duration::parse(&v)
            .map_err(|e| format!("timeout: {e}"))?
            .as_std(),
    };
    Ok(GhaCache {
        url: get("url"),
        url_v2: get("url_v2"),
        token: get("token").map(Secret),
        scope: get("scope").unwrap_or_else(|| "buildkit".into()),
        version,
        timeout,
    })
}

/// The options of an s3 (`kind`) or azblob cache.
fn parse_bucket(kind: &str, options: &[(&str, &str)], export: bool) -> Result<BucketCache, String> {
    let get = |key: &str| last_value(options, key);
    // Go's strconv.ParseBool, as BuildKit reads these.
    let bool_of = |key: &str| match get(key).as_deref() {
        None => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(format!("{key}={v:?} is not true or false")),
    };
    let s3_only = [
        "bucket",
        "region",
        "endpoint_url",
        "use_path_style",
        "access_key_id",
        "session_token",
        "touch_refresh",
        "disable_accept_encoding",
    ];
    let azure_only = ["account_url", "account_name", "container"];
    let foreign = if kind == "s3" {
        &azure_only[..]
    } else {
        &s3_only[..]
    };
    if let Some((k, _)) = options
        .iter()
        .find(|(k, _)| foreign.contains(k) || !BUCKET_OPTIONS.contains(k))
    {
        return Err(format!("type={kind} has no option {k:?}"));
    }
    if !export && let Some((k, _)) = options.iter().find(|(k, _)| *k == "upload_parallelism") {
        return Err(format!("{k} is an export option"));
    }
    let upload_parallelism = match get("upload_parallelism") {
        None => 4,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "upload_parallelism={v:?} must be a positive integer"
                ));
            }
        },
    };
    let secret = |key: &str| get(key).map(Secret);
    let service = if kind == "s3" {
        let touch_refresh = match get("touch_refresh") {
            None => std::time::Duration::from_secs(24 * 3600),
            Some(v) => buildwit_config::Duration::parse(&v)
                .map_err(|e| format!("touch_refresh: {e}"))?
                .as_std(),
        };
        // The AWS SDK's Accept-Encoding is not sent by this client; the option is read
        // for compatibility with buildx command lines.
        bool_of("disable_accept_encoding")?;
        BucketService::S3 {
            bucket: get("bucket"),
            region: get("region"),
            endpoint_url: get("endpoint_url"),
            use_path_style: bool_of("use_path_style")?,
            access_key_id: get("access_key_id"),
            secret_access_key: secret("secret_access_key"),
            session_token: secret("session_token"),
            touch_refresh,
        }
    } else {
        BucketService::Azure {
            account_url: get("account_url"),
            account_name: get("account_name"),
            secret_access_key: secret("secret_access_key"),
            container: get("container"),
        }
    };
    let names: Vec<String> = match get("name") {
        Some(v) => v.split(';').map(str::to_string).collect(),
        None => vec!["buildkit".into()],
    };
    if names.iter().any(|n| n.is_empty()) {
        return Err("name= has an empty name".into());
    }
    Ok(BucketCache {
        service,
        prefix: get("prefix"),
        blobs_prefix: get("blobs_prefix"),
        manifests_prefix: get("manifests_prefix"),
        names,
        upload_parallelism,
    })
}

/// The cache config JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// Whose keys these are ([`KEY_FORMAT`]); none in BuildKit's caches.
    #[serde(rename = "keyFormat", default)]
    pub key_format: String,
    /// Layers; a parent always comes before its children.
    pub layers: Vec<CacheLayer>,
    /// Records, sorted by key.
    pub records: Vec<CacheRecord>,
}

/// One layer of the cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheLayer {
    /// The blob's digest (a layer of the manifest).
    pub blob: String,
    /// The index of the layer below it, -1 for a bottom layer.
    pub parent: i64,
    /// What an object store cache, which has no manifest beside its config, keeps of the
    /// blob (BuildKit's field names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<LayerAnnotations>,
}

/// A layer blob's media type, diff id and size, in an object store cache's config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerAnnotations {
    /// The blob's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The digest of the uncompressed layer.
    #[serde(rename = "diffID")]
    pub diff_id: String,
    /// The blob's size.
    pub size: u64,
}

/// One cache record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// buildwit's cache key.
    pub digest: String,
    /// The op's description (for `du`).
    #[serde(default)]
    pub description: String,
    /// BuildKit's record type (`regular`, `source.local`, ...).
    #[serde(default, rename = "type")]
    pub record_type: String,
    /// When it was made, Unix seconds.
    #[serde(default, rename = "createdAt")]
    pub created: u64,
    /// For each output of the op, the top layer of its chain (-1: empty).
    pub results: Vec<i64>,
}

/// A record to export: its key and the layers of each output.
#[derive(Clone, Debug)]
pub struct CacheEntry {
    /// The cache key.
    pub key: String,
    /// The op's description.
    pub description: String,
    /// The record type.
    pub record_type: String,
    /// When it was made, Unix seconds.
    pub created: u64,
    /// Each output's layers, bottom first.
    pub outputs: Vec<Vec<Layer>>,
}

/// An exported cache: blobs in the content store and the manifest to name them.
#[derive(Clone, Debug)]
pub struct BuiltCache {
    /// The config JSON.
    pub config: Vec<u8>,
    /// Its descriptor.
    pub config_desc: Descriptor,
    /// The layer blobs (in the content store).
    pub layers: Vec<Descriptor>,
    /// The manifest JSON.
    pub manifest: Vec<u8>,
    /// Its descriptor.
    pub manifest_desc: Descriptor,
    /// The config.
    pub cache: CacheConfig,
    /// The diff id of each layer blob.
    pub diff_ids: HashMap<String, String>,
}

impl BuiltCache {
    /// The config with each layer's media type, diff id and size in it: what an object
    /// store cache keeps under a manifest name.
    pub fn annotated_config(&self) -> Result<Vec<u8>, ExportError> {
        let mut cache = self.cache.clone();
        for layer in &mut cache.layers {
            let desc = self
                .layers
                .iter()
                .find(|d| d.digest == layer.blob)
                .ok_or_else(|| ExportError::InvalidConfig(format!("no blob {}", layer.blob)))?;
            layer.annotations = Some(LayerAnnotations {
                media_type: desc.media_type.clone(),
                diff_id: self.diff_ids[&desc.digest].clone(),
                size: desc.size,
            });
        }
        serde_json::to_vec(&cache)
            .map_err(|e| ExportError::InvalidConfig(format!("cache config: {e}")))
    }
}

/// Read an object store cache's config ([`BuiltCache::annotated_config`]): the blobs it
/// names, from its layers' annotations, and the config, checked.
pub fn parse_annotated_config(
    bytes: &[u8],
    what: &str,
) -> Result<(CacheManifest, CacheConfig), String> {
    let config: CacheConfig = serde_json::from_slice(bytes)
        .map_err(|e| format!("{what}: the cache config is not valid JSON: {e}"))?;
    let mut layers: Vec<(Descriptor, String)> = Vec::new();
    for (i, l) in config.layers.iter().enumerate() {
        let a = l.annotations.as_ref().ok_or_else(|| {
            format!("{what}: layer {i} has no annotations (media type, diff id, size)")
        })?;
        if Compression::of_media_type(&a.media_type).is_none() {
            return Err(format!(
                "{what}: layer {} has media type {:?}, which is not a layer",
                l.blob, a.media_type
            ));
        }
        if !layers.iter().any(|(d, _)| d.digest == l.blob) {
            digest_hex(&l.blob).map_err(|e| format!("{what}: layer {i}: {e}"))?;
            layers.push((
                Descriptor {
                    media_type: a.media_type.clone(),
                    digest: l.blob.clone(),
                    size: a.size,
                },
                a.diff_id.clone(),
            ));
        }
    }
    let manifest = CacheManifest {
        config: Descriptor {
            media_type: CACHE_CONFIG.into(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
        },
        layers,
    };
    check_cache_config(&config, &manifest, what)?;
    Ok((manifest, config))
}

#[derive(Serialize, Deserialize)]
struct ManifestDescriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    annotations: HashMap<String, String>,
}

impl ManifestDescriptor {
    fn descriptor(self) -> Descriptor {
        Descriptor {
            media_type: self.media_type,
            digest: self.digest,
            size: self.size,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    config: ManifestDescriptor,
    layers: Vec<ManifestDescriptor>,
}

#[derive(Serialize, Deserialize)]
struct Index {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    manifests: Vec<ManifestDescriptor>,
}

/// The cache config of `entries`, with `blob_of` naming the blob of each layer (`None`: an
/// empty layer that has no blob, left out of the chain). A layer under the same parent is
/// listed once, however many records share it.
pub fn cache_config(
    entries: &[CacheEntry],
    mut blob_of: impl FnMut(&Layer) -> Result<Option<String>, ExportError>,
) -> Result<CacheConfig, ExportError> {
    let mut config = CacheConfig {
        key_format: KEY_FORMAT.into(),
        ..Default::default()
    };
    // (layer id, parent index) → index in config.layers.
    let mut index: HashMap<(String, i64), i64> = HashMap::new();
    let mut sorted: Vec<&CacheEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    for entry in sorted {
        let mut results = Vec::new();
        for output in &entry.outputs {
            let mut parent = -1;
            for layer in output {
                if let Some(&i) = index.get(&(layer.id.clone(), parent)) {
                    parent = i;
                    continue;
                }
                let Some(blob) = blob_of(layer)? else {
                    continue;
                };
                config.layers.push(CacheLayer {
                    blob,
                    parent,
                    annotations: None,
                });
                let i = config.layers.len() as i64 - 1;
                index.insert((layer.id.clone(), parent), i);
                parent = i;
            }
            results.push(parent);
        }
        config.records.push(CacheRecord {
            digest: entry.key.clone(),
            description: entry.description.clone(),
            record_type: entry.record_type.clone(),
            created: entry.created,
            results,
        });
    }
    Ok(config)
}

/// Make the blobs of `spec`'s `entries` (reusing blobs made before) and the cache's config
/// and manifest (an index with `image-manifest=false`).
pub fn build_cache(
    content: &ContentStore,
    entries: &[CacheEntry],
    spec: &CacheSpec,
) -> Result<BuiltCache, ExportError> {
    let mut manifest_layers: Vec<ManifestDescriptor> = Vec::new();
    let mut diff_ids: HashMap<String, String> = HashMap::new();
    let mut blobs: HashMap<String, String> = HashMap::new();
    let mut in_manifest: BTreeSet<String> = BTreeSet::new();
    let config = cache_config(entries, |layer| {
        if let Some(digest) = blobs.get(&layer.id) {
            return Ok(Some(digest.clone()));
        }
        let (desc, diff_id) = layer_blob_with(content, layer, &spec.compression)
            .map_err(|e| ExportError::io(format!("compressing layer {}", layer.id), e))?;
        if in_manifest.insert(desc.digest.clone()) {
            diff_ids.insert(desc.digest.clone(), diff_id.clone());
            manifest_layers.push(ManifestDescriptor {
                media_type: spec
                    .compression
                    .compression
                    .layer_media_type(spec.oci_mediatypes)
                    .into(),
                digest: desc.digest.clone(),
                size: desc.size,
                annotations: HashMap::from([(ANNOTATION_UNCOMPRESSED.to_string(), diff_id)]),
            });
        }
        blobs.insert(layer.id.clone(), desc.digest.clone());
        Ok(Some(desc.digest))
    })?;
    let config_bytes = serde_json::to_vec(&config)
        .map_err(|e| ExportError::InvalidConfig(format!("cache config: {e}")))?;
    let config_desc = Descriptor {
        media_type: CACHE_CONFIG.into(),
        digest: sha256_digest(&config_bytes),
        size: config_bytes.len() as u64,
    };
    let layers: Vec<Descriptor> = manifest_layers
        .iter()
        .map(|d| Descriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
        })
        .collect();
    let config_entry = ManifestDescriptor {
        media_type: CACHE_CONFIG.into(),
        digest: config_desc.digest.clone(),
        size: config_desc.size,
        annotations: HashMap::new(),
    };
    let (media_type, manifest_bytes) = if spec.image_manifest {
        let manifest = Manifest {
            schema_version: 2,
            media_type: OCI_MANIFEST.into(),
            config: config_entry,
            layers: manifest_layers,
        };
        (OCI_MANIFEST, serde_json::to_vec(&manifest))
    } else {
        // BuildKit's older layout: an index whose entries are the layers and the config.
        let media_type = if spec.oci_mediatypes {
            OCI_INDEX
        } else {
            DOCKER_MANIFEST_LIST
        };
        let mut manifests = manifest_layers;
        manifests.push(config_entry);
        let index = Index {
            schema_version: 2,
            media_type: media_type.into(),
            manifests,
        };
        (media_type, serde_json::to_vec(&index))
    };
    let manifest_bytes =
        manifest_bytes.map_err(|e| ExportError::InvalidConfig(format!("cache manifest: {e}")))?;
    Ok(BuiltCache {
        manifest_desc: Descriptor {
            media_type: media_type.into(),
            digest: sha256_digest(&manifest_bytes),
            size: manifest_bytes.len() as u64,
        },
        config: config_bytes,
        config_desc,
        layers,
        manifest: manifest_bytes,
        cache: config,
        diff_ids,
    })
}

/// Take the lock that serialises writers of the cache directory `dest` (an export, or a
/// client writing what buildwitd exported); held while the file lives.
pub fn lock_cache_dir(dest: &Path) -> Result<File, ExportError> {
    use std::os::unix::fs::OpenOptionsExt;
    let what = format!("locking {}", dest.display());
    // Never through a symlink: it would truncate whatever the link names.
    let lock = File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(dest.join(LOCK_FILE))
        .map_err(|e| ExportError::io(what.clone(), e))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| ExportError::io(what, e.into()))?;
    Ok(lock)
}

/// Write a cache into an OCI image layout directory: its blobs (those present are kept),
/// then `index.json` naming this cache's manifest (tagged `latest`) and the previous
/// versions up to [`KEPT_VERSIONS`], then the blobs nothing names any more are removed. A
/// lock file in the directory serialises exports. Returns what was written.
pub fn write_cache_dir(
    content: &ContentStore,
    cache: &BuiltCache,
    dest: &Path,
) -> Result<Written, ExportError> {
    let what = |m: &str| format!("{m} {}", dest.display());
    let blobs = dest.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(|e| ExportError::io(what("creating"), e))?;
    let _lock = lock_cache_dir(dest)?;

    let blob_path = |digest: &str| {
        digest_hex(digest)
            .map(|hex| blobs.join(hex))
            .map_err(|e| ExportError::io(what("writing"), e))
    };
    let mut written = Written::default();
    for layer in &cache.layers {
        let path = blob_path(&layer.digest)?;
        if path.exists() {
            written.present += 1;
            continue;
        }
        let src = content
            .path(&layer.digest)
            .map_err(|e| ExportError::io(what("writing"), e))?;
        let mut out = AtomicFile::create(&path)?;
        io::copy(
            &mut File::open(&src)
                .map_err(|e| ExportError::io(format!("reading {}", src.display()), e))?,
            &mut out,
        )
        .map_err(|e| ExportError::io(what("writing"), e))?;
        out.commit()?;
        written.blobs += 1;
        written.bytes += layer.size;
    }
    let config_path = blob_path(&cache.config_desc.digest)?;
    if config_path.exists() {
        written.present += 1;
    } else {
        write_atomic(&config_path, &cache.config)?;
        written.blobs += 1;
        written.bytes += cache.config.len() as u64;
    }
    write_atomic(&blob_path(&cache.manifest_desc.digest)?, &cache.manifest)?;
    written.bytes += cache.manifest.len() as u64;
    write_atomic(&dest.join("oci-layout"), OCI_LAYOUT)?;

    // The new version first, then the ones before it that are still whole.
    let mut manifests = vec![ManifestDescriptor {
        media_type: cache.manifest_desc.media_type.clone(),
        digest: cache.manifest_desc.digest.clone(),
        size: cache.manifest_desc.size,
        annotations: HashMap::from([(ANNOTATION_REF_NAME.to_string(), "latest".to_string())]),
    }];
    let mut keep: BTreeSet<PathBuf> = BTreeSet::new();
    keep.insert(blob_path(&cache.manifest_desc.digest)?);
    keep.insert(blob_path(&cache.config_desc.digest)?);
    for layer in &cache.layers {
        keep.insert(blob_path(&layer.digest)?);
    }
    let previous: Vec<ManifestDescriptor> = fs::read(dest.join("index.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Index>(&b).ok())
        .map(|i| i.manifests)
        .unwrap_or_default();
    for mut old in previous {
        if manifests.len() >= KEPT_VERSIONS {
            break;
        }
        if manifests.iter().any(|m| m.digest == old.digest) {
            continue;
        }
        let Some(paths) = referenced_blobs(dest, &old.digest) else {
            continue;
        };
        old.annotations.remove(ANNOTATION_REF_NAME);
        keep.extend(paths);
        manifests.push(old);
    }
    let index = Index {
        schema_version: 2,
        media_type: OCI_INDEX.into(),
        manifests,
    };
    let bytes = serde_json::to_vec(&index)
        .map_err(|e| ExportError::InvalidConfig(format!("cache index: {e}")))?;
    write_atomic(&dest.join("index.json"), &bytes)?;

    // Only now that index.json names the new manifest: drop what no kept version uses
    // (BuildKit issue #1896: local cache directories grew without bound).
    for e in fs::read_dir(&blobs).map_err(|e| ExportError::io(what("cleaning"), e))? {
        let path = e.map_err(|e| ExportError::io(what("cleaning"), e))?.path();
        if !keep.contains(&path) {
            fs::remove_file(&path)
                .map_err(|e| ExportError::io(format!("removing {}", path.display()), e))?;
        }
    }
    Ok(written)
}

/// The blob files a manifest (or index) of a cache directory uses, itself included; `None`
/// when it or one of them is missing, so that version cannot be imported any more.
fn referenced_blobs(dir: &Path, digest: &str) -> Option<Vec<PathBuf>> {
    #[derive(Deserialize)]
    struct Refs {
        config: Option<ManifestDescriptor>,
        #[serde(default)]
        layers: Vec<ManifestDescriptor>,
        #[serde(default)]
        manifests: Vec<ManifestDescriptor>,
    }
    let path = cache_dir_blob(dir, digest).ok()?;
    let refs: Refs = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
    let mut paths = vec![path];
    for d in refs
        .config
        .iter()
        .chain(&refs.layers)
        .chain(&refs.manifests)
    {
        let p = cache_dir_blob(dir, &d.digest).ok()?;
        if !p.exists() {
            return None;
        }
        paths.push(p);
    }
    Some(paths)
}

/// What an export wrote to its destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Blobs written (layers and the config).
    pub blobs: usize,
    /// Blobs the destination had already.
    pub present: usize,
    /// Bytes written, config and manifest included.
    pub bytes: u64,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let mut f = AtomicFile::create(path)?;
    io::Write::write_all(&mut f, bytes)
        .map_err(|e| ExportError::io(format!("writing {}", path.display()), e))?;
    f.commit()
}

/// A cache manifest as read back: the config digest and the layer blobs with diff ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheManifest {
    /// The config blob.
    pub config: Descriptor,
    /// Each layer blob and its diff id.
    pub layers: Vec<(Descriptor, String)>,
}

/// What a manifest named as a cache source turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheSource {
    /// A cache (an image manifest with a cache config, or BuildKit's older index layout).
    Cache(CacheManifest),
    /// An image: its config may hold an inline cache (see [`inline_cache`]).
    Image {
        /// Its config blob.
        config: Descriptor,
        /// Its layers, bottom first.
        layers: Vec<Descriptor>,
    },
    /// An image index: the platform's image may hold an inline cache.
    ImageIndex,
}

/// Parse a cache manifest; `what` names the cache in errors.
pub fn parse_cache_manifest(bytes: &[u8], what: &str) -> Result<CacheSource, String> {
    #[derive(Deserialize)]
    struct Any {
        config: Option<ManifestDescriptor>,
        #[serde(default)]
        layers: Vec<ManifestDescriptor>,
        manifests: Option<Vec<ManifestDescriptor>>,
    }
    let m: Any = serde_json::from_slice(bytes)
        .map_err(|e| format!("{what}: the manifest is not valid JSON: {e}"))?;
    let (config, layers) = match (m.config, m.manifests) {
        (Some(config), _) if config.media_type == CACHE_CONFIG => (config, m.layers),
        (Some(config), _) if [OCI_CONFIG, DOCKER_CONFIG].contains(&config.media_type.as_str()) => {
            return Ok(CacheSource::Image {
                config: config.descriptor(),
                layers: m.layers.into_iter().map(|l| l.descriptor()).collect(),
            });
        }
        (Some(config), _) => {
            return Err(format!(
                "{what}: not a build cache (its config has media type {:?}, not {CACHE_CONFIG})",
                config.media_type
            ));
        }
        (None, Some(mut entries)) => {
            let Some(i) = entries.iter().position(|d| d.media_type == CACHE_CONFIG) else {
                return Ok(CacheSource::ImageIndex);
            };
            let config = entries.remove(i);
            (config, entries)
        }
        (None, None) => return Err(format!("{what}: neither a manifest nor an index")),
    };
    let mut cache_layers = Vec::new();
    for l in layers {
        let diff_id = l
            .annotations
            .get(ANNOTATION_UNCOMPRESSED)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{what}: layer {} has no {ANNOTATION_UNCOMPRESSED} annotation",
                    l.digest
                )
            })?;
        if Compression::of_media_type(&l.media_type).is_none() {
            return Err(format!(
                "{what}: layer {} has media type {:?}, which is not a layer",
                l.digest, l.media_type
            ));
        }
        cache_layers.push((l.descriptor(), diff_id));
    }
    Ok(CacheSource::Cache(CacheManifest {
        config: config.descriptor(),
        layers: cache_layers,
    }))
}

/// The inline cache in an image's config (`config_bytes`), with the image's `layers`:
/// the layers of the cache are the image's, their diff ids those of its `rootfs`.
pub fn inline_cache(
    config_bytes: &[u8],
    config: &Descriptor,
    layers: &[Descriptor],
    what: &str,
) -> Result<(CacheManifest, CacheConfig), String> {
    #[derive(Deserialize)]
    struct Rootfs {
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    #[derive(Deserialize)]
    struct ImageConfig {
        rootfs: Option<Rootfs>,
        #[serde(rename = "moby.buildkit.cache.v0")]
        cache: Option<String>,
    }
    let image: ImageConfig = serde_json::from_slice(config_bytes)
        .map_err(|e| format!("{what}: the image config is not valid JSON: {e}"))?;
    let encoded = image.cache.ok_or_else(|| {
        format!("{what}: the image has no inline cache (export one with --cache-to type=inline)")
    })?;
    let diff_ids = image.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() != layers.len() {
        return Err(format!(
            "{what}: the image has {} layers but its config lists {} diff ids",
            layers.len(),
            diff_ids.len()
        ));
    }
    let manifest = CacheManifest {
        config: config.clone(),
        layers: layers.iter().cloned().zip(diff_ids).collect(),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map_err(|e| format!("{what}: the inline cache is not base64: {e}"))?;
    let config = parse_cache_config(&bytes, &manifest, what)?;
    Ok((manifest, config))
}

/// The value of the image config's inline cache key ([`INLINE_CACHE_KEY`]) for `entries`,
/// whose layers are the image's: `blobs` maps a layer id to its blob in the image (`None`:
/// empty, no blob). Entries with a layer the image lacks are left out.
pub fn inline_cache_value(
    entries: &[CacheEntry],
    blobs: &HashMap<String, Option<String>>,
) -> Result<String, ExportError> {
    let usable: Vec<CacheEntry> = entries
        .iter()
        .filter(|e| {
            e.outputs
                .iter()
                .flatten()
                .all(|l| blobs.contains_key(&l.id))
        })
        .cloned()
        .collect();
    let config = cache_config(&usable, |layer| Ok(blobs[&layer.id].clone()))?;
    let json = serde_json::to_vec(&config)
        .map_err(|e| ExportError::InvalidConfig(format!("inline cache: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(json))
}

/// Parse and check a cache config: buildwit's key format, parents before children, blobs
/// the manifest has, results naming layers.
pub fn parse_cache_config(
    bytes: &[u8],
    manifest: &CacheManifest,
    what: &str,
) -> Result<CacheConfig, String> {
    let config: CacheConfig = serde_json::from_slice(bytes)
        .map_err(|e| format!("{what}: the cache config is not valid JSON: {e}"))?;
    check_cache_config(&config, manifest, what)?;
    Ok(config)
}

/// Check a cache config against the blobs of its manifest.
fn check_cache_config(
    config: &CacheConfig,
    manifest: &CacheManifest,
    what: &str,
) -> Result<(), String> {
    if config.key_format != KEY_FORMAT {
        return Err(format!(
            "{what}: its cache keys are {:?}, not {KEY_FORMAT:?}; only caches exported by buildwit can be imported (BuildKit's keys differ)",
            config.key_format
        ));
    }
    for (i, l) in config.layers.iter().enumerate() {
        if l.parent >= i as i64 || l.parent < -1 {
            return Err(format!("{what}: layer {i} has parent {}", l.parent));
        }
        if !manifest.layers.iter().any(|(d, _)| d.digest == l.blob) {
            return Err(format!(
                "{what}: layer {i} names blob {}, which the manifest lacks",
                l.blob
            ));
        }
    }
    for r in &config.records {
        if r.results
            .iter()
            .any(|&n| n < -1 || n >= config.layers.len() as i64)
        {
            return Err(format!(
                "{what}: record {} names a layer that does not exist",
                r.digest
            ));
        }
    }
    Ok(())
}

/// The cache manifest of a local cache directory: `digest`, else the entry tagged
/// `latest`, else the only entry of `index.json`. Returns its bytes.
pub fn read_cache_dir_manifest(dir: &Path, digest: Option<&str>) -> Result<Vec<u8>, String> {
    let what = format!("local cache {}", dir.display());
    let index_path = dir.join("index.json");
    let bytes = fs::read(&index_path).map_err(|e| format!("{what}: reading index.json: {e}"))?;
    let index: Index =
        serde_json::from_slice(&bytes).map_err(|e| format!("{what}: index.json: {e}"))?;
    let entry = match digest {
        Some(d) => index.manifests.iter().find(|m| m.digest == d),
        None => index
            .manifests
            .iter()
            .find(|m| m.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some("latest"))
            .or(if index.manifests.len() == 1 {
                index.manifests.first()
            } else {
                None
            }),
    }
    .ok_or_else(|| match digest {
        Some(d) => format!("{what}: index.json has no manifest {d}"),
        None => format!("{what}: index.json has no manifest tagged latest (name one with digest=)"),
    })?;
    let bytes = fs::read(cache_dir_blob(dir, &entry.digest)?)
        .map_err(|e| format!("{what}: reading manifest {}: {e}", entry.digest))?;
    if sha256_digest(&bytes) != entry.digest {
        return Err(format!("{what}: manifest {} is corrupt", entry.digest));
    }
    Ok(bytes)
}

/// Where a blob of a local cache directory is.
pub fn cache_dir_blob(dir: &Path, digest: &str) -> Result<PathBuf, String> {
    let hex = digest_hex(digest).map_err(|e| format!("blob {digest:?}: {e}"))?;
    Ok(dir.join("blobs").join("sha256").join(hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_and_azblob_specs_with_buildkits_options() {
        let s = parse_cache_spec(
            "type=s3,region=eu-west-1,bucket=b,name=app;app-latest,prefix=team/,use_path_style=true,endpoint_url=http://127.0.0.1:9000,secret_access_key=k,access_key_id=i,touch_refresh=1h30m,upload_parallelism=8,mode=max",
            true,
        )
        .unwrap();
        assert_eq!(s.mode, CacheMode::Max);
        let CacheTarget::Bucket(b) = &s.target else {
            panic!("{s:?}")
        };
        assert_eq!(b.names, ["app", "app-latest"]);
        assert_eq!(b.prefix.as_deref(), Some("team/"));
        assert_eq!(b.upload_parallelism, 8);
        let BucketService::S3 {
            bucket,
            use_path_style,
            touch_refresh,
            secret_access_key,
            ..
        } = &b.service
        else {
            panic!("{b:?}")
        };
        assert_eq!(bucket.as_deref(), Some("b"));
        assert!(use_path_style);
        assert_eq!(touch_refresh.as_secs(), 5400);
        // Secrets stay out of debug output.
        assert!(!format!("{s:?}").contains("secret_access_key: Some(Secret(\"k"));
        assert_eq!(secret_access_key.as_ref().unwrap().0, "k");
        assert_eq!(s.describe(), "s3 cache b prefix team/");

        // What is left out is read from the daemon's environment when used.
        let s = parse_cache_spec("type=s3", false).unwrap();
        let CacheTarget::Bucket(b) = &s.target else {
            panic!("{s:?}")
        };
        assert_eq!(b.names, ["buildkit"]);
        assert!(matches!(&b.service, BucketService::S3 { bucket: None, .. }));

        let s = parse_cache_spec(
            "type=azblob,account_url=https://acct.blob.core.windows.net,container=c,name=x",
            false,
        )
        .unwrap();
        assert_eq!(s.describe(), "azblob cache c");

        for (spec, error) in [
            ("type=s3,container=c", "type=s3 has no option \"container\""),
            (
                "type=azblob,bucket=b",
                "type=azblob has no option \"bucket\"",
            ),
            ("type=s3,upload_parallelism=0", "must be a positive integer"),
            ("type=s3,touch_refresh=soon", "invalid duration"),
            ("type=s3,use_path_style=yes", "is not true or false"),
            ("type=s3,name=a;", "empty name"),
            (
                "type=local,dest=/x,bucket=b",
                "unknown or unsupported option \"bucket\"",
            ),
        ] {
            let e = parse_cache_spec(spec, true).unwrap_err().to_string();
            assert!(e.contains(error), "{spec}: {e}");
        }
        let e = parse_cache_spec("type=s3,upload_parallelism=2", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("export option"), "{e}");

        let s = parse_cache_spec(
            "type=gha,url_v2=https://results/,token=a.b.c,scope=app,timeout=30s,mode=max",
            true,
        )
        .unwrap();
        let CacheTarget::Gha(g) = &s.target else {
            panic!("{s:?}")
        };
        assert_eq!(g.scope, "app");
        assert_eq!(g.timeout.as_secs(), 30);
        assert_eq!(g.url_v2.as_deref(), Some("https://results/"));
        assert_eq!(s.describe(), "gha cache app");
        for (spec, error) in [
            ("type=gha,bucket=b", "type=gha has no option \"bucket\""),
            ("type=gha,version=3", "use 1 or 2"),
            ("type=s3,scope=x", "type=s3 has no option \"scope\""),
        ] {
            let e = parse_cache_spec(spec, true).unwrap_err().to_string();
            assert!(e.contains(error), "{spec}: {e}");
        }
    }

    #[test]
    fn parses_buildx_cache_specs() {
        let s = parse_cache_spec("type=local,dest=/tmp/c,mode=max,compression=zstd", true).unwrap();
        assert_eq!(s.target, CacheTarget::Local("/tmp/c".into()));
        assert_eq!(s.mode, CacheMode::Max);
        assert_eq!(s.compression.compression, Compression::Zstd);
        let s = parse_cache_spec(
            "type=registry,ref=localhost:5000/a:cache,ignore-error=true",
            true,
        )
        .unwrap();
        assert_eq!(
            s.target,
            CacheTarget::Registry("localhost:5000/a:cache".into())
        );
        assert!(s.ignore_error);
        assert_eq!(s.mode, CacheMode::Min);
        let s = parse_cache_spec("user/app:cache", false).unwrap();
        assert_eq!(s.target, CacheTarget::Registry("user/app:cache".into()));
        let s = parse_cache_spec("type=local,src=/c,digest=sha256:ab", false).unwrap();
        assert_eq!(s.digest.as_deref(), Some("sha256:ab"));

        let e = parse_cache_spec("type=local,src=/c", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"src\""), "{e}");
        let e = parse_cache_spec("type=local,dest=/c,mode=all", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode=\"all\""), "{e}");
        let e = parse_cache_spec("type=gcs", true).unwrap_err().to_string();
        assert!(e.contains("\"gcs\" is not supported"), "{e}");
        let e = parse_cache_spec("type=registry", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ref=REF"), "{e}");

        let s = parse_cache_spec("type=inline", true).unwrap();
        assert_eq!(s.target, CacheTarget::Inline);
        let e = parse_cache_spec("type=inline,mode=max", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes no options"), "{e}");
        let e = parse_cache_spec("type=inline", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("type=registry,ref=IMAGE"), "{e}");

        // Media types: an image manifest by default; the older index on request; Docker's
        // types imply the index.
        let s = parse_cache_spec("type=local,dest=/c", true).unwrap();
        assert!(s.oci_mediatypes && s.image_manifest);
        let s = parse_cache_spec("type=local,dest=/c,image-manifest=false", true).unwrap();
        assert!(s.oci_mediatypes && !s.image_manifest);
        let s = parse_cache_spec("type=local,dest=/c,oci-mediatypes=false", true).unwrap();
        assert!(!s.oci_mediatypes && !s.image_manifest);
        for bad in [
            "type=local,dest=/c,oci-mediatypes=false,image-manifest=true",
            "type=local,dest=/c,oci-mediatypes=false,compression=zstd",
        ] {
            let e = parse_cache_spec(bad, true).unwrap_err().to_string();
            assert!(e.contains("needs oci-mediatypes=true"), "{bad}: {e}");
        }
    }

    #[test]
    fn older_layouts_and_inline_caches_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let content = ContentStore::open(tmp.path().join("content")).unwrap();
        let dir = tmp.path().join("layers").join("l").join("diff");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("f"), "x").unwrap();
        let layer = Layer {
            id: "l".into(),
            dir,
        };
        let entries = [CacheEntry {
            key: "k".into(),
            description: "step".into(),
            record_type: "regular".into(),
            created: 1,
            outputs: vec![vec![layer.clone()]],
        }];

        // image-manifest=false with Docker media types: a manifest list of layers + config.
        let spec = parse_cache_spec("type=local,dest=/c,oci-mediatypes=false", true).unwrap();
        let built = build_cache(&content, &entries, &spec).unwrap();
        assert_eq!(built.manifest_desc.media_type, DOCKER_MANIFEST_LIST);
        let CacheSource::Cache(m) = parse_cache_manifest(&built.manifest, "t").unwrap() else {
            panic!("not read as a cache");
        };
        assert_eq!(m.config, built.config_desc);
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].0.media_type, crate::DOCKER_LAYER_GZIP);
        parse_cache_config(&built.config, &m, "t").unwrap();

        // Inline: the cache config in an image config, naming the image's layers.
        let blob = layer_blob_with(&content, &layer, &LayerCompression::default()).unwrap();
        let value = inline_cache_value(
            &entries,
            &HashMap::from([("l".to_string(), Some(blob.0.digest.clone()))]),
        )
        .unwrap();
        let image_config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [blob.1]},
            INLINE_CACHE_KEY: value,
        })
        .to_string();
        let config_desc = Descriptor {
            media_type: OCI_CONFIG.into(),
            digest: sha256_digest(image_config.as_bytes()),
            size: image_config.len() as u64,
        };
        let (m, config) = inline_cache(
            image_config.as_bytes(),
            &config_desc,
            std::slice::from_ref(&blob.0),
            "t",
        )
        .unwrap();
        assert_eq!(m.layers, vec![(blob.0, blob.1)]);
        assert_eq!(config.records[0].digest, "k");
        assert_eq!(config.records[0].results, vec![0]);
        let plain = r#"{"architecture":"amd64","os":"linux","rootfs":{"diff_ids":[]}}"#;
        let e = inline_cache(plain.as_bytes(), &config_desc, &[], "t").unwrap_err();
        assert!(e.contains("has no inline cache"), "{e}");
    }

    #[test]
    fn cache_round_trips_and_rewrites_drop_old_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let content = ContentStore::open(tmp.path().join("content")).unwrap();
        let layer = |id: &str, file: &str| {
            let dir = tmp.path().join("layers").join(id).join("diff");
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(file), id).unwrap();
            Layer { id: id.into(), dir }
        };
        let (a, b, c) = (layer("a", "x"), layer("b", "y"), layer("c", "z"));
        let entry = |key: &str, layers: Vec<Layer>| CacheEntry {
            key: key.into(),
            description: format!("step {key}"),
            record_type: "regular".into(),
            created: 1,
            outputs: vec![layers],
        };
        let entries = vec![
            entry("k2", vec![a.clone(), b.clone()]),
            entry("k1", vec![a.clone()]),
        ];
        let spec = CacheSpec::new(CacheTarget::Local(tmp.path().join("cache")));
        let built = build_cache(&content, &entries, &spec).unwrap();
        // `a` is one layer under both records, stored once.
        assert_eq!(built.layers.len(), 2);
        let dest = tmp.path().join("cache");
        write_cache_dir(&content, &built, &dest).unwrap();

        let bytes = read_cache_dir_manifest(&dest, None).unwrap();
        assert_eq!(bytes, built.manifest);
        let CacheSource::Cache(manifest) = parse_cache_manifest(&bytes, "test").unwrap() else {
            panic!("not a cache manifest");
        };
        assert_eq!(manifest.layers.len(), 2);
        let config_bytes =
            fs::read(cache_dir_blob(&dest, &manifest.config.digest).unwrap()).unwrap();
        let config = parse_cache_config(&config_bytes, &manifest, "test").unwrap();
        assert_eq!(config.records[0].digest, "k1");
        assert_eq!(config.records[1].digest, "k2");
        let top = config.records[1].results[0] as usize;
        assert_eq!(config.layers[top].parent, config.records[0].results[0]);

        let count = || fs::read_dir(dest.join("blobs/sha256")).unwrap().count();
        assert_eq!(count(), 4, "two layers, config, manifest");
        // Exporting it again writes no blob.
        let again = write_cache_dir(&content, &built, &dest).unwrap();
        assert_eq!((again.blobs, again.present), (0, 3));
        assert_eq!(count(), 4);

        // A new version: the old one stays importable by digest= ...
        let other = build_cache(&content, &[entry("k3", vec![c])], &spec).unwrap();
        write_cache_dir(&content, &other, &dest).unwrap();
        assert_eq!(count(), 7);
        let latest = || read_cache_dir_manifest(&dest, None).unwrap();
        assert_eq!(latest(), other.manifest);
        let old = Some(built.manifest_desc.digest.as_str());
        assert_eq!(read_cache_dir_manifest(&dest, old).unwrap(), built.manifest);
        // ... until KEPT_VERSIONS newer ones push it out, and its blobs go with it.
        assert_eq!(KEPT_VERSIONS, 3);
        // Three blobs each; the fourth version drops the first's four.
        for (key, blobs) in [("k4", 10), ("k5", 9)] {
            let v = build_cache(&content, &[entry(key, vec![layer(key, "w")])], &spec).unwrap();
            write_cache_dir(&content, &v, &dest).unwrap();
            assert_eq!(count(), blobs);
        }
        let e = read_cache_dir_manifest(&dest, old).unwrap_err();
        assert!(e.contains("has no manifest"), "{e}");

        // Two exports to one directory at once: the lock keeps them apart, and both are
        // whole versions afterwards.
        std::thread::scope(|t| {
            t.spawn(|| write_cache_dir(&content, &built, &dest).unwrap());
            t.spawn(|| write_cache_dir(&content, &other, &dest).unwrap());
        });
        let now = latest();
        assert!(now == built.manifest || now == other.manifest);
        for c in [&built, &other] {
            let digest = Some(c.manifest_desc.digest.as_str());
            assert_eq!(read_cache_dir_manifest(&dest, digest).unwrap(), c.manifest);
        }

        // Someone else's cache config is refused by name.
        let foreign = br#"{"keyFormat":"","layers":[],"records":[]}"#;
        let e = parse_cache_config(foreign, &manifest, "test").unwrap_err();
        assert!(e.contains("only caches exported by buildwit"), "{e}");
    }
}
