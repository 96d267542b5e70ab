//! Pulling an image: its manifest and config from the registry, its layers unpacked into
//! snapshot layers.
//!
//! Layers are named after their OCI ChainID (`chain-<hex>`): the digest of the layer's
//! diff_id together with all the layers below it. The same stack is thus shared by every
//! image built on it, a layer is only ever used on top of the parents it was made for, and
//! a layer already present is not downloaded again.
//!
//! Each missing layer is streamed once: the download goes, through a pipe, to a blocking
//! task that copies it into the content store and unpacks it at the same time. Nothing is
//! kept unless the blob matched its digest and the unpacked tar its diff_id; a killed pull
//! leaves only scratch files that the content store and the snapshotter remove when opened.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};

use buildwit_registry::{MAX_CONNECTIONS_PER_REGISTRY, Registries, RegistryError};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::content::{BlobWriter, ContentStore, Descriptor, digest_hex};
use crate::snapshot::{Layer, LayerBuilder, LayerMeta, Snapshot, Snapshotter};
use crate::unpack::{UnpackStats, is_layer_media_type, unpack_layer};

/// Bytes buffered between a download and its unpacker.
const PIPE_BUFFER: usize = 256 << 10;
/// Largest image config we accept.
const MAX_CONFIG_SIZE: u64 = 32 << 20;

/// A pulled image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledImage {
    /// The normalised reference.
    pub reference: String,
    /// The digest to pin: the index digest for a multi-platform image, else the manifest's.
    pub digest: String,
    /// The digest of the platform's manifest.
    pub manifest_digest: String,
    /// The raw image config JSON (verified against its digest, kept in the content store).
    pub config: Vec<u8>,
    /// The image's filesystem: its layers, bottom first.
    pub snapshot: Snapshot,
    /// Digests of the blobs this pull downloaded (config and layers); the others were
    /// present already.
    pub downloaded: Vec<String>,
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The registry failed: not found, unreachable, refused, corrupt data. Names the
    /// reference and the registry.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The image itself is unusable, or could not be stored.
    #[error("pulling {reference} from registry {registry}: {message}")]
    Image {
        /// The normalised reference.
        reference: String,
        /// The registry it came from.
        registry: String,
        /// What went wrong, naming the layer or blob.
        message: String,
    },
}

/// The parts of a manifest a pull needs.
#[derive(Deserialize)]
struct Manifest {
    config: Blob,
    #[serde(default)]
    layers: Vec<Blob>,
}

/// A descriptor in a manifest.
#[derive(Clone, Deserialize)]
struct Blob {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
}

/// The parts of an image config a pull needs.
#[derive(Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// What every step of one pull shares.
struct Pull<'a> {
    /// None for an OCI layout, whose blobs are all in the content store beforehand.
    registries: Option<&'a Registries>,
    content: &'a ContentStore,
    snapshots: &'a Snapshotter,
    reference: String,
    registry: String,
}

impl Pull<'_> {
    fn error(&self, message: impl Into<String>) -> ImageError {
        self.error_at(&self.registry, message)
    }

    fn error_at(&self, registry: &str, message: impl Into<String>) -> ImageError {
        ImageError::Image {
            reference: self.reference.clone(),
            registry: registry.to_string(),
            message: message.into(),
        }
    }
}

/// Pulls `reference` for `platform` (`os`, `architecture`, `variant`): the manifest and
/// config are checked and kept in `content`, each layer not yet in `snapshots` is
/// downloaded (verified, kept in `content`) and unpacked into a layer named after its
/// ChainID. Layers download concurrently, at most
/// [`MAX_CONNECTIONS_PER_REGISTRY`] at a time.
pub async fn pull(
    registries: &Registries,
    content: &ContentStore,
    snapshots: &Snapshotter,
    reference: &str,
    platform: (&str, &str, &str),
) -> Result<PulledImage, ImageError> {
    let (os, architecture, variant) = platform;
    let m = registries
        .pull_manifest(reference, os, architecture, variant)
        .await?;
    let pull = Pull {
        registries: Some(registries),
        content,
        snapshots,
        reference: m.reference.clone(),
        registry: m.registry.clone(),
    };
    assemble(&pull, m.manifest, m.manifest_digest, m.digest).await
}

/// Makes paths of a layout directory current before they are read (buildwitd's mirror of
/// a client's layout).
pub type LayoutFetch = Box<dyn Fn(&[String]) -> io::Result<()> + Send>;

