//! Exporting a build's result as the client asked (`--output`).

use std::io::Write;

use buildwit_exporter::attestation::Statement;
use buildwit_exporter::{Destination, OutputKind, OutputSpec};
use buildwit_worker::{Descriptor, Snapshot, Worker};

use crate::DaemonError;

/// What an export made, for the client to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    /// The exporter (`oci`, `image`, ...).
    pub kind: String,
    /// Where it went.
    pub dest: String,
    /// The manifest digest, for image exports.
    pub digest: Option<String>,
    /// The manifest's media type and size, for image exports.
    pub manifest: Option<(String, u64)>,
    /// The config digest (the image id), for image exports.
    pub config_digest: Option<String>,
    /// The image's names, for image exports.
    pub names: Vec<String>,
}

impl Exported {
    /// What BuildKit's exporters answer for this export, as `--metadata-file` shows it
    /// (`containerimage.digest`, `.config.digest`, `.descriptor`, `image.name`); nothing
    /// for a non-image export.
    pub fn response(&self) -> Vec<(&'static str, serde_json::Value)> {
        let mut out = Vec::new();
        let Some(digest) = &self.digest else {
            return out;
        };
        if let Some(config) = &self.config_digest {
            out.push(("containerimage.config.digest", config.as_str().into()));
        }
        if let Some((media_type, size)) = &self.manifest {
            out.push((
                "containerimage.descriptor",
                serde_json::json!({"mediaType": media_type, "digest": digest, "size": size}),
            ));
        }
        out.push(("containerimage.digest", digest.as_str().into()));
        if !self.names.is_empty() {
            out.push(("image.name", self.names.join(",").into()));
        }
        out
    }
}

fn fail(output: &OutputSpec, e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Export(format!("exporting to {}: {e}", output.kind))
}

fn dest_name(dest: &Option<Destination>) -> String {
    match dest {
        Some(Destination::Path(p)) => p.display().to_string(),
        Some(Destination::Stdout) | None => "stdout".into(),
    }
}

/// What an image export carries besides the result and its config.
#[derive(Clone, Copy, Default)]
pub(crate) struct Extras<'a> {
    /// The inline cache records (`type=inline`), per result; none: no inline cache.
    pub inline_caches: &'a [Vec<buildwit_exporter::cache::CacheEntry>],
    /// Attestations to attach (provenance), per result; empty: none.
    pub attestations: &'a [Vec<Statement>],
}

/// The result of a build for one platform.
#[derive(Clone, Debug, Default)]
pub(crate) struct PlatformResult {
    /// Its platform id (`linux/arm64`); empty for a single-platform build.
    pub platform: String,
    /// What was built (`None`: scratch).
    pub result: Option<Snapshot>,
    /// Its image config from the frontend.
    pub config: Option<Vec<u8>>,
    /// Its base image's config (`containerimage.base.config`).
    pub base_config: Option<Vec<u8>>,
    /// The frontend's `SOURCE_DATE_EPOCH` (`source.date.epoch`), Unix seconds.
    pub epoch: Option<i64>,
}

/// A frontend's `source.date.epoch`: decimal seconds, or empty for none.
pub(crate) fn parse_epoch(value: &[u8]) -> Result<Option<i64>, DaemonError> {
    if value.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            DaemonError::Export(format!(
                "invalid SOURCE_DATE_EPOCH from frontend: {:?}",
                String::from_utf8_lossy(value)
            ))
        })
}

