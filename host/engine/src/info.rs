//! What `buildwit info` / `debug workers` show: the daemon's version, its worker and the
//! built-in frontends, the same in-process and from buildwitd.

use std::collections::BTreeMap;

use buildwit_config::PruneRule;

use crate::{BuildApi, DaemonError, Engine, FrontendRef};

/// The daemon and its worker.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DaemonInfo {
    /// buildwit's version.
    pub version: String,
    /// The state directory.
    pub root: String,
    /// Bytes of the disk holding the root.
    pub disk_size: i64,
    /// Platforms the worker builds for.
    pub platforms: Vec<String>,
    /// Worker labels.
    pub labels: BTreeMap<String, String>,
    /// The GC rules run after builds.
    pub gc_policy: Vec<PruneRule>,
    /// Steps run at once (0: unlimited).
    pub max_parallelism: u32,
    /// Built-in frontends: the reference that selects it, name, version, channel.
    pub frontends: Vec<(String, String, String, String)>,
    /// The frontends the configuration enables.
    pub enabled_frontends: Vec<String>,
    /// The effective configuration, as TOML (`debug config`).
    pub config: String,
}

impl Engine {
    /// Describe the daemon. Loads the built-in frontends (compiled once, then cached).
    pub fn info(&self) -> Result<DaemonInfo, DaemonError> {
        let config = self.config();
        let oci = &config.worker.oci;
        let mut labels = BTreeMap::from([
            (
                "org.mobyproject.buildkit.worker.executor".to_string(),
                "oci".to_string(),
            ),
            (
                "org.mobyproject.buildkit.worker.snapshotter".to_string(),
                oci.snapshotter.clone().unwrap_or_else(|| "auto".into()),
            ),
        ]);
        if let Ok(mode) =
            buildwit_worker::network::Mode::resolve(&crate::frontends::network_config(config))
        {
            labels.insert(
                "org.mobyproject.buildkit.worker.network".to_string(),
                mode.label().to_string(),
            );
        }
        labels.extend(oci.labels.clone());
        let mut frontends = Vec::new();
        for reference in ["docker/dockerfile:1", "docker/dockerfile:labs"] {
            // A disabled Dockerfile frontend is not listed.
            match self.inspect_frontend(&FrontendRef::Image(reference.into())) {
                Ok(r) => frontends.push((reference.to_string(), r.name, r.version, r.channel)),
                Err(e) => tracing::debug!("info: {reference}: {e}"),
            }
        }
        let mut enabled_frontends = Vec::new();
        if config.frontend.dockerfile.enabled != Some(false) {
            enabled_frontends.push("dockerfile.v0".to_string());
        }
        if config.frontend.gateway.enabled != Some(false) {
            enabled_frontends.push("gateway.v0".to_string());
        }
        Ok(DaemonInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            root: self.frontends.root.display().to_string(),
            disk_size: self.disk_size(),
            // What steps can run on: this host's platforms and the emulated ones.
            platforms: if oci.platforms.is_empty() {
                buildwit_worker::platforms::runnable(std::path::Path::new(
                    buildwit_worker::platforms::BINFMT_MISC,
                ))
            } else {
                oci.platforms.clone()
            },
            labels,
            gc_policy: self.gc_rules(),
            max_parallelism: oci
                .max_parallelism
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            frontends,
            enabled_frontends,
            config: config.effective().to_toml(),
        })
    }
}
