//! Build cache export (`--cache-to`) and import (`--cache-from`): the solver's records and
//! their layers as an OCI artifact in a local directory or a registry, see
//! [`buildwit_exporter::cache`] for the format, or in an object store (see
//! [`crate::cache_bucket`]) or GitHub Actions' cache service (see [`crate::cache_gha`]).
//!
//! Import is eager and happens before the solve: every layer of the cache is fetched and
//! unpacked, and every record is put in the cache database, so the solver finds them as if
//! this daemon had built them.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::build_io::BuildIo;
use crate::cache_bucket::Bucket;
use crate::cache_gha::Gha;
use buildwit_exporter::cache::{
    CacheConfig, CacheEntry, CacheManifest, CacheMode, CacheSource, CacheSpec, CacheTarget,
    Written, build_cache, cache_dir_blob, inline_cache, parse_annotated_config, parse_cache_config,
    parse_cache_manifest, read_cache_dir_manifest, write_cache_dir,
};
use buildwit_registry::Registries;
use buildwit_solver::{Record, SolvedKeys, Solver};
use buildwit_worker::content::sha256_digest;
use buildwit_worker::{ContentStore, Descriptor, LayerMeta};
use sha2::{Digest as _, Sha256};

/// The records a cache export holds, of every result (platform) of the build. `max`: every
/// record of the build. `min`: the records whose layers are all in a result, the steps that
/// make up the final images, as BuildKit's min mode (an edit to a late step still finds
/// the steps before it).
pub(crate) fn entries(
    solver: &Solver,
    mode: CacheMode,
    results: &[SolvedKeys],
) -> Result<Vec<CacheEntry>, String> {
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    for keys in results {
        result_entries(solver, mode, keys, &mut seen, &mut entries)?;
    }
    Ok(entries)
}

fn result_entries<'a>(
    solver: &Solver,
    mode: CacheMode,
    keys: &'a SolvedKeys,
    seen: &mut HashSet<&'a String>,
    entries: &mut Vec<CacheEntry>,
) -> Result<(), String> {
    let db = solver.db();
    let snapshots = &solver.worker().snapshots;
    let result_layers: HashSet<String> = match db.get(&keys.result).map_err(|e| e.to_string())? {
        Some(r) => r.outputs.into_iter().flatten().collect(),
        None => return Ok(()),
    };
    for key in std::iter::once(&keys.result).chain(&keys.all) {
        // Taken once; one a platform's min mode leaves out may be another's.
        if key.is_empty() || seen.contains(key) {
            continue;
        }
        let Some(record) = db.get(key).map_err(|e| e.to_string())? else {
            continue;
        };
        if mode == CacheMode::Min
            && !record
                .outputs
                .iter()
                .flatten()
                .all(|id| result_layers.contains(id))
        {
            continue;
        }
        // A record whose layers are gone (GC) cannot be exported; it is a miss here too.
        let outputs: Option<Vec<Vec<_>>> = record
            .outputs
            .iter()
            .map(|ids| ids.iter().map(|id| snapshots.layer(id)).collect())
            .collect();
        let Some(outputs) = outputs else { continue };
        seen.insert(key);
        entries.push(CacheEntry {
            key: key.clone(),
            description: record.description,
            record_type: record.record_type,
            created: record.created,
            outputs,
        });
    }
    Ok(())
}

/// What a cache export did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CacheExported {
    /// The cache manifest's digest.
    pub manifest: String,
    /// Records exported.
    pub records: usize,
    /// What went to the destination.
    pub written: Written,
}