/// Reads an image from an OCI image layout directory (`oci-layout://` sources): the
/// manifest of `digest` (an index's entry for `platform`) and its blobs are copied into
/// the content store, each checked against its digest, then its layers are made as for a
/// pull. Blobs already in the content store are not read again; `fetch` is given the
/// paths of the others first. `label` names the layout in messages.
pub async fn from_layout(
    content: &ContentStore,
    snapshots: &Snapshotter,
    dir: &std::path::Path,
    label: &str,
    digest: &str,
    platform: (&str, &str, &str),
    fetch: Option<LayoutFetch>,
) -> Result<PulledImage, ImageError> {
    let pull = Pull {
        registries: None,
        content,
        snapshots,
        reference: format!("oci-layout://{label}@{digest}"),
        registry: label.to_string(),
    };
    let (store, dir2, digest2) = (content.clone(), dir.to_path_buf(), digest.to_string());
    let (os, arch, variant) = (
        platform.0.to_string(),
        platform.1.to_string(),
        platform.2.to_string(),
    );
    let (manifest, manifest_digest) = blocking(move || {
        let import_all = |digests: &[&str]| -> io::Result<()> {
            let missing: Vec<&str> = digests.iter().copied().filter(|d| !store.has(d)).collect();
            let mut paths = Vec::new();
            for d in &missing {
                paths.push(format!("blobs/sha256/{}", digest_hex(d)?));
            }
            if let Some(fetch) = fetch.as_ref().filter(|_| !paths.is_empty()) {
                fetch(&paths)?;
            }
            for (d, rel) in missing.iter().zip(&paths) {
                let file = File::open(dir2.join(rel))
                    .map_err(|e| io::Error::new(e.kind(), format!("{rel}: {e}")))?;
                store.ingest(file, Some(d))?;
            }
            Ok(())
        };
        let import = |d: &str| -> io::Result<Vec<u8>> {
            import_all(&[d])?;
            store.read(d)
        };
        let mut digest = digest2.clone();
        let mut body = import(&digest)?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(io::Error::other)?;
        if let Some(list) = v["manifests"].as_array() {
            // As a registry's index: the best match, entries without a platform last.
            let want = buildwit_registry::Platform::normalize(&os, &arch, &variant);
            let entry = list
                .iter()
                .filter_map(|m| {
                    let p = &m["platform"];
                    if p.is_null() {
                        return Some((u32::MAX, m));
                    }
                    let field = |k: &str| p[k].as_str().unwrap_or_default();
                    let have = buildwit_registry::Platform::normalize(
                        field("os"),
                        field("architecture"),
                        field("variant"),
                    );
                    want.rank(&have).map(|rank| (rank, m))
                })
                .min_by_key(|(rank, _)| *rank)
                .map(|(_, m)| m)
                .ok_or_else(|| {
                    io::Error::other(format!(
                        "no match for platform in manifest {digest2}: not found: no image for {want}"
                    ))
                })?;
            digest = entry["digest"].as_str().unwrap_or_default().to_string();
            body = import(&digest)?;
        }
        let m: Manifest = serde_json::from_slice(&body).map_err(io::Error::other)?;
        let blobs: Vec<&str> = std::iter::once(&m.config)
            .chain(&m.layers)
            .map(|b| b.digest.as_str())
            .collect();
        import_all(&blobs)?;
        Ok((body, digest))
    })
    .await
    .map_err(|e| pull.error(e.to_string()))?;
    assemble(&pull, manifest, manifest_digest, digest.to_string()).await
}

