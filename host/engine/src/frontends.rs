//! Which component serves a frontend request, with BuildKit's policy applied:
//! `[frontend."dockerfile.v0"] enabled`, `[frontend."gateway.v0"] enabled` and
//! `allowedRepositories`, and the mapping of `docker/dockerfile` references to the built-in
//! components (stable and labs), so `# syntax=docker/dockerfile:1` needs no network.

use std::sync::Arc;

use buildwit_frontend::{LoadedFrontend, Runtime, builtin};
use buildwit_registry::{Access, Registries};

use crate::wasm_images::{Pulled, Resolved};

use crate::DaemonError;
use crate::container::ContainerImage;

/// The version of the built-in Dockerfile frontend (BuildKit's `dockerfile/1.26.0`).
pub const BUILTIN_DOCKERFILE_VERSION: (u64, u64, u64) = (1, 26, 0);

/// Repositories served by the built-in Dockerfile components.
const DOCKERFILE_REPOSITORIES: &[&str] = &[
    "docker.io/docker/dockerfile",
    "docker.io/docker/dockerfile-upstream",
];

/// What runs a frontend.
pub enum Served {
    /// A Wasm component (built in, a file, or an image).
    Wasm(Arc<LoadedFrontend>),
    /// A container image, run as BuildKit runs one.
    Container(Arc<ContainerImage>),
}

impl Served {
    /// The frontend, as events and errors name it.
    pub fn label(&self) -> &str {
        match self {
            Served::Wasm(loaded) => &loaded.label,
            Served::Container(image) => &image.pinned,
        }
    }
}

/// A frontend chosen for a request.
pub struct Selected {
    /// What runs it.
    pub served: Served,
    /// What it was asked as, and what serves it (for the build record).
    pub source: String,
    /// Things the user should know (a pin newer than the built-in, a digest pin).
    pub warnings: Vec<String>,
}

impl Selected {
    /// The Wasm component, for what only components have (WIT interfaces, publishing).
    pub fn component(&self) -> Result<&Arc<LoadedFrontend>, DaemonError> {
        match &self.served {
            Served::Wasm(loaded) => Ok(loaded),
            Served::Container(image) => Err(DaemonError::Policy(format!(
                "{} is a container image frontend, not a Wasm component",
                image.pinned
            ))),
        }
    }
}

/// The registered frontends and what they may ask of the daemon.
pub struct Frontends {
    /// The daemon's configuration.
    pub config: buildwit_config::Config,
    /// The Wasm runtime.
    pub runtime: Runtime,
    /// Image lookups through the configured registries.
    pub registries: std::sync::Arc<buildwit_registry::Registries>,
    /// Runs registry requests for frontends, which call in synchronously.
    pub io: tokio::runtime::Runtime,
    /// The daemon's state directory.
    pub root: std::path::PathBuf,
    /// Opened on the first build that solves: `--dump-llb` and `--call` need no worker.
    pub solver: std::sync::OnceLock<std::sync::Arc<buildwit_solver::Solver>>,
    /// Wasm frontend images pulled from registries.
    pub images: crate::wasm_images::WasmImages,
}

impl Frontends {
    /// The solver and its worker, opened on first use.
    pub fn solver(&self) -> Result<std::sync::Arc<buildwit_solver::Solver>, DaemonError> {
        use std::sync::Arc;
        if let Some(s) = self.solver.get() {
            return Ok(s.clone());
        }
        // Concurrent first builds (buildwitd) must not open the worker's state twice.
        static OPENING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _opening = OPENING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = self.solver.get() {
            return Ok(s.clone());
        }
        let oci = &self.config.worker.oci;
        let snapshotter = oci.snapshotter.as_deref().unwrap_or("auto");
        let options = buildwit_worker::WorkerOptions {
            runtime: oci.binary.clone().unwrap_or_else(|| "runc".into()),
            snapshotter: buildwit_worker::snapshot::Kind::parse(snapshotter).ok_or_else(|| {
                DaemonError::Setup(format!(
                    "[worker.oci] snapshotter = {snapshotter:?} is not supported (use auto, overlayfs or native)"
                ))
            })?,
            apparmor_profile: oci.apparmor_profile.clone(),
            network: network_config(&self.config),
            platforms: oci.platforms.clone(),
            ..Default::default()
        };
        let setup = |what: &str, e: &dyn std::fmt::Display| {
            DaemonError::Setup(format!("{what} under {}: {e}", self.root.display()))
        };
        let worker = buildwit_worker::Worker::open(&self.root, options)
            .map_err(|e| setup("worker state", &e))?;
        let db = buildwit_solver::CacheDb::open(&self.root.join("cache.db"))
            .map_err(|e| setup("cache database", &e))?;
        let parallelism = oci.max_parallelism.and_then(|n| usize::try_from(n).ok());
        // Compiled components are cache too: `du` counts them, prune --all and GC remove them
        // (the runtime compiles one again when it is next needed).
        let compiled = buildwit_solver::FileRecords {
            dir: compiled_dir(&self.root),
            suffix: ".cwasm".into(),
            record_type: buildwit_solver::gc::TYPE_FRONTEND.into(),
            description: "compiled frontend component".into(),
        };
        let solver = Arc::new(
            buildwit_solver::Solver::new(
                Arc::new(worker),
                self.registries.clone(),
                db,
                parallelism,
            )
            .with_files(compiled),
        );
        Ok(self.solver.get_or_init(|| solver).clone())
    }

