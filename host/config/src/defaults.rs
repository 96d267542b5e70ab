//! Defaults, legacy conversions and BuildKit's default GC policy (§8.1, §8.4).

use std::path::PathBuf;

use crate::schema::*;
use crate::{DEFAULT_ADDRESS, DEFAULT_ROOT, DiskSpace, Duration, ENTITLEMENTS};

/// Default history age: 48 hours.
pub const DEFAULT_HISTORY_MAX_AGE: Duration = Duration::from_secs(48 * 3600);
/// Default number of history entries.
pub const DEFAULT_HISTORY_MAX_ENTRIES: i64 = 50;
/// Default provenance environment directory.
pub const DEFAULT_PROVENANCE_ENV_DIR: &str = "/etc/buildkit/provenance.d";
/// Default CNI configuration file.
pub const DEFAULT_CNI_CONFIG_PATH: &str = "/etc/buildkit/cni.json";
/// Default CNI plugin directory.
pub const DEFAULT_CNI_BINARY_PATH: &str = "/opt/cni/bin";
/// Default CDI spec directories.
pub const DEFAULT_CDI_SPEC_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi", "/etc/buildkit/cdi"];
/// Default OTEL collector socket (BuildKit: `/run/buildkit/otel-grpc.sock`).
pub const DEFAULT_OTEL_SOCKET_PATH: &str = "/run/buildwit/otel-grpc.sock";
/// Default containerd socket.
pub const DEFAULT_CONTAINERD_ADDRESS: &str = "/run/containerd/containerd.sock";
/// Default containerd namespace.
pub const DEFAULT_CONTAINERD_NAMESPACE: &str = "buildkit";

/// Rule 1 of the default policy: the easily reproduced record types (one containerd-style
/// filter string, exactly as BuildKit writes it).
pub const DEFAULT_GC_FILTER: &str =
    "type==source.local,type==exec.cachemount,type==source.git.checkout";
/// Default reserved space: 10 % of the disk…
pub const GC_RESERVE_PERCENTAGE: i64 = 10;
/// …capped at 10 GB.
pub const GC_RESERVE_BYTES: i64 = 10_000_000_000;
/// Default minimum free space: 20 % of the disk.
pub const GC_FREE_PERCENTAGE: i64 = 20;
/// Default maximum used space: 80 % of the disk…
pub const GC_MAX_PERCENTAGE: i64 = 80;
/// …capped at 100 GB.
pub const GC_MAX_BYTES: i64 = 100_000_000_000;

fn set<T>(slot: &mut Option<T>, value: T) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

fn set_str(slot: &mut Option<String>, value: &str) {
    if slot.as_deref().is_none_or(str::is_empty) {
        *slot = Some(value.to_string());
    }
}

fn nonzero(d: Option<DiskSpace>) -> Option<DiskSpace> {
    d.filter(|d| !d.is_zero())
}

impl GcConfig {
    /// BuildKit's `IsUnset`: reserved, max-used and min-free space all zero.
    pub fn is_unset(&self) -> bool {
        nonzero(self.reserved_space).is_none()
            && nonzero(self.max_used_space).is_none()
            && nonzero(self.min_free_space).is_none()
    }
}

macro_rules! worker_defaults {
    ($w:expr) => {{
        let w = $w;
        set(&mut w.gc, true);
        // Legacy: gckeepstorage is the reserved space when no limit is set.
        if w.gc_config().is_unset() {
            if let Some(keep) = nonzero(w.gc_keep_storage.take()) {
                w.reserved_space = Some(keep);
            }
        }
        for p in &mut w.gc_policy {
            *p = p.normalized();
        }
        set_str(&mut w.snapshotter, "auto");
        set_str(&mut w.network_mode, "auto");
        set_str(&mut w.cni_config_path, DEFAULT_CNI_CONFIG_PATH);
        set_str(&mut w.cni_binary_path, DEFAULT_CNI_BINARY_PATH);
    }};
}

impl Config {
    /// The configuration of an empty file with every default filled in.
    pub fn with_defaults() -> Config {
        Config::default().effective()
    }