/// The image of a manifest: its config and layers, fetched where missing.
async fn assemble(
    pull: &Pull<'_>,
    raw_manifest: Vec<u8>,
    manifest_digest: String,
    pinned: String,
) -> Result<PulledImage, ImageError> {
    let content = pull.content;
    let manifest: Manifest = serde_json::from_slice(&raw_manifest).map_err(|e| {
        pull.error(format!(
            "manifest {manifest_digest} is not a valid image manifest: {e}"
        ))
    })?;
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        digest_hex(&blob.digest).map_err(|_| {
            pull.error(format!(
                "blob {} uses a digest algorithm other than sha256, which is not supported",
                blob.digest
            ))
        })?;
    }
    if let Some(l) = manifest
        .layers
        .iter()
        .find(|l| !is_layer_media_type(&l.media_type))
    {
        return Err(pull.error(format!(
            "layer {} has media type {:?}, which is not an image layer type this worker can unpack",
            l.digest, l.media_type
        )));
    }

    let mut downloaded = Vec::new();
    let config = fetch_config(pull, &manifest.config, &mut downloaded).await?;
    let diff_ids = serde_json::from_slice::<Config>(&config)
        .map_err(|e| {
            pull.error(format!(
                "image config {} is not valid: {e}",
                manifest.config.digest
            ))
        })?
        .rootfs
        .diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(pull.error(format!(
            "the manifest has {} layers but the image config lists {} diff_ids",
            manifest.layers.len(),
            diff_ids.len()
        )));
    }
    // diff_ids name layer directories (through the ChainID): they must be digests.
    if let Some(bad) = diff_ids.iter().find(|d| digest_hex(d).is_err()) {
        return Err(pull.error(format!(
            "image config {} lists diff_id {bad:?}, which is not a sha256 digest",
            manifest.config.digest
        )));
    }
    let chain = chain_ids(&diff_ids);
    let count = manifest.layers.len();
    // Made into a list first: a stream mapping with a closure makes the future not Send.
    let jobs: Vec<_> = manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, blob)| {
            let what = format!("layer {} ({}/{count})", blob.digest, i + 1);
            fetch_layer(pull, blob, &diff_ids[i], &chain[i], what)
        })
        .collect();
    let layers: Vec<(Layer, bool)> = stream::iter(jobs)
        .buffered(MAX_CONNECTIONS_PER_REGISTRY)
        .try_collect()
        .await?;
    let mut snapshot = Snapshot::default();
    for (i, (layer, fetched)) in layers.into_iter().enumerate() {
        if fetched {
            downloaded.push(manifest.layers[i].digest.clone());
        }
        snapshot.layers.push(layer);
    }
    // Kept for exporters and inspection; the layers do not depend on it.
    let store = content.clone();
    let raw = raw_manifest.clone();
    blocking(move || store.write(&raw))
        .await
        .map_err(|e| pull.error(format!("storing manifest {manifest_digest}: {e}")))?;
    Ok(PulledImage {
        reference: pull.reference.clone(),
        digest: pinned,
        manifest_digest,
        config,
        snapshot,
        downloaded,
    })
}

/// The config from the content store, or downloaded, verified and stored.
async fn fetch_config(
    pull: &Pull<'_>,
    blob: &Blob,
    downloaded: &mut Vec<String>,
) -> Result<Vec<u8>, ImageError> {
    let what = format!("image config {}", blob.digest);
    if blob.size > MAX_CONFIG_SIZE {
        return Err(pull.error(format!(
            "{what} is {} bytes, more than the {MAX_CONFIG_SIZE} allowed",
            blob.size
        )));
    }
    if pull.content.has(&blob.digest) {
        let store = pull.content.clone();
        let digest = blob.digest.clone();
        return blocking(move || store.read(&digest))
            .await
            .map_err(|e| pull.error(format!("reading {what} from the content store: {e}")));
    }
    let mut config = Vec::with_capacity(blob.size as usize);
    pull.registries
        .ok_or_else(|| pull.error(format!("{what} is missing")))?
        .pull_blob(&pull.reference, &blob.digest, Some(blob.size), &mut config)
        .await?;
    downloaded.push(blob.digest.clone());
    let store = pull.content.clone();
    let (raw, expected) = (config.clone(), blob.digest.clone());
    blocking(move || store.ingest(&raw[..], Some(&expected)))
        .await
        .map_err(|e| pull.error(format!("storing {what}: {e}")))?;
    Ok(config)
}

