//! `buildkitd.toml`: BuildKit's whole configuration schema (v0.32), with its size and
//! duration syntax and defaults.
//!
//! BuildKit ignores unknown keys silently; [`load`] reports each one as a warning naming
//! the key and its line. A value of the wrong type is an error naming the key, the line and
//! the column.

mod size;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use size::{DiskSpace, Duration};

/// buildwit's default state directory.
pub const DEFAULT_ROOT: &str = "/var/lib/buildwit";
/// buildwit's default gRPC address.
pub const DEFAULT_ADDRESS: &str = "unix:///run/buildwit/buildwitd.sock";
/// Entitlements a daemon may allow.
pub const ENTITLEMENTS: &[&str] = &["security.insecure", "network.host", "device"];

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Debug logging (deprecated: use `log.level`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    /// Trace logging (deprecated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<bool>,
    /// State directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Entitlements the daemon allows (`security.insecure`, `network.host`, `device`).
    #[serde(
        rename = "insecure-entitlements",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub insecure_entitlements: Vec<String>,
    /// Proxy networking for exec steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_network: Option<bool>,
    /// Extra provenance configuration directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance_env_dir: Option<String>,
    /// `[log]`.
    #[serde(default)]
    pub log: LogConfig,
    /// `[grpc]`.
    #[serde(default)]
    pub grpc: GrpcConfig,
    /// `[otel]`.
    #[serde(default)]
    pub otel: OtelConfig,
    /// `[cdi]`.
    #[serde(default)]
    pub cdi: CdiConfig,
    /// `[worker.oci]` and `[worker.containerd]`.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// `[registry."host"]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registry: BTreeMap<String, RegistryConfig>,
    /// `[dns]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
    /// `[history]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryConfig>,
    /// `[frontend."dockerfile.v0"]` and `[frontend."gateway.v0"]`.
    #[serde(default)]
    pub frontend: FrontendsConfig,
    /// `[system]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemConfig>,
    /// `[cache.gha]`.
    #[serde(default)]
    pub cache: CacheConfig,
}

/// `[log]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogConfig {
    /// `text` or `json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `error`, `warn`, `info`, `debug`, `trace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

/// `[grpc]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcConfig {
    /// Listen addresses (`unix://…`, `tcp://…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address: Vec<String>,
    /// Address for health, metrics and profiling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_address: Option<String>,
    /// Owner of the unix socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<i64>,
    /// Group of the unix socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<i64>,
    /// Windows only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_descriptor: Option<String>,
    /// `[grpc.tls]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// `[grpc.tls]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsConfig {
    /// Server certificate.
    #[serde(default)]
    pub cert: String,
    /// Server key.
    #[serde(default)]
    pub key: String,
    /// CA for client certificates.
    #[serde(default)]
    pub ca: String,
}

/// `[otel]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OtelConfig {
    /// Collector socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
}

/// `[cdi]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiConfig {
    /// Turn CDI off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Where CDI specs live.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spec_dirs: Vec<String>,
    /// Devices allowed without the `device` entitlement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auto_allowed: Vec<String>,
}

/// `[worker]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// `[worker.oci]`.
    #[serde(default)]
    pub oci: OciConfig,
    /// `[worker.containerd]`.
    #[serde(default)]
    pub containerd: ContainerdConfig,
}

/// Declares a worker table: its own fields plus the GC and network fields both workers
/// share. The shared fields are inline (not `#[serde(flatten)]`), so unknown keys and type
/// errors inside them are still reported with their line.
macro_rules! worker_table {
    ($(#[$doc:meta])* $name:ident { $($(#[$fattr:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            $($(#[$fattr])* pub $field: $ty,)*
            /// Run GC.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub gc: Option<bool>,
            /// Deprecated: use `reservedSpace`.
            #[serde(rename = "gckeepstorage", skip_serializing_if = "Option::is_none")]
            pub gc_keep_storage: Option<DiskSpace>,
            /// Space GC never frees below.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub reserved_space: Option<DiskSpace>,
            /// Space above which GC frees.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub max_used_space: Option<DiskSpace>,
            /// Free space GC tries to leave.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub min_free_space: Option<DiskSpace>,
            /// `[[…gcpolicy]]`.
            #[serde(rename = "gcpolicy", default, skip_serializing_if = "Vec::is_empty")]
            pub gc_policy: Vec<GcPolicy>,
            /// `auto`, `cni`, `host`.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub network_mode: Option<String>,
            /// CNI config.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub cni_config_path: Option<String>,
            /// CNI plugins.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub cni_binary_path: Option<String>,
            /// Reusable network namespaces.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub cni_pool_size: Option<i64>,
            /// Bridge name.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub bridge_name: Option<String>,
            /// Bridge subnet.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub bridge_subnet: Option<String>,
        }

        impl $name {
            /// The GC settings.
            pub fn gc_config(&self) -> GcConfig {
                GcConfig {
                    gc: self.gc,
                    gc_keep_storage: self.gc_keep_storage,
                    reserved_space: self.reserved_space,
                    max_used_space: self.max_used_space,
                    min_free_space: self.min_free_space,
                    gc_policy: self.gc_policy.clone(),
                }
            }
        }
    };
}

