//! Build cache management on the engine: `du`, `prune`, and the automatic GC that runs the
//! `[worker.oci]` policy after builds (at most once a minute).

use buildwit_config::{DEFAULT_GC_FILTER, PruneRule};
use buildwit_solver::{PruneReport, UsageRecord};
use buildwit_worker::disk::disk_total;

use crate::{DaemonError, Engine};

/// The least time between two automatic GC runs.
const GC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Engine {
    /// The cache records passing `filters` (BuildKit's `du`), largest first.
    pub fn disk_usage(&self, filters: &[String]) -> Result<Vec<UsageRecord>, DaemonError> {
        Ok(self.solver()?.disk_usage(filters)?)
    }

    /// Remove cache records under one rule (BuildKit's `prune`).
    pub fn prune(&self, rule: &PruneRule) -> Result<PruneReport, DaemonError> {
        Ok(self.solver()?.prune(rule)?)
    }

    /// Bytes of the disk holding the root (0 if unknown), for percentage sizes.
    pub fn disk_size(&self) -> i64 {
        disk_total(&self.frontends.root).map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX))
    }

    /// The GC rules of `[worker.oci]`: its `[[gcpolicy]]` entries, or BuildKit's default
    /// policy for the disk holding the root; none when `gc = false`.
    pub fn gc_rules(&self) -> Vec<PruneRule> {
        let oci = &self.config().worker.oci;
        let mut rules = buildwit_config::gc_rules(oci, self.disk_size());
        if oci.gc_policy.is_empty() {
            // BuildKit writes the default rule's types as one comma-joined filter, which
            // containerd's syntax reads as "all of these" and so matches nothing; BuildKit
            // fixed it (moby/buildkit#6856) by making them alternatives, as here.
            for rule in &mut rules {
                if rule.filters == [DEFAULT_GC_FILTER] {
                    rule.filters = DEFAULT_GC_FILTER.split(',').map(String::from).collect();
                }
            }
        }
        rules
    }

    /// Run the GC policy after a build, at most once a minute per root as BuildKit
    /// throttles it (computing usage walks every record). A failure is logged, never the
    /// build's error.
    pub(crate) fn gc_after_build(&self) {
        let sessions = self.frontends.root.join("sessions");
        match crate::client::prune_mirrors(&sessions, crate::client::MIRROR_MAX_AGE) {
            Ok(0) => {}
            Ok(n) => tracing::info!(mirrors = n, "gc: removed unused client mirrors"),
            Err(e) => tracing::warn!("gc: {}: {e}", sessions.display()),
        }
        let rules = self.gc_rules();
        if rules.is_empty() {
            return;
        }
        let stamp = self.frontends.root.join("gc.last");
        let recent = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < GC_INTERVAL);
        if recent {
            return;
        }
        if let Err(e) = std::fs::write(&stamp, b"") {
            tracing::warn!("gc: {}: {e}", stamp.display());
        }
        // The scans of local sources age out as mirrors do, with the GC (a read of their
        // directory, so once an interval rather than every build).
        if let Ok(solver) = self.solver() {
            match solver.worker().locals.prune(crate::client::MIRROR_MAX_AGE) {
                Ok(0) => {}
                Ok(n) => tracing::info!(scans = n, "gc: removed unused scans of local sources"),
                Err(e) => tracing::warn!("gc: scans of local sources: {e}"),
            }
        }
        match self.solver().map(|s| s.gc(&rules)) {
            Ok(Ok(report)) if !report.records.is_empty() => tracing::info!(
                records = report.records.len(),
                freed = report.freed,
                "gc: pruned build cache"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("gc: {e}"),
            Err(e) => tracing::warn!("gc: {e}"),
        }
    }
}