    /// The component for frontend `name` with these options; an image is pulled with
    /// `access`'s credentials.
    pub fn select(
        &self,
        name: &str,
        options: &[(String, String)],
        access: &Access,
    ) -> Result<Selected, DaemonError> {
        match name {
            "dockerfile.v0" if self.config.dockerfile_enabled() => {
                self.builtin(false, "dockerfile.v0".into(), Vec::new())
            }
            "gateway.v0" if self.config.gateway_enabled() => {
                let source = options
                    .iter()
                    .find(|(k, _)| k == "source")
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| DaemonError::Policy("no source specified for gateway".into()))?;
                // BuildKit's escape hatch: BUILDKIT_SYNTAX=dockerfile.v0 means the built-in frontend.
                if source == "dockerfile.v0" && self.config.dockerfile_enabled() {
                    return self.builtin(false, "dockerfile.v0".into(), Vec::new());
                }
                self.check_allowed(&source)?;
                self.gateway(&source, access)
            }
            _ => Err(DaemonError::InvalidFrontend(name.to_string())),
        }
    }

    /// `allowedRepositories`: empty allows all; otherwise the source's repository name,
    /// normalised, must be listed (tags and digests are not compared).
    fn check_allowed(&self, source: &str) -> Result<(), DaemonError> {
        let allowed = &self.config.frontend.gateway.allowed_repositories;
        if allowed.is_empty() {
            return Ok(());
        }
        let name =
            repository_name(source).map_err(|e| DaemonError::Policy(format!("{source}: {e}")))?;
        let ok = allowed
            .iter()
            .any(|a| repository_name(a).is_ok_and(|a| a == name));
        if ok {
            Ok(())
        } else {
            Err(DaemonError::Policy(format!(
                "'{source}' is not an allowed gateway source"
            )))
        }
    }

    /// The frontend a gateway source names: the built-in Dockerfile frontend for the
    /// `docker/dockerfile` references it may serve (see [`Pins`]), else the image the
    /// reference names from its registry, Wasm or container (policy was checked by the
    /// caller).
    pub(crate) fn gateway(&self, source: &str, access: &Access) -> Result<Selected, DaemonError> {
        let name =
            repository_name(source).map_err(|e| DaemonError::Policy(format!("{source}: {e}")))?;
        let gateway = &self.config.frontend.gateway;
        let pins = Pins::parse(gateway.dockerfile_pins.as_deref())?;
        let (tag, digest) = tag_and_digest(source);
        let builtin = gateway.builtin_dockerfile.unwrap_or(true)
            && DOCKERFILE_REPOSITORIES.contains(&name.as_str())
            && digest.is_none()
            && (pins == Pins::Builtin || tag.as_deref().is_none_or(builtin_is));
        if !builtin {
            let mode = crate::wasm_images::ResolveMode::parse(gateway.resolve_mode.as_deref())?;
            let registries = self.registries.with_access(access);
            let pulled = self
                .io
                .block_on(self.images.resolve(&registries, source, mode))?;
            return match pulled {
                Pulled::Wasm(resolved) => Ok(Selected {
                    served: Served::Wasm(self.load_stored(&resolved)?),
                    source: format!("{}@{}", resolved.reference, resolved.manifest_digest),
                    warnings: resolved.warnings,
                }),
                Pulled::Container {
                    reference,
                    manifest_digest,
                    warnings,
                } => self.container(&registries, &reference, &manifest_digest, warnings),
            };
        }
        let labs = tag
            .as_deref()
            .is_some_and(|t| t == "labs" || t.ends_with("-labs"));
        let mut warnings = Vec::new();
        if let Some(t) = tag.as_deref().filter(|t| !builtin_is(t)) {
            let newer = parse_version(t).is_some_and(|v| v > BUILTIN_DOCKERFILE_VERSION);
            warnings.push(match newer {
                true => format!(
                    "{source} asks for a newer Dockerfile frontend than the built-in {}; building with the built-in one",
                    version_string()
                ),
                false => format!(
                    "{source} pins Dockerfile frontend {t}; it is served by the built-in {} \
                     (dockerfilePins = \"exact\" under [frontend.\"gateway.v0\"] runs the pinned image)",
                    version_string()
                ),
            });
        }
        let channel = if labs { "labs" } else { "stable" };
        self.builtin(
            labs,
            format!(
                "{source} (built-in dockerfile {} {channel})",
                version_string()
            ),
            warnings,
        )
    }

    /// The runtime's frontend for a stored component, read from the store only the first time.
    fn load_stored(&self, resolved: &Resolved) -> Result<Arc<LoadedFrontend>, DaemonError> {
        let digest = &resolved.record.component;
        if let Some(loaded) = self.runtime.loaded(digest) {
            return Ok(loaded);
        }
        let bytes = std::fs::read(&resolved.path).map_err(|e| {
            DaemonError::Setup(format!(
                "frontend {}: cannot read {}: {e}",
                resolved.reference,
                resolved.path.display()
            ))
        })?;
        Ok(self
            .runtime
            .load_known(&resolved.reference, &bytes, digest)?)
    }

    /// A container frontend: its config, read for the worker's platform.
    fn container(
        &self,
        registries: &Registries,
        reference: &str,
        manifest_digest: &str,
        warnings: Vec<String>,
    ) -> Result<Selected, DaemonError> {
        let name = reference.split_once('@').map_or(reference, |(n, _)| n);
        let pinned = format!("{name}@{manifest_digest}");
        let (os, arch, variant) = crate::parse_platform("");
        let config = self
            .io
            .block_on(registries.resolve_image_config(&pinned, &os, &arch, &variant))
            .map_err(|e| DaemonError::Policy(format!("frontend {reference}: {e}")))?;
        let image = ContainerImage::new(pinned.clone(), &config.config)
            .map_err(|e| DaemonError::Policy(format!("frontend {pinned}: {e}")))?;
        Ok(Selected {
            served: Served::Container(Arc::new(image)),
            source: pinned,
            warnings,
        })
    }

    fn builtin(
        &self,
        labs: bool,
        source: String,
        warnings: Vec<String>,
    ) -> Result<Selected, DaemonError> {
        let (label, bytes, digest, compiled) = if labs {
            (
                "dockerfile.v0 (labs)",
                builtin::DOCKERFILE_LABS,
                builtin::DOCKERFILE_LABS_DIGEST,
                builtin::DOCKERFILE_LABS_COMPILED,
            )
        } else {
            (
                "dockerfile.v0",
                builtin::DOCKERFILE,
                builtin::DOCKERFILE_DIGEST,
                builtin::DOCKERFILE_COMPILED,
            )
        };
        Ok(Selected {
            served: Served::Wasm(self.runtime.load_builtin(label, bytes, digest, compiled)?),
            source,
            warnings,
        })
    }
}

