//! Wasm frontend images: components published as OCI artifacts in the CNCF Wasm layout
//! (config `application/vnd.wasm.config.v0+json` with `architecture: wasm`, `os: wasip2`
//! and the component's WIT imports and exports; one `application/wasm` layer), and the
//! local store of the ones pulled.
//!
//! The store keeps each component once by digest (`components/<hex>.wasm`), which manifest
//! holds which component, and the digest each tag was last seen at, so a tag resolves
//! offline when the registry cannot be reached and a digest-pinned reference never needs
//! the network once its component is here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use buildwit_registry::{Registries, RegistryErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::DaemonError;

/// The config media type of a Wasm artifact.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The layer media type of a Wasm artifact.
pub const WASM_LAYER: &str = "application/wasm";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Annotation carrying the frontend's channel.
pub const ANNOTATION_CHANNEL: &str = "dev.buildwit.frontend.channel";

/// How tagged references are resolved (`[frontend."gateway.v0"] resolveMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolveMode {
    /// Ask the registry every time; fail if it cannot be reached.
    Always,
    /// Ask the registry; if it cannot be reached, use the digest last seen.
    Fallback,
    /// Use the digest last seen; ask the registry only for a tag never seen.
    Offline,
}

impl ResolveMode {
    /// The config value.
    pub fn parse(value: Option<&str>) -> Result<Self, DaemonError> {
        match value.unwrap_or("fallback") {
            "always" => Ok(ResolveMode::Always),
            "fallback" => Ok(ResolveMode::Fallback),
            "offline" => Ok(ResolveMode::Offline),
            other => Err(DaemonError::Setup(format!(
                "[frontend.\"gateway.v0\"] resolveMode = {other:?}: use always, fallback or offline"
            ))),
        }
    }
}

/// A pulled frontend image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:` of the component.
    pub component: String,
    /// Component size in bytes.
    pub size: u64,
    /// The frontend's name, version and channel from the manifest annotations.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    /// Version.
    pub version: String,
    #[serde(default)]
    /// Channel.
    pub channel: String,
}

#[derive(Default, Serialize, Deserialize)]
struct Index {
    /// Normalised tagged reference → manifest digest last seen.
    tags: BTreeMap<String, String>,
    /// Manifest digest → what it holds.
    manifests: BTreeMap<String, ImageRecord>,
}

/// A frontend resolved for a build.
pub struct Resolved {
    /// Where the component is kept (read only when the runtime has not loaded it yet).
    pub path: PathBuf,
    /// The normalised reference.
    pub reference: String,
    /// The manifest digest it resolved to.
    pub manifest_digest: String,
    /// What the store knows of it.
    pub record: ImageRecord,
    /// What the user should know (an offline fallback).
    pub warnings: Vec<String>,
}

/// What a frontend reference names.
pub enum Pulled {
    /// A Wasm component.
    Wasm(Resolved),
    /// A container image (BuildKit's kind of frontend); nothing of it was pulled yet.
    Container {
        /// The normalised reference.
        reference: String,
        /// The manifest (or index) digest it resolved to.
        manifest_digest: String,
        /// What the user should know.
        warnings: Vec<String>,
    },
}

/// The local store of pulled frontend images.
pub struct WasmImages {
    dir: PathBuf,
    lock: Mutex<()>,
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&tmp, data)?;
    std::fs::rename(tmp, path)
}

/// The Wasm artifact config of a component.
pub fn artifact_config(
    layer_digest: &str,
    imports: &[String],
    exports: &[String],
    created: &str,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "created": created,
        "author": null,
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
        "component": {"exports": exports, "imports": imports, "target": null},
    }))
    .expect("json")
}

/// The manifest of a Wasm artifact.
pub fn artifact_manifest(
    config: &[u8],
    layer_digest: &str,
    layer_size: usize,
    title: &str,
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": WASM_CONFIG, "digest": format!("sha256:{}", hex::encode(Sha256::digest(config))), "size": config.len()},
        "layers": [{"mediaType": WASM_LAYER, "digest": layer_digest, "size": layer_size,
                    "annotations": {"org.opencontainers.image.title": title}}],
        "annotations": annotations,
    }))
    .expect("json")
}

/// The parts of a Wasm artifact manifest we check.
#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
}