/// Garbage-collection settings of a worker.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GcConfig {
    /// Run GC.
    pub gc: Option<bool>,
    /// Deprecated: use `reserved_space`.
    pub gc_keep_storage: Option<DiskSpace>,
    /// Space GC never frees below.
    pub reserved_space: Option<DiskSpace>,
    /// Space above which GC frees.
    pub max_used_space: Option<DiskSpace>,
    /// Free space GC tries to leave.
    pub min_free_space: Option<DiskSpace>,
    /// The rules.
    pub gc_policy: Vec<GcPolicy>,
}

worker_table! {
    /// `[worker.oci]`.
    OciConfig {
        /// Use this worker.
        #[serde(skip_serializing_if = "Option::is_none")]
        enabled: Option<bool>,
        /// Worker labels.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
        /// Platforms (detected when empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        platforms: Vec<String>,
        /// `auto`, `overlayfs`, `native`.
        #[serde(skip_serializing_if = "Option::is_none")]
        snapshotter: Option<String>,
        /// Rootless mode.
        #[serde(skip_serializing_if = "Option::is_none")]
        rootless: Option<bool>,
        /// Run steps in the daemon's pid namespace.
        #[serde(skip_serializing_if = "Option::is_none")]
        no_process_sandbox: Option<bool>,
        /// User namespace remapping.
        #[serde(skip_serializing_if = "Option::is_none")]
        user_remap_unsupported: Option<String>,
        /// OCI runtime binary (default `runc`).
        #[serde(skip_serializing_if = "Option::is_none")]
        binary: Option<String>,
        /// Proxy snapshotter socket.
        #[serde(skip_serializing_if = "Option::is_none")]
        proxy_snapshotter_path: Option<String>,
        /// Default cgroup parent.
        #[serde(skip_serializing_if = "Option::is_none")]
        default_cgroup_parent: Option<String>,
        /// stargz snapshotter settings.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        stargz_snapshotter: BTreeMap<String, toml::Value>,
        /// AppArmor profile of build containers.
        #[serde(rename = "apparmor-profile", skip_serializing_if = "Option::is_none")]
        apparmor_profile: Option<String>,
        /// SELinux labels.
        #[serde(skip_serializing_if = "Option::is_none")]
        selinux: Option<bool>,
        /// Build steps run at once (0 or unset: unlimited, as BuildKit).
        #[serde(rename = "max-parallelism", skip_serializing_if = "Option::is_none")]
        max_parallelism: Option<i64>,
    }
}

worker_table! {
    /// `[worker.containerd]`.
    ContainerdConfig {
        /// containerd socket.
        #[serde(skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        /// Use this worker.
        #[serde(skip_serializing_if = "Option::is_none")]
        enabled: Option<bool>,
        /// Worker labels.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
        /// Platforms.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        platforms: Vec<String>,
        /// containerd namespace.
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// `[worker.containerd.runtime]`.
        #[serde(skip_serializing_if = "Option::is_none")]
        runtime: Option<ContainerdRuntime>,
        /// Snapshotter.
        #[serde(skip_serializing_if = "Option::is_none")]
        snapshotter: Option<String>,
        /// AppArmor profile.
        #[serde(rename = "apparmor-profile", skip_serializing_if = "Option::is_none")]
        apparmor_profile: Option<String>,
        /// SELinux labels.
        #[serde(skip_serializing_if = "Option::is_none")]
        selinux: Option<bool>,
        /// Build steps run at once.
        #[serde(rename = "max-parallelism", skip_serializing_if = "Option::is_none")]
        max_parallelism: Option<i64>,
        /// Default cgroup parent.
        #[serde(skip_serializing_if = "Option::is_none")]
        default_cgroup_parent: Option<String>,
        /// Rootless mode.
        #[serde(skip_serializing_if = "Option::is_none")]
        rootless: Option<bool>,
    }
}