/// Which `docker/dockerfile` version pins the built-in frontend serves
/// (`[frontend."gateway.v0"] dockerfilePins`). Digest pins always run the pinned image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pins {
    /// Every tag (default): no network, with a warning when the tag pins another version.
    Builtin,
    /// Only tags the built-in is (`1`, `1.26`, `1.26.0`, `latest`, their `-labs`); other
    /// versions are pulled and run.
    Exact,
}

impl Pins {
    fn parse(value: Option<&str>) -> Result<Self, DaemonError> {
        match value.unwrap_or("builtin") {
            "builtin" => Ok(Pins::Builtin),
            "exact" => Ok(Pins::Exact),
            other => Err(DaemonError::Setup(format!(
                "[frontend.\"gateway.v0\"] dockerfilePins = {other:?}: use builtin or exact"
            ))),
        }
    }
}

/// Whether a `docker/dockerfile` tag names the built-in frontend: a channel (`latest`,
/// `labs`) or a version whose every given part is the built-in's (`1`, `1.26`, `1.26.0`).
fn builtin_is(tag: &str) -> bool {
    let core = tag.strip_suffix("-labs").unwrap_or(tag);
    if core == "latest" || core == "labs" {
        return true;
    }
    let (a, b, c) = BUILTIN_DOCKERFILE_VERSION;
    let have = [a, b, c];
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() <= 3
        && parts
            .iter()
            .zip(have)
            .all(|(p, v)| p.parse::<u64>().is_ok_and(|p| p == v))
}