/// Export the results of a build (one, or one per platform) as `output` asks.
pub(crate) fn export(
    worker: &Worker,
    registries: &buildwit_registry::Registries,
    io: crate::build_io::BuildIo,
    output: &OutputSpec,
    results: &[PlatformResult],
    extras: Extras,
) -> Result<Exported, DaemonError> {
    let dest = dest_name(&output.dest);
    let mut exported = Exported {
        kind: output.kind.to_string(),
        dest: dest.clone(),
        digest: None,
        manifest: None,
        config_digest: None,
        names: Vec::new(),
    };
    match output.kind {
        OutputKind::Oci | OutputKind::Docker | OutputKind::Image => {
            if output.kind == OutputKind::Docker && results.len() > 1 {
                return Err(fail(
                    output,
                    "docker exporter does not currently support exporting manifest lists; use type=oci (or type=image) for a multi-platform image",
                ));
            }
            let mut images = Vec::new();
            for (i, r) in results.iter().enumerate() {
                let snapshot = r.result.clone().unwrap_or_default();
                let mut spec = output.image_spec(snapshot, r.config.clone().unwrap_or_default());
                spec.inline_cache = extras.inline_caches.get(i).cloned();
                spec.epoch = output.source_date_epoch.or(r.epoch);
                spec.base_config = r.base_config.clone();
                images.push(
                    buildwit_exporter::build_image(&worker.content, &spec)
                        .map_err(|e| fail(output, e))?,
                );
            }
            if let Some(p) = output
                .annotations
                .platforms
                .keys()
                .find(|p| !images.iter().any(|i| &&i.platform == p))
            {
                return Err(fail(
                    output,
                    format!("invalid annotation: no platform {p} found in source"),
                ));
            }
            let annotations = &output.annotations;
            let image = if images.len() > 1 || !extras.attestations.is_empty() {
                buildwit_exporter::index::build_index(
                    &worker.content,
                    images,
                    extras.attestations,
                    &output.names,
                    annotations,
                )
                .map_err(|e| fail(output, e))?
            } else if !annotations.index.is_empty() || !annotations.index_descriptor.is_empty() {
                return Err(fail(
                    output,
                    "index annotations not supported for single platform export (an index comes with several platforms or attestations)",
                ));
            } else {
                images
                    .pop()
                    .ok_or_else(|| fail(output, "nothing to export"))?
            };
            let top = image.top();
            exported.digest = Some(top.digest.clone());
            exported.manifest = Some((top.media_type.clone(), top.size));
            // An index has no one config: its id is its own digest (as buildx reports it).
            if image.index.is_none() {
                exported.config_digest = Some(image.config.digest.clone());
            }
            exported.names = output.names.clone();
            let names = &output.names;
            let docker = output.kind == OutputKind::Docker;
            match (&output.kind, &output.dest) {
                (OutputKind::Image, _) => {
                    if output.insecure {
                        return Err(fail(
                            output,
                            "registry.insecure is not supported; set http = true or insecure = true under [registry.\"HOST\"] in buildkitd.toml",
                        ));
                    }
                    if output.push {
                        if names.is_empty() {
                            return Err(fail(output, "push needs a name (name=REF or -t REF)"));
                        }
                        for name in names {
                            io.block_on(push(worker, registries, &image, name))
                                .map_err(|e| fail(output, e))?
                                .map_err(|e| fail(output, e))?;
                        }
                        exported.dest = names.join(", ");
                    } else {
                        exported.dest = "the worker's content store".into();
                    }
                }
                (_, Some(Destination::Path(p))) if !output.tar => {
                    buildwit_exporter::write_oci_dir(&worker.content, &image, names, p)
                        .map_err(|e| fail(output, e))?
                }
                (_, Some(Destination::Path(p))) if docker => {
                    buildwit_exporter::write_docker_tar(&worker.content, &image, names, p)
                        .map_err(|e| fail(output, e))?
                }
                (_, Some(Destination::Path(p))) => {
                    buildwit_exporter::write_oci_tar(&worker.content, &image, names, p)
                        .map_err(|e| fail(output, e))?
                }
                (_, _) => {
                    let mut out = std::io::stdout().lock();
                    if docker {
                        buildwit_exporter::write_docker_archive(
                            &worker.content,
                            &image,
                            names,
                            &mut out,
                        )
                    } else {
                        buildwit_exporter::write_oci_archive(
                            &worker.content,
                            &image,
                            names,
                            &mut out,
                        )
                    }
                    .map_err(|e| fail(output, e))?;
                    out.flush().map_err(|e| fail(output, e))?;
                }
            }
        }
        OutputKind::Local | OutputKind::Tar => export_files(worker, output, results)?,
    }
    Ok(exported)
}