/// `[worker.containerd.runtime]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerdRuntime {
    /// Runtime name.
    #[serde(default)]
    pub name: String,
    /// Shim path.
    #[serde(default)]
    pub path: String,
    /// Runtime options.
    #[serde(default)]
    pub options: BTreeMap<String, toml::Value>,
}

/// One `[[…gcpolicy]]` rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcPolicy {
    /// Apply to every record, shared or not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// Record filters, such as `type==source.local`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// Keep records used more recently than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_duration: Option<Duration>,
    /// Deprecated: use `reservedSpace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_bytes: Option<DiskSpace>,
    /// Space never freed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_space: Option<DiskSpace>,
    /// Space above which records are freed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_used_space: Option<DiskSpace>,
    /// Free space to leave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_free_space: Option<DiskSpace>,
}

/// `[registry."host"]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistryConfig {
    /// Mirrors, tried in order (`host[:port][/path]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
    /// Plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<bool>,
    /// HTTPS without verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// Extra CA certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca: Vec<String>,
    /// Client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keypair: Vec<KeyPair>,
    /// Directories of certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tlsconfigdir: Vec<String>,
}

/// A client certificate and key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyPair {
    /// Key file.
    pub key: String,
    /// Certificate file.
    pub cert: String,
}

/// `[dns]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsConfig {
    /// Name servers.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// resolv.conf options.
    #[serde(default)]
    pub options: Vec<String>,
    /// Search domains.
    #[serde(default)]
    pub search_domains: Vec<String>,
}

/// `[history]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryConfig {
    /// Drop records older than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// Keep at most this many records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_entries: Option<i64>,
}

/// `[frontend]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FrontendsConfig {
    /// `[frontend."dockerfile.v0"]`.
    #[serde(rename = "dockerfile.v0", default)]
    pub dockerfile: DockerfileFrontendConfig,
    /// `[frontend."gateway.v0"]`.
    #[serde(rename = "gateway.v0", default)]
    pub gateway: GatewayFrontendConfig,
}

/// `[frontend."dockerfile.v0"]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DockerfileFrontendConfig {
    /// Unset means enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `[frontend."gateway.v0"]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayFrontendConfig {
    /// Unset means enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Frontend images gateway.v0 may run (repository names; empty allows all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_repositories: Vec<String>,
}

/// `[system]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemConfig {
    /// How often emulated platforms are rescanned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platforms_cache_max_age: Option<Duration>,
    /// Registry requests at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_registry_concurrency: Option<i64>,
}

/// `[cache]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// `[cache.gha]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gha: Option<GhaCacheConfig>,
}

/// `[cache.gha]`: signed GitHub Actions cache.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GhaCacheConfig {
    /// `[cache.gha.sign]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign: Option<GhaSign>,
    /// `[cache.gha.verify]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<GhaVerify>,
}

/// `[cache.gha.sign]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GhaSign {
    /// Signing command, payload on stdin.
    #[serde(default)]
    pub command: Vec<String>,
}

/// `[cache.gha.verify]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GhaVerify {
    /// Require signatures.
    #[serde(default)]
    pub required: bool,
    /// `[cache.gha.verify.policy]`: thresholds and certificate properties.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policy: BTreeMap<String, toml::Value>,
}

/// A configuration problem that does not stop loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Dotted key.
    pub key: String,
    /// 1-based line (0 if unknown).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or a value of the wrong type or form.
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Key and problem.
        message: String,
    },
}

/// A loaded configuration.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Unknown keys and other non-fatal problems.
    pub warnings: Vec<ConfigWarning>,
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
}

