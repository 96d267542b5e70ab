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

use buildwit_worker::content::{digest_hex, sha256_digest};
use buildwit_worker::{ContentStore, Descriptor, Layer};
use serde::{Deserialize, Serialize};

use crate::ExportError;
use crate::atomic::AtomicFile;
use crate::layer::{Compression, LayerCompression, layer_blob_with};
use crate::layout::{OCI_INDEX, OCI_MANIFEST};

/// Media type of the cache config (BuildKit's).
pub const CACHE_CONFIG: &str = "application/vnd.buildkit.cacheconfig.v0";
/// The key format this build of buildwit writes and reads.
pub const KEY_FORMAT: &str = "buildwit.v1";
/// Annotation of a layer descriptor: the digest of its uncompressed tar.
const ANNOTATION_UNCOMPRESSED: &str = "containerd.io/uncompressed";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Held while a local cache directory is written, so two exports cannot interleave.
const LOCK_FILE: &str = ".buildwit-cache.lock";

/// Where a cache goes or comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheTarget {
    /// An OCI image layout directory.
    Local(PathBuf),
    /// An image reference in a registry.
    Registry(String),
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
}

impl CacheSpec {
    /// Where it goes, for messages.
    pub fn describe(&self) -> String {
        match &self.target {
            CacheTarget::Local(p) => format!("local cache {}", p.display()),
            CacheTarget::Registry(r) => format!("registry cache {r}"),
        }
    }
}

/// Parse a buildx cache spec: `type=local,dest=DIR`, `type=registry,ref=REF`, or a bare
/// reference (a registry cache, as buildx reads `--cache-from user/app:cache`).
/// `export`: the spec is for `--cache-to` (`dest=`) rather than `--cache-from` (`src=`).
pub fn parse_cache_spec(spec: &str, export: bool) -> Result<CacheSpec, ExportError> {
    let flag = if export {
        "--export-cache/--cache-to"
    } else {
        "--import-cache/--cache-from"
    };
    let bad = |m: String| ExportError::Conflict(format!("{flag} {spec:?}: {m}"));
    if !spec.contains('=') {
        if spec.trim().is_empty() {
            return Err(bad("empty cache spec".into()));
        }
        return Ok(CacheSpec {
            target: CacheTarget::Registry(spec.trim().to_string()),
            mode: CacheMode::Min,
            compression: LayerCompression::default(),
            ignore_error: false,
            digest: None,
        });
    }
    let mut kind = None;
    let mut path = None;
    let mut reference = None;
    let mut mode = CacheMode::Min;
    let mut compression = LayerCompression::default();
    let mut ignore_error = false;
    let mut digest = None;
    let bool_of = |k: &str, v: &str| match v {
        "true" | "" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(format!("{k}={v:?} is not true or false"))),
    };
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k.trim() {
            "type" => kind = Some(v.to_string()),
            "dest" if export => path = Some(PathBuf::from(v)),
            "src" if !export => path = Some(PathBuf::from(v)),
            "ref" => reference = Some(v.to_string()),
            "mode" if export => {
                mode = match v {
                    "min" => CacheMode::Min,
                    "max" => CacheMode::Max,
                    _ => return Err(bad(format!("mode={v:?}: use min or max"))),
                }
            }
            "compression" if export => {
                compression.compression = match Compression::parse(v) {
                    Some(Compression::Uncompressed) | None => {
                        return Err(bad(format!("compression={v:?}: use gzip or zstd")));
                    }
                    Some(c) => c,
                }
            }
            "compression-level" if export => {
                compression.level = Some(
                    v.parse()
                        .map_err(|_| bad(format!("compression-level={v:?} is not a number")))?,
                )
            }
            "force-compression" if export => compression.force = bool_of(k, v)?,
            "ignore-error" => ignore_error = bool_of(k, v)?,
            "digest" if !export => digest = Some(v.to_string()),
            // Our export is always an OCI image manifest: these are what it is already.
            "oci-mediatypes" | "image-manifest" if export && bool_of(k, v)? => {}
            other => return Err(bad(format!("unknown or unsupported option {other:?}"))),
        }
    }
    if let Some(level) = compression.level
        && !compression.compression.levels().contains(&level)
    {
        return Err(bad(format!(
            "compression-level={level} is out of range for {}",
            compression.compression
        )));
    }
    let target = match kind.as_deref() {
        Some("local") => {
            let key = if export { "dest" } else { "src" };
            CacheTarget::Local(path.ok_or_else(|| bad(format!("type=local needs {key}=DIR")))?)
        }
        Some("registry") => CacheTarget::Registry(
            reference.ok_or_else(|| bad("type=registry needs ref=REF".into()))?,
        ),
        Some(other) => {
            return Err(bad(format!(
                "cache type {other:?} is not supported (use local or registry)"
            )));
        }
        None => return Err(bad("type= is missing".into())),
    };
    Ok(CacheSpec {
        target,
        mode,
        compression,
        ignore_error,
        digest,
    })
}