/// The layer with this ChainID, made if missing; the bool says its blob was downloaded.
async fn fetch_layer(
    pull: &Pull<'_>,
    blob: &Blob,
    diff_id: &str,
    chain_id: &str,
    what: String,
) -> Result<(Layer, bool), ImageError> {
    let id = format!("chain-{}", chain_id.trim_start_matches("sha256:"));
    if let Some(layer) = pull.snapshots.layer(&id) {
        return Ok((layer, false));
    }
    let builder = pull
        .snapshots
        .new_layer()
        .map_err(|e| pull.error(format!("{what}: cannot start a snapshot layer: {e}")))?;
    let media_type = blob.media_type.clone();
    let fetched = !pull.content.has(&blob.digest);
    let (stats, builder, copy, registry) = if fetched {
        download_and_unpack(pull, blob, builder, &what).await?
    } else {
        // Kept from an earlier pull whose layer was removed since: unpack it again.
        let path = pull
            .content
            .path(&blob.digest)
            .map_err(|e| pull.error(format!("{what}: {e}")))?;
        let (stats, builder) = blocking(move || {
            let file = BufReader::new(File::open(path)?);
            let stats = unpack_layer(file, &media_type, &builder.dir())?;
            Ok((stats, builder))
        })
        .await
        .map_err(|e| pull.error(format!("{what}: unpacking from the content store: {e}")))?;
        (stats, builder, None, pull.registry.clone())
    };
    if stats.diff_id != diff_id {
        return Err(pull.error_at(
            &registry,
            format!(
                "{what} unpacks to diff_id {}, but the image config says {diff_id}; the image is corrupt",
                stats.diff_id
            ),
        ));
    }
    let meta = LayerMeta {
        diff_id: Some(diff_id.to_string()),
        blob: Some(Descriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.clone(),
            size: blob.size,
        }),
        ..Default::default()
    };
    let digest = blob.digest.clone();
    // The blob first: a layer in the snapshotter can always be exported from its blob.
    let layer = blocking(move || {
        if let Some(copy) = copy {
            copy.commit(Some(&digest))?;
        }
        builder.commit(&id, &meta)
    })
    .await
    .map_err(|e| pull.error_at(&registry, format!("{what}: storing it: {e}")))?;
    Ok((layer, fetched))
}

/// Downloads a layer blob and, at the same time, copies it into the content store and
/// unpacks it into `builder` in a blocking task. Returns what the unpacker found, the
/// builder, the blob (to commit) and the registry that served it.
async fn download_and_unpack(
    pull: &Pull<'_>,
    blob: &Blob,
    builder: LayerBuilder,
    what: &str,
) -> Result<(UnpackStats, LayerBuilder, Option<BlobWriter>, String), ImageError> {
    let copy = pull
        .content
        .writer()
        .map_err(|e| pull.error(format!("{what}: cannot write to the content store: {e}")))?;
    let (mut tx, rx) = tokio::io::duplex(PIPE_BUFFER);
    let rx = tokio_util::io::SyncIoBridge::new(rx);
    let media_type = blob.media_type.clone();
    let unpacker = tokio::task::spawn_blocking(move || {
        let mut tee = Tee { inner: rx, copy };
        let result = unpack_layer(&mut tee, &media_type, &builder.dir()).and_then(|stats| {
            // The rest of the blob (compression trailers) belongs in the store too.
            io::copy(&mut tee, &mut io::sink())?;
            Ok(stats)
        });
        if result.is_err() {
            // Keep reading so the download completes and its digest check can tell a
            // corrupt download from a bad layer.
            let _ = io::copy(&mut tee.inner, &mut io::sink());
        }
        result.map(|stats| (stats, builder, tee.copy))
    });
    let Some(registries) = pull.registries else {
        return Err(pull.error(format!("{what} is missing")));
    };
    let fetched = registries
        .pull_blob(&pull.reference, &blob.digest, Some(blob.size), &mut tx)
        .await;
    // End of input for the unpacker (also when the download failed half way).
    drop(tx);
    let unpacked = unpacker
        .await
        .map_err(|e| pull.error(format!("{what}: the unpacker failed: {e}")))?;
    // A registry error comes first: a corrupt download also makes a bad tar.
    let served = fetched?;
    let (stats, builder, copy) =
        unpacked.map_err(|e| pull.error_at(&served.registry, format!("{what}: {e}")))?;
    Ok((stats, builder, Some(copy), served.registry))
}

/// Copies what is read through it into `copy`.
struct Tee<R> {
    inner: R,
    copy: BlobWriter,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// The OCI ChainIDs of a stack of diff_ids: the first is its diff_id, each next one
/// `sha256(parent_chain_id + " " + diff_id)`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {diff_id}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let expect = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()))
        );
        assert_eq!(ids[1], expect);
        // A layer's id depends on what is below it.
        assert_ne!(chain_ids(std::slice::from_ref(&b))[0], ids[1]);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn pulls_can_run_on_any_runtime_thread() {
        fn send<T: Send>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let registries = Registries::new(&Default::default()).unwrap();
        let content = ContentStore::open(dir.path().join("c")).unwrap();
        let snapshots =
            Snapshotter::open(dir.path().join("s"), crate::snapshot::Kind::Native).unwrap();
        send(&pull(
            &registries,
            &content,
            &snapshots,
            "alpine",
            ("linux", "amd64", ""),
        ));
    }
}