/// `/etc/buildkit/buildkitd.toml` as root, `$XDG_CONFIG_HOME/buildkit/buildkitd.toml` (or
/// `~/.config/buildkit/buildkitd.toml`) otherwise.
pub fn default_path() -> PathBuf {
    if is_root() {
        return PathBuf::from("/etc/buildkit/buildkitd.toml");
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("buildkit/buildkitd.toml")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Load a config file; a missing file is the default configuration (as BuildKit).
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, &path.display().to_string()).map(|l| Loaded {
            source: Some(path.to_path_buf()),
            ..l
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Loaded::default()),
        Err(e) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Load a config file named on the command line: it must exist.
pub fn load_explicit(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    load_str(&text, &path.display().to_string()).map(|l| Loaded {
        source: Some(path.to_path_buf()),
        ..l
    })
}

/// Load configuration text; `origin` names it in messages.
pub fn load_str(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    let position = |offset: usize| {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, column)
    };
    let tree = toml::de::DeTable::parse(text).map_err(|e| {
        let (line, column) = position(e.span().map_or(0, |s| s.start));
        ConfigError::Invalid {
            origin: origin.into(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    let mut unknown = Vec::new();
    let deserializer = toml::de::Deserializer::from(tree.clone());
    let config: Config =
        serde_ignored::deserialize(deserializer, |path| unknown.push(path.to_string())).map_err(
            |e: toml::de::Error| {
                // Deserialize again without the unknown-key tracker, which hides the error's span.
                let e = toml::from_str::<Config>(text).err().unwrap_or(e);
                let offset = e.span().map_or(0, |s| s.start);
                let (line, column) = position(offset);
                let key = key_at(tree.get_ref(), offset).unwrap_or_default();
                let message = e.message().trim().to_string();
                ConfigError::Invalid {
                    origin: origin.into(),
                    line,
                    column,
                    message: if key.is_empty() {
                        message
                    } else {
                        format!("{key}: {message}")
                    },
                }
            },
        )?;
    let mut warnings: Vec<ConfigWarning> = unknown
        .into_iter()
        .map(|key| {
            let line = span_of(tree.get_ref(), &key).map_or(0, |o| position(o).0);
            ConfigWarning {
                message: format!(
                    "{origin}:{line}: unknown key {key:?} (ignored, as BuildKit does)"
                ),
                key,
                line,
            }
        })
        .collect();
    for e in &config.insecure_entitlements {
        if !ENTITLEMENTS.contains(&e.as_str()) {
            let line =
                span_of(tree.get_ref(), "insecure-entitlements").map_or(0, |o| position(o).0);
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                line,
                column: 1,
                message: format!(
                    "insecure-entitlements: invalid entitlement {e:?} (allowed: {})",
                    ENTITLEMENTS.join(", ")
                ),
            });
        }
    }
    if config.debug.is_some() || config.trace.is_some() {
        warnings.push(ConfigWarning {
            key: "debug".into(),
            line: 0,
            message: format!("{origin}: `debug` and `trace` are deprecated; use [log] level"),
        });
    }
    Ok(Loaded {
        config,
        warnings,
        source: None,
    })
}

type Tree<'i> = toml::de::DeTable<'i>;

/// The dotted key whose value contains byte `offset`. Tables are searched whatever their
/// own span (a `[table]` header's span does not cover its body).
fn key_at(table: &Tree<'_>, offset: usize) -> Option<String> {
    for (k, v) in table {
        let here = quote_key(k.get_ref());
        let deeper = match v.get_ref() {
            toml::de::DeValue::Table(t) => key_at(t, offset),
            toml::de::DeValue::Array(items) => items.iter().find_map(|i| match i.get_ref() {
                toml::de::DeValue::Table(t) => key_at(t, offset),
                _ => None,
            }),
            _ => None,
        };
        match deeper {
            Some(d) => return Some(format!("{here}.{d}")),
            None if v.span().contains(&offset) || k.span().contains(&offset) => return Some(here),
            None => {}
        }
    }
    None
}

fn quote_key(k: &str) -> String {
    if k.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

/// Byte offset of a dotted key (as serde_ignored prints it) in the tree.
fn span_of(table: &Tree<'_>, path: &str) -> Option<usize> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    // serde_ignored prints sequence indexes as numbers; map keys may contain dots, so try
    // the longest matching key first.
    let (key, value) = table
        .iter()
        .find(|(k, _)| {
            let k = k.get_ref().as_ref();
            path == k || path.starts_with(&format!("{k}."))
        })
        .or_else(|| table.iter().find(|(k, _)| k.get_ref().as_ref() == head))?;
    let rest = path
        .strip_prefix(key.get_ref().as_ref())
        .and_then(|r| r.strip_prefix('.'))
        .or(rest);
    match (rest, value.get_ref()) {
        (None, _) => Some(key.span().start),
        (Some(r), toml::de::DeValue::Table(t)) => span_of(t, r).or(Some(key.span().start)),
        (Some(r), toml::de::DeValue::Array(items)) => {
            let (index, rest) = r.split_once('.').unwrap_or((r, ""));
            match (index.parse::<usize>().ok().and_then(|i| items.get(i)), rest) {
                (Some(item), "") => Some(item.span().start),
                (Some(item), rest) => match item.get_ref() {
                    toml::de::DeValue::Table(t) => span_of(t, rest).or(Some(item.span().start)),
                    _ => Some(item.span().start),
                },
                (None, _) => Some(key.span().start),
            }
        }
        _ => Some(key.span().start),
    }
}

impl Config {
    /// Print as TOML (for `buildwit debug config`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }

    /// The state directory.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(self.root.as_deref().unwrap_or(DEFAULT_ROOT))
    }

    /// Whether `dockerfile.v0` is enabled (unset means yes).
    pub fn dockerfile_enabled(&self) -> bool {
        self.frontend.dockerfile.enabled.unwrap_or(true)
    }

    /// Whether `gateway.v0` is enabled (unset means yes).
    pub fn gateway_enabled(&self) -> bool {
        self.frontend.gateway.enabled.unwrap_or(true)
    }

    /// Build history limits: max age (default 48 h) and entries (default 50).
    pub fn history_limits(&self) -> (std::time::Duration, i64) {
        let h = self.history.clone().unwrap_or_default();
        (
            h.max_age
                .map_or(std::time::Duration::from_secs(48 * 3600), |d| d.0),
            h.max_entries.unwrap_or(50),
        )
    }
}

impl GcPolicy {
    /// The policy with the deprecated `keepBytes` moved into `reservedSpace` when that is
    /// unset, as BuildKit does.
    pub fn normalized(&self) -> GcPolicy {
        let mut p = self.clone();
        if p.reserved_space.is_none() {
            p.reserved_space = p.keep_bytes.take();
        } else {
            p.keep_bytes = None;
        }
        p
    }
}

/// One GC rule with sizes in bytes, for a disk of a given size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneRule {
    /// Every record.
    pub all: bool,
    /// Record filters.
    pub filters: Vec<String>,
    /// Keep recently used records.
    pub keep_duration: std::time::Duration,
    /// Never free below.
    pub reserved_space: i64,
    /// Free above.
    pub max_used_space: i64,
    /// Leave this much free.
    pub min_free_space: i64,
}

/// The GC rules of a worker: its `[[gcpolicy]]` entries, or BuildKit's default policy when
/// there are none (`disk_total` is the size of the disk holding the root, in bytes).
pub fn gc_rules(gc: &GcConfig, disk_total: i64) -> Vec<PruneRule> {
    if gc.gc == Some(false) {
        return Vec::new();
    }
    let bytes = |d: &Option<DiskSpace>| d.as_ref().map_or(0, |d| d.as_bytes(disk_total));
    if !gc.gc_policy.is_empty() {
        return gc
            .gc_policy
            .iter()
            .map(|p| {
                let p = p.normalized();
                PruneRule {
                    all: p.all,
                    filters: p.filters.clone(),
                    keep_duration: p.keep_duration.map_or(std::time::Duration::ZERO, |d| d.0),
                    reserved_space: bytes(&p.reserved_space),
                    max_used_space: bytes(&p.max_used_space),
                    min_free_space: bytes(&p.min_free_space),
                }
            })
            .collect();
    }
    // BuildKit's DefaultGCPolicy.
    let (mut reserved, mut max_used, mut min_free) = (
        bytes(&gc.reserved_space),
        bytes(&gc.max_used_space),
        bytes(&gc.min_free_space),
    );
    if reserved == 0 && max_used == 0 && min_free == 0 {
        reserved = bytes(&gc.gc_keep_storage);
    }
    if reserved == 0 && max_used == 0 && min_free == 0 {
        reserved = DiskSpace::percent(10)
            .as_bytes(disk_total)
            .min(10_000_000_000);
        min_free = DiskSpace::percent(20).as_bytes(disk_total);
        max_used = DiskSpace::percent(80)
            .as_bytes(disk_total)
            .min(100_000_000_000);
    }
    let rule = |all, filters: &[&str], keep_duration, max| PruneRule {
        all,
        filters: filters.iter().map(|s| s.to_string()).collect(),
        keep_duration,
        reserved_space: if max == 0 { reserved } else { 0 },
        max_used_space: if max == 0 { max_used } else { max },
        min_free_space: if max == 0 { min_free } else { 0 },
    };
    let hour = std::time::Duration::from_secs(3600);
    vec![
        rule(
            false,
            &[
                "type==source.local",
                "type==exec.cachemount",
                "type==source.git.checkout",
            ],
            48 * hour,
            512_000_000,
        ),
        rule(false, &[], 60 * 24 * hour, 0),
        rule(false, &[], std::time::Duration::ZERO, 0),
        rule(true, &[], std::time::Duration::ZERO, 0),
    ]
}
