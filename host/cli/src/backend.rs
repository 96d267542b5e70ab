//! Where the CLI's commands run: the engine in-process, or buildwitd over gRPC (`--addr`).
//! Both answer with the same types, so every command prints the same in both modes.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};
use buildwit_config::PruneRule;
use buildwit_engine::history::HistoryRecord;
use buildwit_engine::info::DaemonInfo;
use buildwit_engine::{
    BuildApi, BuildOutcome, BuildRequest, Engine, EventSink, FrontendRecord, FrontendRef,
};
use buildwit_solver::{PruneReport, UsageRecord};

use crate::remote::{RawSpecs, Remote};

/// A frontend image of the store: reference, digest, name, version, channel, size.
pub type FrontendImage = (String, String, String, String, String, u64);

/// The engine the commands talk to.
pub enum Backend {
    /// In this process.
    Local(Box<Engine>),
    /// buildwitd.
    Remote(Box<Remote>),
}

impl Backend {
    /// The daemon's description.
    pub fn info(&self) -> Result<DaemonInfo> {
        match self {
            Backend::Local(e) => Ok(e.info()?),
            Backend::Remote(r) => r.info(),
        }
    }

    /// Bytes of the disk holding the daemon's root (for percentage sizes).
    pub fn disk_size(&self) -> Result<i64> {
        match self {
            Backend::Local(e) => Ok(e.disk_size()),
            Backend::Remote(r) => Ok(r.info()?.disk_size),
        }
    }

    /// `du`.
    pub fn disk_usage(&self, filters: &[String]) -> Result<Vec<UsageRecord>> {
        match self {
            Backend::Local(e) => Ok(e.disk_usage(filters)?),
            Backend::Remote(r) => r.disk_usage(filters),
        }
    }

    /// `prune`.
    pub fn prune(&self, rule: &PruneRule) -> Result<PruneReport> {
        match self {
            Backend::Local(e) => Ok(e.prune(rule)?),
            Backend::Remote(r) => r.prune(rule),
        }
    }

    /// Past builds, newest first.
    pub fn history(&self) -> Result<Vec<HistoryRecord>> {
        match self {
            Backend::Local(e) => Ok(e.history().list()),
            Backend::Remote(r) => r.history(),
        }
    }

    /// One past build.
    pub fn history_get(&self, id: &str) -> Result<HistoryRecord> {
        match self {
            Backend::Local(e) => match e.history().get(id) {
                Some(r) => Ok(r),
                None => bail!(
                    "no build {id:?} in the history (see buildwit history ls; ids may be shortened while unique)"
                ),
            },
            Backend::Remote(r) => r.history_get(id),
        }
    }

    /// A frontend's record, imports, exports and size.
    pub fn inspect_frontend(
        &self,
        frontend: &FrontendRef,
    ) -> Result<(FrontendRecord, Vec<String>, Vec<String>, usize)> {
        match self {
            Backend::Local(e) => {
                let record = e.inspect_frontend(frontend)?;
                let (imports, exports, size) = buildwit_engine::frontend_interfaces(e, frontend)?;
                Ok((record, imports, exports, size))
            }
            Backend::Remote(r) => r.inspect_frontend(frontend),
        }
    }

    /// A frontend's record only (`frontend pull`).
    pub fn pull_frontend(&self, reference: &str) -> Result<FrontendRecord> {
        let frontend = FrontendRef::Image(reference.to_string());
        match self {
            Backend::Local(e) => Ok(e.inspect_frontend(&frontend)?),
            Backend::Remote(r) => Ok(r.inspect_frontend(&frontend)?.0),
        }
    }

    /// `frontend push`.
    pub fn push_frontend(&self, file: &Path, reference: &str) -> Result<(String, usize)> {
        match self {
            Backend::Local(e) => Ok(e.push_frontend(file, reference)?),
            Backend::Remote(r) => r.push_frontend(file, reference),
        }
    }

    /// `frontend push --container`: packed and pushed by this process, with the runner
    /// beside it.
    pub fn push_frontend_container(
        &self,
        file: &Path,
        reference: &str,
        runner: &Path,
    ) -> Result<(String, usize)> {
        match self {
            Backend::Local(e) => Ok(e.push_frontend_container(file, reference, runner)?),
            Backend::Remote(_) => anyhow::bail!(
                "frontend push --container packs the image in this process: run it without --addr"
            ),
        }
    }

    /// `frontend ls`.
    pub fn list_frontends(&self) -> Result<Vec<FrontendImage>> {
        match self {
            Backend::Local(e) => Ok(e
                .list_frontends()
                .into_iter()
                .map(|(reference, digest, r)| {
                    (reference, digest, r.name, r.version, r.channel, r.size)
                })
                .collect()),
            Backend::Remote(r) => Ok(r
                .list_frontends()?
                .into_iter()
                .map(|i| (i.reference, i.digest, i.name, i.version, i.channel, i.size))
                .collect()),
        }
    }

    /// `frontend rm`.
    pub fn remove_frontend(&self, what: &str) -> Result<Vec<String>> {
        match self {
            Backend::Local(e) => Ok(e.remove_frontend(what)?),
            Backend::Remote(r) => r.remove_frontend(what),
        }
    }

    /// Run a build; the outcome and how many layers the result has.
    pub fn build(
        &self,
        request: BuildRequest,
        raw: &RawSpecs,
        events: Arc<dyn EventSink>,
    ) -> Result<(BuildOutcome, usize)> {
        // In process, the steps are this process's: a signal must stop them before it
        // exits. Through buildwitd, the stream closes and the daemon cancels the build.
        crate::signals::cancel_on_signals(request.client.cancelled.clone());
        match self {
            Backend::Local(e) => {
                let outcome = e.build(request, events)?;
                let layers = outcome.result.as_ref().map_or(0, |s| s.layers.len());
                Ok((outcome, layers))
            }
            Backend::Remote(r) => r.build(request, raw, events),
        }
    }
}

/// `buildwit info` / `debug workers`.
pub fn print_info(info: &DaemonInfo) {
    println!("Version:        {}", info.version);
    println!("Root:           {}", info.root);
    println!("Platforms:      {}", info.platforms.join(", "));
    println!(
        "Parallelism:    {}",
        if info.max_parallelism == 0 {
            "unlimited".to_string()
        } else {
            info.max_parallelism.to_string()
        }
    );
    println!("Labels:");
    for (k, v) in &info.labels {
        println!("  {k}:\t{v}");
    }
    println!("GC Policy:");
    if info.gc_policy.is_empty() {
        println!("  (gc disabled)");
    }
    for rule in &info.gc_policy {
        println!(
            "  All: {}  Filters: {}  Keep duration: {}s  Reserved: {}  Max used: {}  Min free: {}",
            rule.all,
            if rule.filters.is_empty() {
                "-".to_string()
            } else {
                rule.filters.join(" | ")
            },
            rule.keep_duration.as_secs(),
            crate::cache::human_size(rule.reserved_space.max(0) as u64),
            crate::cache::human_size(rule.max_used_space.max(0) as u64),
            crate::cache::human_size(rule.min_free_space.max(0) as u64),
        );
    }
    println!("Frontends:      {}", info.enabled_frontends.join(", "));
    for (reference, name, version, channel) in &info.frontends {
        println!("  {reference:<24} {name} {version} ({channel}), built in");
    }
}