/// Export the records of a build to `spec` (a local directory or a registry; inline caches
/// go with the image, see the exporter). `mirror` is where a local directory really is
/// (buildwitd's mirror of a client's).
pub(crate) fn export(
    solver: &Solver,
    registries: &Registries,
    io: BuildIo,
    spec: &CacheSpec,
    mirror: Option<&std::path::Path>,
    keys: &[SolvedKeys],
) -> Result<CacheExported, String> {
    let what = spec.describe();
    let entries = entries(solver, spec.mode, keys).map_err(|e| format!("{what}: {e}"))?;
    let content = &solver.worker().content;
    let built = build_cache(content, &entries, spec).map_err(|e| format!("{what}: {e}"))?;
    let mut manifest = built.manifest_desc.digest.clone();
    let written = match &spec.target {
        CacheTarget::Local(dest) => write_cache_dir(content, &built, mirror.unwrap_or(dest))
            .map_err(|e| format!("{what}: {e}"))?,
        CacheTarget::Registry(reference) => {
            // push_image reads blobs from files: the config goes to the content store too.
            content
                .write(&built.config)
                .map_err(|e| format!("{what}: storing the cache config: {e}"))?;
            let mut blobs = Vec::new();
            for d in std::iter::once(&built.config_desc).chain(&built.layers) {
                let path = content
                    .path(&d.digest)
                    .map_err(|e| format!("{what}: {e}"))?;
                blobs.push((d.digest.clone(), path));
            }
            let pushed = io
                .block_on(registries.push_image(
                    reference,
                    &blobs,
                    &built.manifest,
                    &built.manifest_desc.media_type,
                ))?
                .map_err(|e| format!("{what}: {e}"))?;
            Written {
                blobs: pushed.blobs,
                present: pushed.present,
                bytes: pushed.bytes,
            }
        }
        CacheTarget::Bucket(b) => {
            let bucket = Bucket::open(b).map_err(|e| format!("{what}: {e}"))?;
            let (written, config) = io
                .block_on(bucket.export(content, &built))?
                .map_err(|e| format!("{what}: {e}"))?;
            // A bucket holds no manifest: its config is what names the cache.
            manifest = config;
            written
        }
        CacheTarget::Gha(g) => {
            let gha = Gha::open(g).map_err(|e| format!("{what}: {e}"))?;
            let (written, config) = io
                .block_on(gha.export(content, &built))?
                .map_err(|e| format!("{what}: {e}"))?;
            manifest = config;
            written
        }
        CacheTarget::Inline => {
            return Err(format!("{what}: goes with an image output, not on its own"));
        }
    };
    Ok(CacheExported {
        manifest,
        records: entries.len(),
        written,
    })
}