    /// This configuration with BuildKit's defaults filled in where a key is unset (buildwit's
    /// own root and address), and legacy keys converted: `gckeepstorage` becomes
    /// `reservedSpace` when no space limit is set, each rule's `keepBytes` becomes its
    /// `reservedSpace` when that is unset. Unset `max-parallelism` stays unset (unlimited,
    /// as BuildKit); worker `enabled` stays unset (auto-detected); an empty `gcpolicy` stays
    /// empty (see [`default_gc_policy`], which needs the disk size).
    pub fn effective(&self) -> Config {
        let mut c = self.clone();
        set_str(&mut c.root, DEFAULT_ROOT);
        set_str(&mut c.provenance_env_dir, DEFAULT_PROVENANCE_ENV_DIR);
        if c.grpc.address.is_empty() {
            c.grpc.address = vec![DEFAULT_ADDRESS.to_string()];
        }
        set_str(&mut c.otel.socket_path, DEFAULT_OTEL_SOCKET_PATH);
        if c.cdi.spec_dirs.is_empty() {
            c.cdi.spec_dirs = DEFAULT_CDI_SPEC_DIRS
                .iter()
                .map(|s| s.to_string())
                .collect();
        }
        set(&mut c.cdi.disabled, false);
        let history = c.history.get_or_insert_with(Default::default);
        if history.max_age.is_none_or(|d| d.0.is_zero()) {
            history.max_age = Some(DEFAULT_HISTORY_MAX_AGE);
        }
        if history.max_entries.is_none_or(|n| n <= 0) {
            history.max_entries = Some(DEFAULT_HISTORY_MAX_ENTRIES);
        }
        set(&mut c.frontend.dockerfile.enabled, true);
        set(&mut c.frontend.gateway.enabled, true);
        worker_defaults!(&mut c.worker.oci);
        worker_defaults!(&mut c.worker.containerd);
        set_str(&mut c.worker.containerd.address, DEFAULT_CONTAINERD_ADDRESS);
        set_str(
            &mut c.worker.containerd.namespace,
            DEFAULT_CONTAINERD_NAMESPACE,
        );
        c
    }

    /// The state directory (`root`, or [`DEFAULT_ROOT`]).
    pub fn root(&self) -> PathBuf {
        match self.root.as_deref() {
            Some(r) if !r.is_empty() => PathBuf::from(r),
            _ => PathBuf::from(DEFAULT_ROOT),
        }
    }

    /// Whether `dockerfile.v0` is enabled (unset means yes).
    pub fn dockerfile_enabled(&self) -> bool {
        self.frontend.dockerfile.is_enabled()
    }

    /// Whether `gateway.v0` is enabled (unset means yes).
    pub fn gateway_enabled(&self) -> bool {
        self.frontend.gateway.is_enabled()
    }

    /// Build history limits: max age (default 48 h) and entries (default 50).
    pub fn history_limits(&self) -> (std::time::Duration, i64) {
        let h = self.history.clone().unwrap_or_default();
        (
            h.max_age
                .filter(|d| !d.0.is_zero())
                .unwrap_or(DEFAULT_HISTORY_MAX_AGE)
                .0,
            h.max_entries
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_HISTORY_MAX_ENTRIES),
        )
    }

    /// The entitlements the daemon allows: `insecure-entitlements`, plus `device` unless
    /// CDI is disabled (as buildkitd does).
    pub fn allowed_entitlements(&self) -> Vec<String> {
        let mut out = self.insecure_entitlements.clone();
        if self.cdi.disabled != Some(true) && !out.iter().any(|e| e == "device") {
            out.push("device".into());
        }
        out
    }

    /// Check `insecure-entitlements`: each value must be one of [`ENTITLEMENTS`]. The error
    /// names the key and the bad value.
    pub fn validate_entitlements(&self) -> Result<(), String> {
        match self
            .insecure_entitlements
            .iter()
            .find(|e| !ENTITLEMENTS.contains(&e.as_str()))
        {
            Some(bad) => Err(format!(
                "insecure-entitlements: invalid entitlement {bad:?} (allowed: {})",
                ENTITLEMENTS.join(", ")
            )),
            None => Ok(()),
        }
    }
}