/// The cache config JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// Whose keys these are ([`KEY_FORMAT`]).
    #[serde(rename = "keyFormat")]
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

/// Make the blobs of `entries` (reusing blobs made before) and the cache's config and
/// manifest. Layers shared by several records are stored once.
pub fn build_cache(
    content: &ContentStore,
    entries: &[CacheEntry],
    compression: &LayerCompression,
) -> Result<BuiltCache, ExportError> {
    let mut config = CacheConfig {
        key_format: KEY_FORMAT.into(),
        ..Default::default()
    };
    let mut manifest_layers: Vec<ManifestDescriptor> = Vec::new();
    // (layer id, parent index) → index in config.layers; layer id → its blob.
    let mut index: HashMap<(String, i64), i64> = HashMap::new();
    let mut blobs: HashMap<String, Descriptor> = HashMap::new();
    let mut in_manifest: BTreeSet<String> = BTreeSet::new();
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
                let desc = match blobs.get(&layer.id) {
                    Some(d) => d.clone(),
                    None => {
                        let (desc, diff_id) = layer_blob_with(content, layer, compression)
                            .map_err(|e| {
                                ExportError::io(format!("compressing layer {}", layer.id), e)
                            })?;
                        if in_manifest.insert(desc.digest.clone()) {
                            manifest_layers.push(ManifestDescriptor {
                                media_type: desc.media_type.clone(),
                                digest: desc.digest.clone(),
                                size: desc.size,
                                annotations: HashMap::from([(
                                    ANNOTATION_UNCOMPRESSED.to_string(),
                                    diff_id,
                                )]),
                            });
                        }
                        blobs.insert(layer.id.clone(), desc.clone());
                        desc
                    }
                };
                config.layers.push(CacheLayer {
                    blob: desc.digest,
                    parent,
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
    let manifest = Manifest {
        schema_version: 2,
        media_type: OCI_MANIFEST.into(),
        config: ManifestDescriptor {
            media_type: CACHE_CONFIG.into(),
            digest: config_desc.digest.clone(),
            size: config_desc.size,
            annotations: HashMap::new(),
        },
        layers: manifest_layers,
    };
    let manifest_bytes = serde_json::to_vec(&manifest)
        .map_err(|e| ExportError::InvalidConfig(format!("cache manifest: {e}")))?;
    Ok(BuiltCache {
        manifest_desc: Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: sha256_digest(&manifest_bytes),
            size: manifest_bytes.len() as u64,
        },
        config: config_bytes,
        config_desc,
        layers,
        manifest: manifest_bytes,
    })
}

/// Write a cache into an OCI image layout directory: its blobs (those present are kept),
/// then `index.json` naming only this cache's manifest (tagged `latest`), then the blobs
/// nothing names any more are removed. A lock file in the directory serialises exports.
pub fn write_cache_dir(
    content: &ContentStore,
    cache: &BuiltCache,
    dest: &Path,
) -> Result<(), ExportError> {
    let what = |m: &str| format!("{m} {}", dest.display());
    let blobs = dest.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(|e| ExportError::io(what("creating"), e))?;
    let lock =
        File::create(dest.join(LOCK_FILE)).map_err(|e| ExportError::io(what("locking"), e))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| ExportError::io(what("locking"), e.into()))?;

    let mut keep = BTreeSet::new();
    for layer in &cache.layers {
        let path =
            blobs.join(digest_hex(&layer.digest).map_err(|e| ExportError::io(what("writing"), e))?);
        keep.insert(path.clone());
        if !path.exists() {
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
        }
    }
    for (desc, bytes) in [
        (&cache.config_desc, &cache.config),
        (&cache.manifest_desc, &cache.manifest),
    ] {
        let path =
            blobs.join(digest_hex(&desc.digest).map_err(|e| ExportError::io(what("writing"), e))?);
        keep.insert(path.clone());
        write_atomic(&path, bytes)?;
    }
    write_atomic(&dest.join("oci-layout"), OCI_LAYOUT)?;
    let index = Index {
        schema_version: 2,
        media_type: OCI_INDEX.into(),
        manifests: vec![ManifestDescriptor {
            media_type: OCI_MANIFEST.into(),
            digest: cache.manifest_desc.digest.clone(),
            size: cache.manifest_desc.size,
            annotations: HashMap::from([(ANNOTATION_REF_NAME.to_string(), "latest".to_string())]),
        }],
    };
    let bytes = serde_json::to_vec(&index)
        .map_err(|e| ExportError::InvalidConfig(format!("cache index: {e}")))?;
    write_atomic(&dest.join("index.json"), &bytes)?;

    // Only now that index.json names the new manifest: drop what the old one used
    // (BuildKit issue #1896: local cache directories grew without bound).
    for e in fs::read_dir(&blobs).map_err(|e| ExportError::io(what("cleaning"), e))? {
        let path = e.map_err(|e| ExportError::io(what("cleaning"), e))?.path();
        if !keep.contains(&path) {
            fs::remove_file(&path)
                .map_err(|e| ExportError::io(format!("removing {}", path.display()), e))?;
        }
    }
    Ok(())
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

/// Parse a cache manifest; `what` names the cache in errors.
pub fn parse_cache_manifest(bytes: &[u8], what: &str) -> Result<CacheManifest, String> {
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| format!("{what}: the manifest is not valid JSON: {e}"))?;
    if m.config.media_type != CACHE_CONFIG {
        return Err(format!(
            "{what}: not a build cache (its config has media type {:?}, not {CACHE_CONFIG})",
            m.config.media_type
        ));
    }
    let mut layers = Vec::new();
    for l in m.layers {
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
        layers.push((
            Descriptor {
                media_type: l.media_type,
                digest: l.digest,
                size: l.size,
            },
            diff_id,
        ));
    }
    Ok(CacheManifest {
        config: Descriptor {
            media_type: m.config.media_type,
            digest: m.config.digest,
            size: m.config.size,
        },
        layers,
    })
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
    Ok(config)
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
        let e = parse_cache_spec("type=gha", true).unwrap_err().to_string();
        assert!(e.contains("\"gha\" is not supported"), "{e}");
        let e = parse_cache_spec("type=registry", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ref=REF"), "{e}");
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
        let built = build_cache(&content, &entries, &LayerCompression::default()).unwrap();
        // `a` is one layer under both records, stored once.
        assert_eq!(built.layers.len(), 2);
        let dest = tmp.path().join("cache");
        write_cache_dir(&content, &built, &dest).unwrap();

        let bytes = read_cache_dir_manifest(&dest, None).unwrap();
        assert_eq!(bytes, built.manifest);
        let manifest = parse_cache_manifest(&bytes, "test").unwrap();
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
        // Exporting something else: the old blobs go.
        let other = build_cache(
            &content,
            &[entry("k3", vec![c])],
            &LayerCompression::default(),
        )
        .unwrap();
        write_cache_dir(&content, &other, &dest).unwrap();
        assert_eq!(count(), 3);
        assert_eq!(
            read_cache_dir_manifest(&dest, None).unwrap(),
            other.manifest
        );

        // Two exports to one directory at once: the lock keeps them apart, and the result
        // is one of them, whole.
        std::thread::scope(|t| {
            t.spawn(|| write_cache_dir(&content, &built, &dest).unwrap());
            t.spawn(|| write_cache_dir(&content, &other, &dest).unwrap());
        });
        let now = read_cache_dir_manifest(&dest, None).unwrap();
        let expect = if now == built.manifest { 4 } else { 3 };
        assert!(now == built.manifest || now == other.manifest);
        assert_eq!(count(), expect);

        // Someone else's cache config is refused by name.
        let foreign = br#"{"keyFormat":"","layers":[],"records":[]}"#;
        let e = parse_cache_config(foreign, &manifest, "test").unwrap_err();
        assert!(e.contains("only caches exported by buildwit"), "{e}");
    }
}