impl WasmImages {
    /// The store under `dir`.
    pub fn open(dir: PathBuf) -> Self {
        WasmImages {
            dir,
            lock: Mutex::new(()),
        }
    }

    fn index(&self) -> Index {
        std::fs::read(self.dir.join("index.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, index: &Index) -> Result<(), DaemonError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.io_error(e))?;
        write_atomic(
            &self.dir.join("index.json"),
            &serde_json::to_vec_pretty(index).expect("json"),
        )
        .map_err(|e| self.io_error(e))
    }

    fn io_error(&self, e: std::io::Error) -> DaemonError {
        DaemonError::Setup(format!("frontend store {}: {e}", self.dir.display()))
    }

    /// Where a component is kept.
    pub fn component_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("components")
            .join(format!("{}.wasm", hex_of(digest)))
    }

    fn cached(&self, index: &Index, manifest_digest: &str) -> Option<(ImageRecord, PathBuf)> {
        let record = index.manifests.get(manifest_digest)?;
        let path = self.component_path(&record.component);
        // Components were verified when pulled and are written atomically; a truncated
        // file is a miss. (Reading and hashing megabytes here on every build is measurable.)
        let size = std::fs::metadata(&path).ok()?.len();
        (size == record.size).then(|| (record.clone(), path))
    }

    /// Resolve `source` to a component, pulling what is missing.
    pub async fn resolve(
        &self,
        registries: &Registries,
        source: &str,
        mode: ResolveMode,
    ) -> Result<Pulled, DaemonError> {
        let reference = buildwit_registry::parse_reference(source)
            .map_err(|e| DaemonError::Policy(format!("frontend {e}")))?;
        let normalized = reference.whole();
        let mut warnings = Vec::new();
        let pinned = reference.digest().map(str::to_string);
        let index = self.index();
        let last_seen = index.tags.get(&normalized).cloned();

        // A pinned digest, or a tag in offline mode, needs no network once its component is here.
        let local = pinned.clone().or(if mode == ResolveMode::Offline {
            last_seen.clone()
        } else {
            None
        });
        if let Some(digest) = &local
            && let Some((record, path)) = self.cached(&index, digest)
        {
            return Ok(Pulled::Wasm(Resolved {
                path,
                reference: normalized,
                manifest_digest: digest.clone(),
                record,
                warnings,
            }));
        }

        let manifest = match registries.pull_raw_manifest(source).await {
            Ok(m) => m,
            Err(e)
                if mode == ResolveMode::Fallback
                    && pinned.is_none()
                    && matches!(e.kind(), RegistryErrorKind::Unreachable)
                    && last_seen
                        .as_ref()
                        .is_some_and(|d| self.cached(&index, d).is_some()) =>
            {
                let digest = last_seen.expect("checked");
                let (record, path) = self.cached(&index, &digest).expect("checked");
                warnings.push(format!(
                    "cannot reach the registry of {normalized} ({e}); using {digest}, the digest it had when last seen"
                ));
                return Ok(Pulled::Wasm(Resolved {
                    path,
                    reference: normalized,
                    manifest_digest: digest,
                    record,
                    warnings,
                }));
            }
            Err(e) => {
                let hint =
                    if last_seen.is_none() && matches!(e.kind(), RegistryErrorKind::Unreachable) {
                        " (it was never pulled, so there is no copy to fall back to)"
                    } else {
                        ""
                    };
                return Err(DaemonError::Policy(format!(
                    "frontend {normalized}: {e}{hint}"
                )));
            }
        };
        let digest = manifest.manifest_digest.clone();
        if let Some((record, path)) = self.cached(&index, &digest) {
            // The common cached build: the tag still names what it named.
            if pinned.is_none() && last_seen.as_deref() != Some(&digest) {
                self.remember(&normalized, true, &digest, &record)?;
            }
            return Ok(Pulled::Wasm(Resolved {
                path,
                reference: normalized,
                manifest_digest: digest,
                record,
                warnings,
            }));
        }
        // An image index or a manifest with another config is a container image: BuildKit's
        // kind of frontend, run in a container (its layers are pulled by the solver).
        let parsed = match serde_json::from_slice::<Manifest>(&manifest.manifest) {
            Ok(m) if m.config.media_type == WASM_CONFIG => m,
            _ => {
                return Ok(Pulled::Container {
                    reference: normalized,
                    manifest_digest: digest,
                    warnings,
                });
            }
        };
        let not_wasm = |what: String| {
            DaemonError::Policy(format!(
                "{normalized} on {} is not a usable Wasm frontend: {what}",
                manifest.registry
            ))
        };
        let [layer] = parsed.layers.as_slice() else {
            return Err(not_wasm(format!(
                "it has {} layers, expected one {WASM_LAYER} layer",
                parsed.layers.len()
            )));
        };
        if layer.media_type != WASM_LAYER {
            return Err(not_wasm(format!(
                "its layer has media type {:?}, expected {WASM_LAYER}",
                layer.media_type
            )));
        }
        let mut bytes = Vec::with_capacity(layer.size as usize);
        registries
            .pull_blob(source, &layer.digest, Some(layer.size), &mut bytes)
            .await
            .map_err(|e| DaemonError::Policy(format!("frontend {normalized}: {e}")))?;
        let record = ImageRecord {
            component: layer.digest.clone(),
            size: bytes.len() as u64,
            name: parsed
                .annotations
                .get("org.opencontainers.image.title")
                .cloned()
                .unwrap_or_default(),
            version: parsed
                .annotations
                .get("org.opencontainers.image.version")
                .cloned()
                .unwrap_or_default(),
            channel: parsed
                .annotations
                .get(ANNOTATION_CHANNEL)
                .cloned()
                .unwrap_or_default(),
        };
        std::fs::create_dir_all(self.dir.join("components")).map_err(|e| self.io_error(e))?;
        let path = self.component_path(&record.component);
        write_atomic(&path, &bytes).map_err(|e| self.io_error(e))?;
        self.remember(&normalized, pinned.is_none(), &digest, &record)?;
        Ok(Pulled::Wasm(Resolved {
            path,
            reference: normalized,
            manifest_digest: digest,
            record,
            warnings,
        }))
    }

    fn remember(
        &self,
        reference: &str,
        tagged: bool,
        digest: &str,
        record: &ImageRecord,
    ) -> Result<(), DaemonError> {
        let _guard = self.lock.lock().unwrap();
        let mut index = self.index();
        if tagged {
            index.tags.insert(reference.to_string(), digest.to_string());
        }
        index.manifests.insert(digest.to_string(), record.clone());
        self.save(&index)
    }

    /// Tagged references and what they were last seen as.
    pub fn list(&self) -> Vec<(String, String, ImageRecord)> {
        let index = self.index();
        let mut out: Vec<_> = index
            .tags
            .iter()
            .map(|(r, d)| {
                (
                    r.clone(),
                    d.clone(),
                    index.manifests.get(d).cloned().unwrap_or_default(),
                )
            })
            .collect();
        // Manifests only known by digest.
        for (d, rec) in &index.manifests {
            if !index.tags.values().any(|t| t == d) {
                out.push((String::new(), d.clone(), rec.clone()));
            }
        }
        out
    }

    /// Forget a reference (a tag, or a manifest digest); components nothing refers to any
    /// more are deleted. Returns the components deleted.
    pub fn remove(&self, what: &str) -> Result<Vec<String>, DaemonError> {
        let _guard = self.lock.lock().unwrap();
        let mut index = self.index();
        let normalized = buildwit_registry::parse_reference(what)
            .map(|r| r.whole())
            .unwrap_or_else(|_| what.to_string());
        let digest = index.tags.remove(&normalized).or_else(|| {
            let d = if what.starts_with("sha256:") {
                what.to_string()
            } else {
                normalized.rsplit('@').next()?.to_string()
            };
            index.manifests.contains_key(&d).then_some(d)
        });
        let Some(digest) = digest else {
            return Err(DaemonError::Policy(format!(
                "no frontend {what} in the store (see buildwit frontend ls)"
            )));
        };
        if !index.tags.values().any(|d| *d == digest) {
            index.manifests.remove(&digest);
        }
        let mut removed = Vec::new();
        let used: Vec<String> = index
            .manifests
            .values()
            .map(|r| r.component.clone())
            .collect();
        for entry in std::fs::read_dir(self.dir.join("components"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".wasm") else {
                continue;
            };
            let component = format!("sha256:{hex}");
            if !used.contains(&component) {
                std::fs::remove_file(entry.path()).map_err(|e| self.io_error(e))?;
                removed.push(component);
            }
        }
        self.save(&index)?;
        Ok(removed)
    }
}