impl GcPolicy {
    /// The rule with the deprecated `keepBytes` moved into `reservedSpace` when that is
    /// unset (zero), as BuildKit does.
    pub fn normalized(&self) -> GcPolicy {
        let mut p = self.clone();
        let keep = nonzero(p.keep_bytes.take());
        if nonzero(p.reserved_space).is_none() && keep.is_some() {
            p.reserved_space = keep;
        }
        p
    }
}

/// BuildKit's `DefaultGCPolicy`: the four rules used when a worker has no `gcpolicy`
/// entries, for a disk of `disk_total` bytes (0 if unknown). Sizes stay as configured
/// (percentages included); [`gc_rules`] converts them to bytes.
pub fn default_gc_policy(cfg: &impl GcSettings, disk_total: i64) -> Vec<GcPolicy> {
    let mut gc = cfg.gc_config();
    if gc.is_unset() {
        gc.reserved_space = gc.gc_keep_storage;
    }
    if gc.is_unset() {
        let mut reserve = DiskSpace::percent(GC_RESERVE_PERCENTAGE);
        if reserve.as_bytes(disk_total) > GC_RESERVE_BYTES {
            reserve = DiskSpace::bytes(GC_RESERVE_BYTES);
        }
        let mut max = DiskSpace::percent(GC_MAX_PERCENTAGE);
        if max.as_bytes(disk_total) > GC_MAX_BYTES {
            max = DiskSpace::bytes(GC_MAX_BYTES);
        }
        gc.reserved_space = Some(reserve);
        gc.min_free_space = Some(DiskSpace::percent(GC_FREE_PERCENTAGE));
        gc.max_used_space = Some(max);
    }
    let (reserved, max_used, min_free) = (
        nonzero(gc.reserved_space),
        nonzero(gc.max_used_space),
        nonzero(gc.min_free_space),
    );
    let limits = |all, keep_duration| GcPolicy {
        all,
        keep_duration,
        reserved_space: reserved,
        max_used_space: max_used,
        min_free_space: min_free,
        ..Default::default()
    };
    vec![
        GcPolicy {
            filters: vec![DEFAULT_GC_FILTER.to_string()],
            keep_duration: Some(Duration::from_secs(48 * 3600)),
            max_used_space: Some(DiskSpace::bytes(512_000_000)),
            ..Default::default()
        },
        limits(false, Some(Duration::from_secs(60 * 24 * 3600))),
        limits(false, None),
        limits(true, None),
    ]
}

/// One GC rule with sizes in bytes (BuildKit's `client.PruneInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneRule {
    /// Every record, shared or not.
    pub all: bool,
    /// Record filters.
    pub filters: Vec<String>,
    /// Keep records used more recently than this.
    pub keep_duration: std::time::Duration,
    /// Never free below this many bytes.
    pub reserved_space: i64,
    /// Free above this many bytes.
    pub max_used_space: i64,
    /// Leave this many bytes free.
    pub min_free_space: i64,
}

/// The GC rules a worker runs (BuildKit's `getGCPolicy`): none when `gc = false`; its
/// `[[gcpolicy]]` entries (with `keepBytes` converted), or [`default_gc_policy`] when there
/// are none; sizes converted to bytes for a disk of `disk_total` bytes.
pub fn gc_rules(cfg: &impl GcSettings, disk_total: i64) -> Vec<PruneRule> {
    let gc = cfg.gc_config();
    if gc.gc == Some(false) {
        return Vec::new();
    }
    let policy = if gc.gc_policy.is_empty() {
        default_gc_policy(&gc, disk_total)
    } else {
        gc.gc_policy.iter().map(GcPolicy::normalized).collect()
    };
    let bytes = |d: Option<DiskSpace>| d.map_or(0, |d| d.as_bytes(disk_total));
    policy
        .into_iter()
        .map(|p| PruneRule {
            all: p.all,
            filters: p.filters,
            keep_duration: p.keep_duration.map_or(std::time::Duration::ZERO, |d| d.0),
            reserved_space: bytes(p.reserved_space),
            max_used_space: bytes(p.max_used_space),
            min_free_space: bytes(p.min_free_space),
        })
        .collect()
}