fn version_string() -> String {
    let (a, b, c) = BUILTIN_DOCKERFILE_VERSION;
    format!("{a}.{b}.{c}")
}

/// `1`, `1.7`, `1.7.2`, with an optional `-labs` suffix; missing parts are 0.
fn parse_version(tag: &str) -> Option<(u64, u64, u64)> {
    let core = tag.strip_suffix("-labs").unwrap_or(tag);
    let mut parts = core.split('.').map(|p| p.parse::<u64>());
    let major = parts.next()?.ok()?;
    let minor = parts.next().transpose().ok()?.unwrap_or(0);
    let patch = parts.next().transpose().ok()?.unwrap_or(0);
    parts.next().is_none().then_some((major, minor, patch))
}

/// Where the runtime keeps the components it compiled, under the state directory `root`.
pub(crate) fn compiled_dir(root: &std::path::Path) -> std::path::PathBuf {
    root.join("frontends").join("compiled")
}

/// The tag and the digest a reference names, each if it names one.
pub(crate) fn tag_and_digest(reference: &str) -> (Option<String>, Option<String>) {
    let (rest, digest) = match reference.split_once('@') {
        Some((r, d)) => (r, Some(d.to_string())),
        None => (reference, None),
    };
    let last = rest.rsplit('/').next().unwrap_or(rest);
    (last.split_once(':').map(|(_, t)| t.to_string()), digest)
}

/// The repository of a reference, normalised like Docker (`alpine` →
/// `docker.io/library/alpine`), without tag or digest.
pub fn repository_name(reference: &str) -> Result<String, String> {
    let r = buildwit_registry::parse_reference(reference).map_err(|e| e.to_string())?;
    Ok(format!("{}/{}", r.registry(), r.repository()))
}

/// The worker's network settings from `[worker.oci]` and `[dns]`.
pub(crate) fn network_config(
    config: &buildwit_config::Config,
) -> buildwit_worker::network::NetworkConfig {
    let oci = &config.worker.oci;
    let dns = config.dns.clone().unwrap_or_default();
    buildwit_worker::network::NetworkConfig {
        mode: oci.network_mode.clone(),
        cni_config_path: oci.cni_config_path.as_ref().map(Into::into),
        cni_binary_path: oci.cni_binary_path.as_ref().map(Into::into),
        cni_pool_size: oci
            .cni_pool_size
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0),
        bridge_name: oci.bridge_name.clone(),
        bridge_subnet: oci.bridge_subnet.clone(),
        dns: buildwit_worker::network::DnsSettings {
            nameservers: dns.nameservers,
            options: dns.options,
            search_domains: dns.search_domains,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_normalise_like_docker() {
        assert_eq!(
            repository_name("alpine").unwrap(),
            "docker.io/library/alpine"
        );
        assert_eq!(
            repository_name("library/alpine:3").unwrap(),
            "docker.io/library/alpine"
        );
        assert_eq!(
            repository_name(&format!(
                "docker.io/library/alpine@sha256:{}",
                "a".repeat(64)
            ))
            .unwrap(),
            "docker.io/library/alpine"
        );
        assert_eq!(
            repository_name("docker/dockerfile:1-labs").unwrap(),
            "docker.io/docker/dockerfile"
        );
        assert_eq!(
            repository_name("127.0.0.1:5000/x/y:9.9.9").unwrap(),
            "127.0.0.1:5000/x/y"
        );
        assert_eq!(repository_name("localhost/x").unwrap(), "localhost/x");
        assert!(
            repository_name("Alpine")
                .unwrap_err()
                .contains("must be lowercase")
        );
    }

    #[test]
    fn versions_and_channels() {
        assert_eq!(parse_version("1"), Some((1, 0, 0)));
        assert_eq!(parse_version("1.27.1-labs"), Some((1, 27, 1)));
        assert_eq!(parse_version("labs"), None);
        assert_eq!(
            tag_and_digest("docker/dockerfile:1.7@sha256:ab"),
            (Some("1.7".into()), Some("sha256:ab".into()))
        );
        assert_eq!(tag_and_digest("host:5000/x"), (None, None));
        for tag in [
            "1",
            "1.26",
            "1.26.0",
            "1-labs",
            "1.26-labs",
            "latest",
            "labs",
        ] {
            assert!(builtin_is(tag), "{tag}");
        }
        for tag in ["1.4", "1.4.3", "1.26.1", "2", "1.4-labs", "master"] {
            assert!(!builtin_is(tag), "{tag}");
        }
    }
}