/// Where an import reads its blobs.
enum Source<'a> {
    Dir(&'a std::path::Path),
    Registry(&'a str),
    Bucket(&'a Bucket),
    Gha(&'a Gha),
}

/// Import the cache at `spec`: fetch and unpack its layers, insert its records. Returns how
/// many records were added. A registry reference may name a cache or an image with an
/// inline cache; from a multi-platform image, the inline cache of each of `platforms`'
/// images (`os`, `architecture`, `variant`) is read. `mirror` is where a local directory
/// really is, as for [`export`].
pub(crate) fn import(
    solver: &Solver,
    registries: &Registries,
    io: BuildIo,
    spec: &CacheSpec,
    mirror: Option<&std::path::Path>,
    platforms: &[(String, String, String)],
) -> Result<usize, String> {
    let what = spec.describe();
    let (source, manifest_bytes) = match &spec.target {
        CacheTarget::Local(dir) => {
            let dir = mirror.unwrap_or(dir);
            (
                Source::Dir(dir),
                read_cache_dir_manifest(dir, spec.digest.as_deref())?,
            )
        }
        CacheTarget::Registry(reference) => {
            let m = io
                .block_on(registries.pull_raw_manifest(reference))?
                .map_err(|e| format!("{what}: {e}"))?;
            (Source::Registry(reference), m.manifest)
        }
        CacheTarget::Bucket(b) => {
            let bucket = Bucket::open(b).map_err(|e| format!("{what}: {e}"))?;
            let bytes = io
                .block_on(bucket.manifest())?
                .map_err(|e| format!("{what}: {e}"))?;
            let (manifest, config) = parse_annotated_config(&bytes, &what)?;
            return insert_records(
                solver,
                registries,
                io,
                &Source::Bucket(&bucket),
                manifest,
                config,
                &what,
            );
        }
        CacheTarget::Gha(g) => {
            let gha = Gha::open(g).map_err(|e| format!("{what}: {e}"))?;
            let indexes = io
                .block_on(gha.manifests())?
                .map_err(|e| format!("{what}: {e}"))?;
            let mut added = 0;
            for bytes in indexes {
                let (manifest, config) = parse_annotated_config(&bytes, &what)?;
                added += insert_records(
                    solver,
                    registries,
                    io,
                    &Source::Gha(&gha),
                    manifest,
                    config,
                    &what,
                )?;
            }
            return Ok(added);
        }
        CacheTarget::Inline => {
            return Err(format!(
                "{what}: import an inline cache with type=registry,ref=IMAGE"
            ));
        }
    };
    let parsed = parse_cache_manifest(&manifest_bytes, &what)?;
    if parsed != CacheSource::ImageIndex {
        return insert(solver, registries, io, &source, parsed, &what);
    }
    // A multi-platform image: each platform's image holds its own inline cache.
    let Source::Registry(reference) = source else {
        return Err(format!(
            "{what}: the manifest is an image index; name one image with digest="
        ));
    };
    let mut added = 0;
    for (os, arch, variant) in platforms {
        let m = io
            .block_on(registries.pull_manifest(reference, os, arch, variant))?
            .map_err(|e| format!("{what}: {e}"))?;
        let parsed = parse_cache_manifest(&m.manifest, &what)?;
        if parsed == CacheSource::ImageIndex {
            return Err(format!("{what}: an image index inside an image index"));
        }
        added += insert(solver, registries, io, &source, parsed, &what)?;
    }
    Ok(added)
}

/// Insert one cache (or one image's inline cache) read from `source`: its layers unpacked,
/// its records put in the database. Returns how many records were added.
fn insert(
    solver: &Solver,
    registries: &Registries,
    io: BuildIo,
    source: &Source,
    parsed: CacheSource,
    what: &str,
) -> Result<usize, String> {
    let (manifest, config) = match parsed {
        CacheSource::Cache(manifest) => {
            let bytes = fetch(registries, io, source, &manifest.config, what)?;
            let config = parse_cache_config(&bytes, &manifest, what)?;
            (manifest, config)
        }
        CacheSource::Image { config, layers } => {
            let bytes = fetch(registries, io, source, &config, what)?;
            inline_cache(&bytes, &config, &layers, what)?
        }
        CacheSource::ImageIndex => {
            return Err(format!("{what}: an image index inside an image index"));
        }
    };
    insert_records(solver, registries, io, source, manifest, config, what)
}

/// Insert the records of a cache whose blobs `manifest` lists: its layers fetched from
/// `source` and unpacked, its records put in the database. Returns how many were added.
fn insert_records(
    solver: &Solver,
    registries: &Registries,
    io: BuildIo,
    source: &Source,
    manifest: CacheManifest,
    config: CacheConfig,
    what: &str,
) -> Result<usize, String> {
    let diff_ids: HashMap<&str, (&Descriptor, &str)> = manifest
        .layers
        .iter()
        .map(|(d, diff)| (d.digest.as_str(), (d, diff.as_str())))
        .collect();

    let worker = solver.worker();
    // Layers are named by their chain id, as pulled image layers are: the same content
    // under the same parents gets the same id, whoever made it.
    let mut ids: Vec<String> = Vec::with_capacity(config.layers.len());
    let mut chains: Vec<String> = Vec::with_capacity(config.layers.len());
    for layer in &config.layers {
        let (_, diff_id) = diff_ids[layer.blob.as_str()];
        let chain = if layer.parent < 0 {
            diff_id.to_string()
        } else {
            let parent = &chains[layer.parent as usize];
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {diff_id}")))
            )
        };
        ids.push(format!("chain-{}", chain.trim_start_matches("sha256:")));
        chains.push(chain);
    }
    // The blobs of the layers this root lacks, fetched side by side, then unpacked.
    let missing: Vec<(&str, &Descriptor, &str)> = config
        .layers
        .iter()
        .zip(&ids)
        .filter(|(_, id)| worker.snapshots.layer(id).is_none())
        .map(|(layer, id)| {
            let (desc, diff_id) = diff_ids[layer.blob.as_str()];
            (id.as_str(), desc, diff_id)
        })
        .collect();
    let mut wanted: Vec<&Descriptor> = Vec::new();
    for (_, desc, _) in &missing {
        if !worker.content.has(&desc.digest) && !wanted.iter().any(|d| d.digest == desc.digest) {
            wanted.push(desc);
        }
    }
    store_blobs(&worker.content, registries, io, source, &wanted)
        .map_err(|e| format!("{what}: {e}"))?;
    for (id, desc, diff_id) in missing {
        if worker.snapshots.layer(id).is_none() {
            unpack(worker, desc, diff_id, id).map_err(|e| format!("{what}: {e}"))?;
        }
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut added = 0;
    for r in &config.records {
        let outputs: Vec<Vec<String>> = r
            .results
            .iter()
            .map(|&top| {
                let mut chain = Vec::new();
                let mut i = top;
                while i >= 0 {
                    chain.push(ids[i as usize].clone());
                    i = config.layers[i as usize].parent;
                }
                chain.reverse();
                chain
            })
            .collect();
        let existing = solver
            .db()
            .get(&r.digest)
            .map_err(|e| format!("{what}: {e}"))?;
        let usable = existing.is_some_and(|e| {
            e.outputs
                .iter()
                .flatten()
                .all(|id| worker.snapshots.layer(id).is_some())
        });
        if usable {
            continue;
        }
        let record = Record {
            outputs,
            description: r.description.clone(),
            created: r.created,
            last_used: now,
            usage_count: 0,
            record_type: r.record_type.clone(),
        };
        solver
            .db()
            .put(&r.digest, &record)
            .map_err(|e| format!("{what}: {e}"))?;
        added += 1;
    }
    Ok(added)
}

/// Stream layer blobs of the cache into the content store, from a registry as many at
/// once as its connection limit allows; a blob whose bytes do not match its digest is not
/// kept.
fn store_blobs(
    content: &ContentStore,
    registries: &Registries,
    io: BuildIo,
    source: &Source,
    blobs: &[&Descriptor],
) -> Result<(), String> {
    let failed = |d: &Descriptor, e: String| format!("blob {}: {e}", d.digest);
    match source {
        Source::Dir(dir) => {
            for desc in blobs {
                let path = cache_dir_blob(dir, &desc.digest)?;
                let file = File::open(&path)
                    .map_err(|e| failed(desc, format!("reading {}: {e}", path.display())))?;
                content
                    .ingest(file, Some(&desc.digest))
                    .map_err(|e| failed(desc, e.to_string()))?;
            }
        }
        Source::Registry(reference) => {
            use futures_util::StreamExt;
            let results: Vec<Result<(), String>> = io.block_on(
                futures_util::stream::iter(blobs.iter().map(|desc| async move {
                    let mut writer = content.writer().map_err(|e| failed(desc, e.to_string()))?;
                    registries
                        .pull_blob(
                            reference,
                            &desc.digest,
                            Some(desc.size),
                            &mut SyncSink(&mut writer),
                        )
                        .await
                        .map_err(|e| failed(desc, e.to_string()))?;
                    writer
                        .commit(Some(&desc.digest))
                        .map(|_| ())
                        .map_err(|e| failed(desc, e.to_string()))
                }))
                .buffer_unordered(buildwit_registry::MAX_CONNECTIONS_PER_REGISTRY)
                .collect(),
            )?;
            results.into_iter().collect::<Result<(), String>>()?;
        }
        Source::Bucket(bucket) => io.block_on(bucket.fetch_blobs(content, blobs))??,
        Source::Gha(gha) => io.block_on(gha.fetch_blobs(content, blobs))??,
    }
    Ok(())
}

/// The largest cache config read into memory: a larger one is not one.
pub(crate) const MAX_CONFIG_SIZE: u64 = 64 << 20;

/// What an export to a remote store wrote, from each blob's upload: its size, or `None`
/// when the store had it already.
pub(crate) fn written(uploads: &[Option<u64>]) -> Written {
    Written {
        blobs: uploads.iter().flatten().count(),
        present: uploads.iter().filter(|u| u.is_none()).count(),
        bytes: uploads.iter().flatten().sum(),
    }
}

/// Write a download of blob `desc` into the content store as it arrives; the blob is kept
/// only if its bytes match its digest.
pub(crate) async fn ingest_stream<B: AsRef<[u8]>, E: std::fmt::Display>(
    content: &ContentStore,
    desc: &Descriptor,
    mut stream: impl futures_util::Stream<Item = Result<B, E>> + Unpin,
) -> Result<(), String> {
    use futures_util::StreamExt as _;
    let failed = |e: &dyn std::fmt::Display| format!("blob {}: {e}", desc.digest);
    let mut writer = content.writer().map_err(|e| failed(&e))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| failed(&e))?;
        std::io::Write::write_all(&mut writer, chunk.as_ref()).map_err(|e| failed(&e))?;
    }
    writer
        .commit(Some(&desc.digest))
        .map(|_| ())
        .map_err(|e| failed(&e))
}

/// A local file writer as an async sink: writes to a local file do not wait on anything
/// worth yielding for.
struct SyncSink<'a, W>(&'a mut W);

