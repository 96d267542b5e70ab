//! The `buildkitd.toml` schema: one struct per table, keys spelled exactly as BuildKit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{DiskSpace, Duration};

/// Whether a table is empty (left out when printing).
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

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
    #[serde(default, skip_serializing_if = "is_default")]
    pub log: LogConfig,
    /// `[grpc]`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub grpc: GrpcConfig,
    /// `[otel]`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub otel: OtelConfig,
    /// `[cdi]`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cdi: CdiConfig,
    /// `[worker.oci]` and `[worker.containerd]`.
    #[serde(default, skip_serializing_if = "is_default")]
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
    #[serde(default, skip_serializing_if = "is_default")]
    pub frontend: FrontendsConfig,
    /// `[system]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemConfig>,
    /// `[cache.gha]`.
    #[serde(default, skip_serializing_if = "is_default")]
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
    #[serde(default, skip_serializing_if = "is_default")]
    pub oci: OciConfig,
    /// `[worker.containerd]`.
    #[serde(default, skip_serializing_if = "is_default")]
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

        impl GcSettings for $name {
            fn gc_config(&self) -> GcConfig {
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

/// Anything carrying a worker's GC settings (both worker tables, and [`GcConfig`] itself).
pub trait GcSettings {
    /// The GC settings.
    fn gc_config(&self) -> GcConfig;
}

impl GcSettings for GcConfig {
    fn gc_config(&self) -> GcConfig {
        self.clone()
    }
}

/// Garbage-collection settings of a worker (BuildKit's embedded `GCConfig`).
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

/// `[[registry."host".keypair]]`: a client certificate and key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyPair {
    /// Key file.
    #[serde(default)]
    pub key: String,
    /// Certificate file.
    #[serde(default)]
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
    #[serde(rename = "dockerfile.v0", default, skip_serializing_if = "is_default")]
    pub dockerfile: DockerfileFrontendConfig,
    /// `[frontend."gateway.v0"]`.
    #[serde(rename = "gateway.v0", default, skip_serializing_if = "is_default")]
    pub gateway: GatewayFrontendConfig,
}

/// `[frontend."dockerfile.v0"]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DockerfileFrontendConfig {
    /// Unset means enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Short name for [`GatewayFrontendConfig`].
pub type GatewayConfig = GatewayFrontendConfig;

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
    /// buildwit: how a tagged frontend reference is resolved to a digest: `always` (ask
    /// the registry, fail if unreachable), `fallback` (default: ask, else use the digest
    /// last seen), `offline` (use the digest last seen; ask only if none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolve_mode: Option<String>,
    /// buildwit: serve `docker/dockerfile` references with the built-in Dockerfile
    /// frontend (default true); false pulls them like any other frontend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builtin_dockerfile: Option<bool>,
    /// buildwit: which `docker/dockerfile` version tags the built-in frontend serves:
    /// `builtin` (default: every tag, offline, with a warning when the tag pins another
    /// version) or `exact` (only tags naming the built-in's version; others are pulled and
    /// run). Digest pins always run the pinned image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile_pins: Option<String>,
    /// buildwit: whether a component given as a file (`buildwit build --frontend-file`,
    /// uploaded by a client of buildwitd) may run. Unset: as any gateway frontend, so only
    /// while `allowedRepositories` allows every image, since a file has no repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_frontend_files: Option<bool>,
}

impl GatewayFrontendConfig {
    /// The raw `allowedRepositories` list (empty allows every image; the frontend crate
    /// normalises the names).
    pub fn allowed_repositories(&self) -> &[String] {
        &self.allowed_repositories
    }

    /// Whether gateway.v0 is enabled (unset means yes).
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }

    /// Whether a component given as a file may run (see `allow_frontend_files`).
    pub fn allows_frontend_files(&self) -> bool {
        self.is_enabled()
            && self
                .allow_frontend_files
                .unwrap_or(self.allowed_repositories.is_empty())
    }
}

impl DockerfileFrontendConfig {
    /// Whether dockerfile.v0 is enabled (unset means yes).
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
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
    /// `[cache.gha.verify.policy]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<GhaVerifyPolicy>,
}

/// `[cache.gha.verify.policy]`: signature thresholds and the certificate properties that
/// must match (simple `*` wildcards).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GhaVerifyPolicy {
    /// Timestamps required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_threshold: Option<i64>,
    /// Transparency-log entries required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlog_threshold: Option<i64>,
    /// The sigstore certificate summary fields (`certificateIssuer`,
    /// `subjectAlternativeName`, `buildSignerURI`, …), kept as written: BuildKit matches
    /// them to Go field names case-insensitively.
    #[serde(flatten)]
    pub certificate: BTreeMap<String, toml::Value>,
}