/// The files of the results as `type=local` or `type=tar`: with several platforms (or
/// `platform-split=true`), each in a directory named after its platform (`linux_arm64`);
/// else merged, where two platforms may not both have the same file.
fn export_files(
    worker: &Worker,
    output: &OutputSpec,
    results: &[PlatformResult],
) -> Result<(), DaemonError> {
    let multi = results.len() > 1;
    // BuildKit's tar exporter splits several platforms whatever the option says.
    let split = match output.kind {
        OutputKind::Tar => multi || output.platform_split == Some(true),
        _ => output.platform_split.unwrap_or(multi),
    };
    let mut mounts = Vec::with_capacity(results.len());
    for r in results {
        let snapshot = r.result.clone().unwrap_or_default();
        let mounted = worker
            .snapshots
            .mount(&snapshot, None)
            .map_err(|e| fail(output, e))?;
        mounts.push((platform_id(r), mounted));
    }
    if multi && !split {
        let mut owners: std::collections::HashMap<Vec<u8>, &str> = Default::default();
        for (platform, mounted) in &mounts {
            for path in
                buildwit_exporter::non_directories(mounted.path()).map_err(|e| fail(output, e))?
            {
                if let Some(first) = owners.insert(path.clone(), platform) {
                    return Err(fail(
                        output,
                        format!(
                            "cannot overwrite {} from {first} with {platform} when split option is disabled",
                            String::from_utf8_lossy(&path)
                        ),
                    ));
                }
            }
        }
    }
    let dirs: Vec<String> = mounts
        .iter()
        .map(|(platform, _)| match split {
            true => platform.replace('/', "_"),
            false => String::new(),
        })
        .collect();
    // BuildKit's file exporters read the one (unsuffixed) time a frontend gives.
    let epoch = match (output.source_date_epoch, results) {
        (Some(epoch), _) => Some(epoch),
        (None, [one]) => one.epoch,
        (None, _) => None,
    };
    let trees: Vec<(&str, &std::path::Path)> = dirs
        .iter()
        .zip(&mounts)
        .map(|(dir, (_, mounted))| (dir.as_str(), mounted.path()))
        .collect();
    match (&output.kind, &output.dest) {
        (OutputKind::Local, Some(Destination::Path(p))) => {
            if split {
                std::fs::create_dir_all(p)
                    .map_err(|e| fail(output, format!("{}: {e}", p.display())))?;
            }
            for (dir, tree) in trees {
                let dest = match dir {
                    "" => p.clone(),
                    dir => p.join(dir),
                };
                buildwit_exporter::export_local(tree, epoch, &dest).map_err(|e| fail(output, e))?;
            }
        }
        (OutputKind::Local, _) => return Err(fail(output, "type=local needs dest=DIR")),
        (_, Some(Destination::Path(p))) => {
            buildwit_exporter::export_tar_file(&trees, epoch, p).map_err(|e| fail(output, e))?
        }
        (_, _) => {
            let mut out = std::io::stdout().lock();
            buildwit_exporter::export_tar(&trees, epoch, &mut out).map_err(|e| fail(output, e))?;
        }
    }
    Ok(())
}

/// A result's platform id: the one the frontend gave it, else its image config's, else
/// this host's.
fn platform_id(r: &PlatformResult) -> String {
    if !r.platform.is_empty() {
        return r.platform.clone();
    }
    let config: serde_json::Value = r
        .config
        .as_deref()
        .and_then(|c| serde_json::from_slice(c).ok())
        .unwrap_or_default();
    let field = |k: &str| config[k].as_str().unwrap_or_default().to_string();
    match (field("os"), field("architecture"), field("variant")) {
        (os, arch, _) if os.is_empty() || arch.is_empty() => {
            format!("linux/{}", buildwit_exporter::host_architecture())
        }
        (os, arch, variant) if variant.is_empty() => format!("{os}/{arch}"),
        (os, arch, variant) => format!("{os}/{arch}/{variant}"),
    }
}

/// Push an exported image's blobs and manifest under `name`. With an index (several
/// platforms, attestations), every manifest it lists goes up by digest first, then the
/// index under `name`.
async fn push(
    worker: &Worker,
    registries: &buildwit_registry::Registries,
    image: &buildwit_exporter::BuiltImage,
    name: &str,
) -> Result<usize, String> {
    let paths = |descriptors: &mut dyn Iterator<Item = &Descriptor>| {
        descriptors
            .map(|d| Ok((d.digest.clone(), worker.content.path(&d.digest)?)))
            .collect::<Result<Vec<_>, std::io::Error>>()
            .map_err(|e| e.to_string())
    };
    let image_blobs = paths(&mut std::iter::once(&image.config).chain(&image.layers))?;
    let Some(index) = &image.index else {
        return registries
            .push_image(
                name,
                &image_blobs,
                &image.manifest_bytes,
                &image.manifest.media_type,
            )
            .await
            .map(|p| p.blobs)
            .map_err(|e| e.to_string());
    };
    let repository = buildwit_registry::parse_reference(name).map_err(|e| e.to_string())?;
    let by_digest = |digest: &str| {
        format!(
            "{}/{}@{digest}",
            repository.registry(),
            repository.repository()
        )
    };
    let mut manifests = vec![(image_blobs, &image.manifest_bytes, &image.manifest)];
    for m in &index.manifests {
        manifests.push((paths(&mut m.blobs.iter())?, &m.bytes, &m.descriptor));
    }
    let mut uploaded = 0;
    for (blobs, bytes, descriptor) in manifests {
        uploaded += registries
            .push_image(
                &by_digest(&descriptor.digest),
                &blobs,
                bytes,
                &descriptor.media_type,
            )
            .await
            .map_err(|e| e.to_string())?
            .blobs;
    }
    registries
        .push_image(name, &[], &index.bytes, &index.index.media_type)
        .await
        .map_err(|e| e.to_string())?;
    Ok(uploaded)
}