impl<W: std::io::Write + Unpin> tokio::io::AsyncWrite for SyncSink<'_, W> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(self.get_mut().0.write(buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(self.get_mut().0.flush())
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A small blob of the cache (its config), checked against its digest.
fn fetch(
    registries: &Registries,
    io: BuildIo,
    source: &Source,
    desc: &Descriptor,
    what: &str,
) -> Result<Vec<u8>, String> {
    if desc.size > MAX_CONFIG_SIZE {
        return Err(format!(
            "{what}: its config {} is {} bytes, more than the {MAX_CONFIG_SIZE} allowed",
            desc.digest, desc.size
        ));
    }
    let bytes = match source {
        Source::Dir(dir) => {
            let path = cache_dir_blob(dir, &desc.digest)?;
            std::fs::read(&path).map_err(|e| format!("{what}: reading {}: {e}", path.display()))?
        }
        Source::Registry(reference) => {
            let mut out = Vec::new();
            io.block_on(registries.pull_blob(reference, &desc.digest, Some(desc.size), &mut out))?
                .map_err(|e| format!("{what}: {e}"))?;
            out
        }
        // An object store's config is read with its manifest.
        Source::Bucket(_) | Source::Gha(_) => {
            return Err(format!("{what}: no config blob in an object store"));
        }
    };
    if sha256_digest(&bytes) != desc.digest {
        return Err(format!("{what}: blob {} is corrupt", desc.digest));
    }
    Ok(bytes)
}

/// Unpack a layer blob from the content store into layer `id`, recording its blob so a
/// later export reuses it.
fn unpack(
    worker: &buildwit_worker::Worker,
    desc: &Descriptor,
    diff_id: &str,
    id: &str,
) -> std::io::Result<()> {
    let builder = worker.snapshots.new_layer()?;
    let file = BufReader::new(File::open(worker.content.path(&desc.digest)?)?);
    let stats = buildwit_worker::unpack::unpack_layer(file, &desc.media_type, &builder.dir())?;
    if stats.diff_id != diff_id {
        return Err(std::io::Error::other(format!(
            "blob {} unpacks to {}, but the cache says {diff_id}",
            desc.digest, stats.diff_id
        )));
    }
    let meta = LayerMeta {
        diff_id: Some(diff_id.to_string()),
        blob: Some(desc.clone()),
        ..LayerMeta::now()
    };
    builder.commit(id, &meta)?;
    Ok(())
}
