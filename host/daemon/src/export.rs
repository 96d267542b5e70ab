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
    /// The inline cache records (`type=inline`).
    pub inline_cache: Option<&'a [buildwit_exporter::cache::CacheEntry]>,
    /// Attestations to attach (provenance).
    pub attestations: &'a [Statement],
}

/// Export `result` (`None`: scratch) with its image config.
pub(crate) fn export(
    worker: &Worker,
    registries: &buildwit_registry::Registries,
    io: crate::build_io::BuildIo,
    output: &OutputSpec,
    result: Option<&Snapshot>,
    config: Option<&[u8]>,
    extras: Extras,
) -> Result<Exported, DaemonError> {
    let snapshot = result.cloned().unwrap_or_default();
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
            let mut spec = output.image_spec(snapshot, config.unwrap_or_default().to_vec());
            spec.inline_cache = extras.inline_cache.map(<[_]>::to_vec);
            let mut image = buildwit_exporter::build_image(&worker.content, &spec)
                .map_err(|e| fail(output, e))?;
            if !extras.attestations.is_empty() {
                let platform = platform_of(&image.config_bytes);
                buildwit_exporter::attestation::attach(
                    &worker.content,
                    &mut image,
                    extras.attestations,
                    &output.names,
                    &platform,
                )
                .map_err(|e| fail(output, e))?;
            }
            let (top, _) = image.top();
            exported.digest = Some(top.digest.clone());
            exported.manifest = Some((top.media_type.clone(), top.size));
            exported.config_digest = Some(image.config.digest.clone());
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
        OutputKind::Local | OutputKind::Tar => {
            let mounted = worker
                .snapshots
                .mount(&snapshot, None)
                .map_err(|e| fail(output, e))?;
            match (&output.kind, &output.dest) {
                (OutputKind::Local, Some(Destination::Path(p))) => {
                    buildwit_exporter::export_local(mounted.path(), p)
                        .map_err(|e| fail(output, e))?
                }
                (OutputKind::Local, _) => return Err(fail(output, "type=local needs dest=DIR")),
                (_, Some(Destination::Path(p))) => {
                    buildwit_exporter::export_tar_file(mounted.path(), p)
                        .map_err(|e| fail(output, e))?
                }
                (_, _) => {
                    let mut out = std::io::stdout().lock();
                    buildwit_exporter::export_tar(mounted.path(), &mut out)
                        .map_err(|e| fail(output, e))?;
                }
            }
        }
    }
    Ok(exported)
}

/// `os/arch[/variant]` of an image config.
fn platform_of(config: &[u8]) -> String {
    let config: serde_json::Value = serde_json::from_slice(config).unwrap_or_default();
    let field = |k: &str| config[k].as_str().unwrap_or_default().to_string();
    let mut platform = format!("{}/{}", field("os"), field("architecture"));
    if !field("variant").is_empty() {
        platform = format!("{platform}/{}", field("variant"));
    }
    platform
}

/// Push an exported image's blobs and manifest under `name`. With attestations, the image
/// manifest and the attestation manifest go up by digest, then the index under `name`.
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
    let Some(attached) = &image.attached else {
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
    let mut uploaded = 0;
    for (blobs, bytes, descriptor) in [
        (image_blobs, &image.manifest_bytes, &image.manifest),
        (
            paths(&mut attached.blobs.iter())?,
            &attached.manifest_bytes,
            &attached.manifest,
        ),
    ] {
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
        .push_image(name, &[], &attached.index_bytes, &attached.index.media_type)
        .await
        .map_err(|e| e.to_string())?;
    Ok(uploaded)
}
