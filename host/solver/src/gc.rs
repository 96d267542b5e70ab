//! Disk usage and garbage collection of the build cache: BuildKit's `du`, `prune` and GC
//! policies over the cache database, the layers and the cache mounts.
//!
//! A record is a cache database entry (its layers), a cache mount, or a file the cache
//! accounts for beside them ([`FileRecords`]: compiled frontends). A layer is counted once
//! in totals and belongs to the record with the shortest stack that lists it; a record whose layers other
//! records also list is "shared". Records a running build leased are never removed. Prune
//! removes records from the database in one transaction first, then the layers no remaining
//! record lists, then the blobs only those layers referenced, so a crash never leaves a
//! record without its layers.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, MutexGuard, Weak};

use buildwit_config::PruneRule;
use buildwit_worker::disk::{free_space, tree_size};
use buildwit_worker::{CacheMountUsage, Session};
use regex::Regex;

use crate::{Solver, cachedb};

/// Record types (BuildKit's `client/diskusage.go`).
pub const TYPE_REGULAR: &str = "regular";
/// A local source (build context).
pub const TYPE_LOCAL: &str = "source.local";
/// A git checkout.
pub const TYPE_GIT: &str = "source.git.checkout";
/// A cache mount (`RUN --mount=type=cache`).
pub const TYPE_CACHE_MOUNT: &str = "exec.cachemount";
/// What a frontend needs to run (BuildKit: its image; buildwit: compiled components too).
/// Removed only by `prune --all` and GC rules with `all`, as in BuildKit.
pub const TYPE_FRONTEND: &str = "frontend";

/// Files of one directory the cache accounts for, one record each: `du` lists them, prune
/// and GC remove them (least recently modified first). Their owner must cope with a file
/// going away at any time, as a cache does.
#[derive(Clone, Debug)]
pub struct FileRecords {
    /// The directory (not walked further).
    pub dir: PathBuf,
    /// The files counted: names ending so (temporary files of writers are not).
    pub suffix: String,
    /// Their record type, such as [`TYPE_FRONTEND`].
    pub record_type: String,
    /// What `du` says a file is; its name follows.
    pub description: String,
}

/// One record as `du` shows it (BuildKit's `UsageInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    /// Short id: 25 hex digits of the cache key, or a cache mount's directory name.
    pub id: String,
    /// BuildKit's record type (`regular`, `source.local`, `exec.cachemount`, …).
    pub record_type: String,
    /// What made it.
    pub description: String,
    /// Bytes of the layers it owns (each layer counted in one record only).
    pub size: u64,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds of the last build that used it.
    pub last_used: Option<u64>,
    /// How many builds used it.
    pub usage_count: u64,
    /// Its layers are listed by other records too.
    pub shared: bool,
    /// A running build holds it.
    pub in_use: bool,
    /// It can change (cache mounts).
    pub mutable: bool,
}

/// What a prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// The records removed.
    pub records: Vec<UsageRecord>,
    /// Bytes freed on disk (layers, cache mounts and blobs).
    pub freed: u64,
}

/// A GC or du failure, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// A filter that does not parse.
    #[error("invalid filter {filter:?}: {reason}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The cache database failed.
    #[error(transparent)]
    Db(#[from] cachedb::DbError),
    /// The state directory failed.
    #[error("{what}: {source}")]
    Io {
        /// The path or step.
        what: String,
        /// The error.
        source: io::Error,
    },
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> GcError {
    move |source| GcError::Io {
        what: what.to_string(),
        source,
    }
}

/// What one build holds: the cache keys and cache mounts of its graph, for as long as its
/// session lives (from before its first lookup until the build, export included, ends).
#[derive(Debug)]
pub(crate) struct Lease {
    session: Weak<Session>,
    keys: HashSet<String>,
    mounts: HashSet<String>,
}

/// The leases of running builds. Its lock also serialises GC against builds starting to
/// look up records, so a build never finds a record GC is half way through removing.
#[derive(Debug, Default)]
pub(crate) struct Leases(std::sync::Mutex<Vec<Lease>>);

impl Leases {
    fn lock(&self) -> MutexGuard<'_, Vec<Lease>> {
        let mut leases = self.0.lock().unwrap_or_else(|e| e.into_inner());
        leases.retain(|l| l.session.strong_count() > 0);
        leases
    }

    /// Hold `keys` and `mounts` for as long as `session` lives.
    pub(crate) fn hold(
        &self,
        session: &Arc<Session>,
        keys: impl IntoIterator<Item = String>,
        mounts: impl IntoIterator<Item = String>,
    ) {
        self.lock().push(Lease {
            session: Arc::downgrade(session),
            keys: keys.into_iter().collect(),
            mounts: mounts.into_iter().collect(),
        });
    }
}

/// One condition of a filter.
#[derive(Debug)]
enum Cond {
    Eq(String, String),
    Ne(String, String),
    Re(String, Regex),
}

const FIELDS: &[&str] = &[
    "id",
    "type",
    "description",
    "inuse",
    "shared",
    "private",
    "mutable",
    "immutable",
];

/// BuildKit's prune filters (containerd filter syntax): conditions separated by commas
/// within one string must all hold; the strings are alternatives. An empty list matches
/// everything.
#[derive(Debug, Default)]
pub struct Filters(Vec<Vec<Cond>>);

impl Filters {
    /// Parse `field==value`, `field!=value`, `field~=regex`, or a bare boolean field
    /// (`inuse`, `shared`, `private`, `mutable`, `immutable`).
    pub fn parse(filters: &[String]) -> Result<Self, GcError> {
        let mut out = Vec::new();
        for filter in filters {
            let bad = |reason: String| GcError::Filter {
                filter: filter.clone(),
                reason,
            };
            let mut all = Vec::new();
            for part in filter.split(',').map(str::trim) {
                if part.is_empty() {
                    return Err(bad("empty condition".into()));
                }
                let (field, cond) = if let Some((f, v)) = part.split_once("==") {
                    (f, Cond::Eq(f.trim().into(), unquote(v)))
                } else if let Some((f, v)) = part.split_once("!=") {
                    (f, Cond::Ne(f.trim().into(), unquote(v)))
                } else if let Some((f, v)) = part.split_once("~=") {
                    let re = Regex::new(&unquote(v))
                        .map_err(|e| bad(format!("bad regular expression: {e}")))?;
                    (f, Cond::Re(f.trim().into(), re))
                } else if part.contains('=') {
                    return Err(bad(format!(
                        "{part:?}: unsupported operator (use ==, != or ~=)"
                    )));
                } else {
                    (part, Cond::Eq(part.into(), "true".into()))
                };
                let field = field.trim();
                if !FIELDS.contains(&field) {
                    return Err(bad(format!(
                        "unknown field {field:?} (known: {})",
                        FIELDS.join(", ")
                    )));
                }
                all.push(cond);
            }
            out.push(all);
        }
        Ok(Filters(out))
    }

    /// Whether a record passes.
    pub fn matches(&self, r: &UsageRecord) -> bool {
        let field = |name: &str| -> String {
            match name {
                "id" => r.id.clone(),
                "type" => r.record_type.clone(),
                "description" => r.description.clone(),
                "inuse" => r.in_use.to_string(),
                "shared" => r.shared.to_string(),
                "private" => (!r.shared).to_string(),
                "mutable" => r.mutable.to_string(),
                "immutable" => (!r.mutable).to_string(),
                _ => String::new(),
            }
        };
        let holds = |c: &Cond| match c {
            Cond::Eq(f, v) => field(f) == *v,
            Cond::Ne(f, v) => field(f) != *v,
            Cond::Re(f, re) => re.is_match(&field(f)),
        };
        self.0.is_empty() || self.0.iter().any(|all| all.iter().all(holds))
    }
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
        .to_string()
}

/// Bytes to keep under a rule (BuildKit's keep-bytes calculation), for `total` bytes of
/// cache on a disk with `free` bytes free. `None`: no cap, remove every eligible record.
pub fn keep_bytes(rule: &PruneRule, total: u64, free: u64) -> Option<u64> {
    let (reserved, max_used, min_free) = (
        rule.reserved_space.max(0) as u64,
        rule.max_used_space.max(0) as u64,
        rule.min_free_space.max(0) as u64,
    );
    if reserved == 0 && max_used == 0 && min_free == 0 {
        return None;
    }
    let mut keep = if max_used > 0 {
        max_used
    } else if min_free > 0 {
        // Only a free-space target: nothing to free while it is met.
        total
    } else {
        // Only reservedSpace (legacy keepBytes): prune down to it.
        reserved
    };
    // Free space short of minFreeSpace has to come out of the cache.
    if min_free > free {
        keep = keep.min(total.saturating_sub(min_free - free));
    }
    Some(keep.max(reserved))
}

/// The order GC removes records in: least recently used first, then least used.
pub fn prune_order(records: &mut [UsageRecord]) {
    records.sort_by_key(order_key);
}

fn order_key(r: &UsageRecord) -> (u64, u64, u64) {
    (r.last_used.unwrap_or(r.created), r.usage_count, r.created)
}

/// Whether a rule may remove a record at `now` (before any size cap): not in use, of a type
/// and shared state `--all` allows, matching the filters, unused for `keep_duration`.
pub fn eligible(rule: &PruneRule, filters: &Filters, r: &UsageRecord, now: u64) -> bool {
    if r.in_use || !filters.matches(r) {
        return false;
    }
    if !rule.all && (r.shared || r.record_type == "internal" || r.record_type == "frontend") {
        return false;
    }
    let keep = rule.keep_duration.as_secs();
    keep == 0 || r.last_used.unwrap_or(r.created) + keep <= now
}

/// What a record stands for on disk.
#[derive(Clone, Debug)]
enum Item {
    /// A cache database entry: its key and layers.
    Record { key: String, layers: Vec<String> },
    /// A cache mount directory under `cache-mounts/`.
    Mount { name: String },
    /// A file of [`FileRecords`].
    File { path: PathBuf },
    /// Blobs of the content store no layer names: manifests, configs and indexes of pulls
    /// and exports, downloads. Only a running build uses them.
    Loose { blobs: Vec<(PathBuf, u64)> },
}

/// The cache as GC sees it, taken under the lease lock.
struct State {
    items: Vec<(UsageRecord, Item)>,
    /// Layer id → bytes, for every layer on disk.
    layer_sizes: HashMap<String, u64>,
    /// Layers of leased records: kept whatever happens to other records.
    held_layers: HashSet<String>,
    /// Whether any build is running.
    busy: bool,
}

impl State {
    fn total(&self) -> u64 {
        self.layer_sizes.values().sum::<u64>()
            + self
                .items
                .iter()
                .filter(|(_, i)| !matches!(i, Item::Record { .. }))
                .map(|(r, _)| r.size)
                .sum::<u64>()
    }
}

/// The records of one [`FileRecords`] directory (none when it does not exist yet).
fn file_records(files: &FileRecords) -> io::Result<Vec<(UsageRecord, Item)>> {
    let entries = match fs::read_dir(&files.dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else {
            continue; // removed meanwhile
        };
        if !name.ends_with(&files.suffix) || !meta.is_file() {
            continue;
        }
        out.push((
            UsageRecord {
                id: name.chars().take(25).collect(),
                record_type: files.record_type.clone(),
                description: format!("{} {name}", files.description),
                size: meta.len(),
                created: meta.ctime().max(0) as u64,
                last_used: Some(meta.mtime().max(0) as u64),
                usage_count: 0,
                shared: false,
                in_use: false,
                mutable: false,
            },
            Item::File { path: entry.path() },
        ));
    }
    Ok(out)
}

/// The type of a record written before types were kept, from its description.
fn infer_type(description: &str) -> &'static str {
    if description.starts_with("local://") {
        TYPE_LOCAL
    } else if description.starts_with("git://") {
        TYPE_GIT
    } else {
        TYPE_REGULAR
    }
}

/// A layer's size, computed once (layers never change) and kept beside its `meta.json`.
fn layer_size(layer: &buildwit_worker::Layer) -> io::Result<u64> {
    let cached = layer.dir.with_file_name("size");
    if let Some(n) = fs::read_to_string(&cached)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return Ok(n);
    }
    let n = tree_size(&layer.dir)?;
    let tmp = cached.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, n.to_string())?;
    fs::rename(&tmp, &cached)?;
    Ok(n)
}

/// The record of the blobs under `dir` that no layer names (see [`Item::Loose`]), if any.
fn loose_blobs(
    dir: &Path,
    layer_blobs: &HashSet<PathBuf>,
    in_use: bool,
) -> io::Result<Option<(UsageRecord, Item)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (mut blobs, mut size, mut newest) = (Vec::new(), 0, 0);
    for entry in entries {
        let path = entry?.path();
        if layer_blobs.contains(&path) {
            continue;
        }
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        size += md.len();
        newest = newest.max(md.mtime().max(0) as u64);
        blobs.push((path, md.len()));
    }
    if blobs.is_empty() {
        return Ok(None);
    }
    let record = UsageRecord {
        id: "content".into(),
        record_type: TYPE_REGULAR.into(),
        description: format!(
            "[internal] {} manifests, configs and downloads no layer uses",
            blobs.len()
        ),
        size,
        created: newest,
        last_used: Some(newest),
        usage_count: 1,
        shared: false,
        in_use,
        mutable: false,
    };
    Ok(Some((record, Item::Loose { blobs })))
}

/// Whether a cache mount's lock is taken (a `locked` step is using it).
fn mount_locked(dir: &Path, name: &str) -> bool {
    use rustix::fs::{FlockOperation, flock};
    let Ok(file) = fs::OpenOptions::new()
        .write(true)
        .open(dir.join(format!("{name}.lock")))
    else {
        return false;
    };
    flock(&file, FlockOperation::NonBlockingLockExclusive).is_err()
}

fn is_mount_name(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Solver {
    /// Hold the records of a build's keys and its cache mounts while its session lives.
    pub(crate) fn lease(&self, session: &Arc<Session>, keys: &[String], mounts: Vec<String>) {
        self.leases.hold(session, keys.iter().cloned(), mounts);
    }

    fn state(&self, leases: &[Lease]) -> Result<State, GcError> {
        let snapshots = &self.worker.snapshots;
        let held_keys: HashSet<&String> = leases.iter().flat_map(|l| &l.keys).collect();
        let held_mounts: HashSet<&String> = leases.iter().flat_map(|l| &l.mounts).collect();
        // A layer's size counts its compressed blob too, as BuildKit's does.
        let mut layer_sizes = HashMap::new();
        let mut layer_blobs = HashSet::new();
        for id in snapshots.layer_ids().map_err(io_err("snapshots/layers"))? {
            if let Some(layer) = snapshots.layer(&id) {
                let mut size = layer_size(&layer).map_err(io_err(layer.dir.display()))?;
                let meta = layer.meta().unwrap_or_default();
                for blob in meta.blobs() {
                    if let Ok(path) = self.worker.content.path(&blob.digest)
                        && let Ok(md) = fs::metadata(&path)
                        && layer_blobs.insert(path)
                    {
                        size += md.len();
                    }
                }
                layer_sizes.insert(id, size);
            }
        }
        let mut records = self.db.all()?;
        // A layer belongs to the first record listing it, in order of stack depth (the
        // step that added a layer has the shortest stack holding it), then age.
        let depth = |r: &cachedb::Record| r.outputs.iter().map(Vec::len).max().unwrap_or(0);
        records.sort_by(|a, b| {
            (depth(&a.1), a.1.created, &a.0).cmp(&(depth(&b.1), b.1.created, &b.0))
        });
        let mut listed: HashMap<&str, usize> = HashMap::new();
        for (_, r) in &records {
            let ids: HashSet<&str> = r.outputs.iter().flatten().map(String::as_str).collect();
            for id in ids {
                *listed.entry(id).or_default() += 1;
            }
        }
        let mut owned: HashSet<String> = HashSet::new();
        let mut held_layers = HashSet::new();
        let mut items = Vec::new();
        for (key, r) in &records {
            let layers: Vec<String> = {
                let mut seen = HashSet::new();
                r.outputs
                    .iter()
                    .flatten()
                    .filter(|id| seen.insert(id.as_str()))
                    .cloned()
                    .collect()
            };
            let in_use = held_keys.contains(key);
            if in_use {
                held_layers.extend(layers.iter().cloned());
            }
            let mut size = 0;
            let mut shared = false;
            for id in &layers {
                if owned.insert(id.clone()) {
                    size += layer_sizes.get(id).copied().unwrap_or(0);
                    shared |= listed.get(id.as_str()).copied().unwrap_or(0) > 1;
                }
            }
            let record_type = if r.record_type.is_empty() {
                infer_type(&r.description).to_string()
            } else {
                r.record_type.clone()
            };
            let hex = key.strip_prefix("sha256:").unwrap_or(key);
            items.push((
                UsageRecord {
                    id: hex.chars().take(25).collect(),
                    record_type,
                    description: r.description.clone(),
                    size,
                    created: r.created,
                    last_used: Some(r.last_used),
                    usage_count: r.usage_count,
                    shared,
                    in_use,
                    mutable: false,
                },
                Item::Record {
                    key: key.clone(),
                    layers,
                },
            ));
        }
        let mounts = self.worker.cache_mounts_dir();
        if let Ok(dir) = fs::read_dir(mounts) {
            for e in dir {
                let e = e.map_err(io_err(mounts.display()))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !is_mount_name(&name) || !e.path().is_dir() {
                    continue;
                }
                let usage: CacheMountUsage = fs::read(mounts.join(format!("{name}.json")))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
                let size = tree_size(&e.path()).map_err(io_err(e.path().display()))?;
                let created = if usage.created > 0 {
                    usage.created as u64
                } else {
                    e.metadata()
                        .map_err(io_err(e.path().display()))?
                        .ctime()
                        .max(0) as u64
                };
                items.push((
                    UsageRecord {
                        id: name.clone(),
                        record_type: TYPE_CACHE_MOUNT.into(),
                        description: if usage.description.is_empty() {
                            format!("cached mount {name}")
                        } else {
                            usage.description
                        },
                        size,
                        created,
                        last_used: (usage.last_used > 0).then_some(usage.last_used as u64),
                        usage_count: usage.usage_count,
                        shared: false,
                        in_use: held_mounts.contains(&name) || mount_locked(mounts, &name),
                        mutable: true,
                    },
                    Item::Mount { name },
                ));
            }
        }
        for files in &self.files {
            items.extend(file_records(files).map_err(io_err(files.dir.display()))?);
        }
        let blobs_dir = self.worker.content.blobs_dir();
        items.extend(
            loose_blobs(&blobs_dir, &layer_blobs, !leases.is_empty())
                .map_err(io_err(blobs_dir.display()))?,
        );
        Ok(State {
            items,
            layer_sizes,
            held_layers,
            busy: !leases.is_empty(),
        })
    }

    /// Every record passing `filters` (BuildKit's `du`), largest first.
    pub fn disk_usage(&self, filters: &[String]) -> Result<Vec<UsageRecord>, GcError> {
        let filters = Filters::parse(filters)?;
        let leases = self.leases.lock();
        let state = self.state(&leases)?;
        drop(leases);
        let mut out: Vec<UsageRecord> = state
            .items
            .into_iter()
            .map(|(r, _)| r)
            .filter(|r| filters.matches(r))
            .collect();
        out.sort_by(|a, b| b.size.cmp(&a.size).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Run GC rules in order (a daemon's policy), each on what the previous left.
    pub fn gc(&self, rules: &[PruneRule]) -> Result<PruneReport, GcError> {
        let mut report = PruneReport::default();
        for rule in rules {
            let r = self.prune(rule)?;
            report.records.extend(r.records);
            report.freed += r.freed;
        }
        Ok(report)
    }

    /// Remove records under one rule (BuildKit's `prune`): the eligible ones (see
    /// [`eligible`]), least recently used first, until the cache is within the rule's size
    /// limits ([`keep_bytes`]) or none is left.
    pub fn prune(&self, rule: &PruneRule) -> Result<PruneReport, GcError> {
        let filters = Filters::parse(&rule.filters)?;
        let root = self
            .worker
            .cache_mounts_dir()
            .parent()
            .unwrap_or(Path::new("/"));
        let free = free_space(root).map_err(io_err(root.display()))?;
        // Held across the whole prune: builds starting now wait to take their leases.
        let leases = self.leases.lock();
        let mut report = PruneReport::default();
        let mut state = self.state(&leases)?;
        // Layers no record lists are left over from a crash; nothing can use them unless a
        // build is running (its new layers get their record only when it commits them).
        if !state.busy {
            let listed: HashSet<&String> = state
                .items
                .iter()
                .filter_map(|(_, i)| match i {
                    Item::Record { layers, .. } => Some(layers),
                    Item::Mount { .. } | Item::File { .. } | Item::Loose { .. } => None,
                })
                .flatten()
                .collect();
            let orphans: Vec<String> = state
                .layer_sizes
                .keys()
                .filter(|id| !listed.contains(id))
                .cloned()
                .collect();
            report.freed += self.remove_layers(&orphans, &mut state.layer_sizes)?;
            // So are blobs no layer names: a build that wrote them has ended.
            if let Some(at) = state
                .items
                .iter()
                .position(|(_, i)| matches!(i, Item::Loose { .. }))
            {
                let (_, Item::Loose { blobs }) = state.items.remove(at) else {
                    unreachable!("found above")
                };
                for (path, size) in blobs {
                    match fs::remove_file(&path) {
                        Ok(()) => report.freed += size,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(path.display())(e)),
                    }
                }
            }
        }
        // Without --all a record other records build on is kept, as in BuildKit, until
        // those are gone: repeat while a pass removes something.
        loop {
            let (removed, done) = self.prune_pass(rule, &filters, free, &state, &mut report)?;
            if done || removed == 0 || rule.all {
                break;
            }
            state = self.state(&leases)?;
        }
        drop(leases);
        Ok(report)
    }

    /// One pass of [`Solver::prune`]: (records removed, whether the size target is met).
    fn prune_pass(
        &self,
        rule: &PruneRule,
        filters: &Filters,
        free: u64,
        state: &State,
        report: &mut PruneReport,
    ) -> Result<(usize, bool), GcError> {
        let now = cachedb::now();
        let mut total = state.total();
        let cap = keep_bytes(rule, total, free);
        if cap.is_some_and(|keep| total <= keep) {
            return Ok((0, true));
        }
        // How many remaining records list each layer.
        let mut refs: HashMap<&str, usize> = HashMap::new();
        for (_, item) in &state.items {
            if let Item::Record { layers, .. } = item {
                for id in layers {
                    *refs.entry(id.as_str()).or_default() += 1;
                }
            }
        }
        let mut order: Vec<usize> = (0..state.items.len())
            .filter(|&i| eligible(rule, filters, &state.items[i].0, now))
            .collect();
        order.sort_by_key(|&i| order_key(&state.items[i].0));
        let mut keys = Vec::new();
        let mut layers = Vec::new();
        let mut mounts = Vec::new();
        let mut files = Vec::new();
        for i in order {
            if cap.is_some_and(|keep| total <= keep) {
                break;
            }
            let (record, item) = &state.items[i];
            match item {
                Item::Record { key, layers: ids } => {
                    keys.push(key.clone());
                    for id in ids {
                        let n = refs.get_mut(id.as_str()).expect("counted above");
                        *n -= 1;
                        if *n == 0 && !state.held_layers.contains(id) {
                            total = total
                                .saturating_sub(state.layer_sizes.get(id).copied().unwrap_or(0));
                            layers.push(id.clone());
                        }
                    }
                }
                Item::Mount { name } => {
                    total = total.saturating_sub(record.size);
                    mounts.push((name.clone(), record.size));
                }
                Item::File { path } => {
                    total = total.saturating_sub(record.size);
                    files.push((path.clone(), record.size));
                }
                Item::Loose { blobs } => {
                    total = total.saturating_sub(record.size);
                    files.extend(blobs.iter().cloned());
                }
            }
            report.records.push(record.clone());
        }
        let removed = keys.len() + mounts.len() + files.len();
        // Records first, in one transaction; then what only they used.
        self.db.remove(&keys)?;
        let mut sizes = state.layer_sizes.clone();
        report.freed += self.remove_layers(&layers, &mut sizes)?;
        let dir = self.worker.cache_mounts_dir();
        for (name, size) in mounts {
            let path = dir.join(&name);
            let doomed = dir.join(format!("{name}.rm"));
            fs::rename(&path, &doomed).map_err(io_err(path.display()))?;
            fs::remove_dir_all(&doomed).map_err(io_err(doomed.display()))?;
            let _ = fs::remove_file(dir.join(format!("{name}.json")));
            report.freed += size;
        }
        for (path, size) in files {
            match fs::remove_file(&path) {
                Ok(()) => report.freed += size,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(path.display())(e)),
            }
        }
        if !layers.is_empty() && !state.busy {
            self.worker
                .snapshots
                .clear_squashed()
                .map_err(io_err("snapshots/squashed"))?;
        }
        Ok((removed, cap.is_some_and(|keep| total <= keep)))
    }

    /// Remove layers and the blobs only they referenced; the bytes freed (a layer's size
    /// counts its blob).
    fn remove_layers(
        &self,
        ids: &[String],
        sizes: &mut HashMap<String, u64>,
    ) -> Result<u64, GcError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let snapshots = &self.worker.snapshots;
        let mut blobs = HashSet::new();
        let mut freed = 0;
        for id in ids {
            if let Some(layer) = snapshots.layer(id)
                && let Ok(meta) = layer.meta()
            {
                blobs.extend(meta.blobs().map(|b| b.digest.clone()));
            }
            snapshots
                .remove_layer(id)
                .map_err(io_err(format!("removing layer {id}")))?;
            freed += sizes.remove(id).unwrap_or(0);
        }
        // A blob stays while any remaining layer still names it.
        for id in sizes.keys() {
            if let Some(meta) = snapshots.layer(id).and_then(|l| l.meta().ok()) {
                for blob in meta.blobs() {
                    blobs.remove(&blob.digest);
                }
            }
        }
        for digest in blobs {
            if let Ok(path) = self.worker.content.path(&digest) {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(path.display())(e)),
                }
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, ty: &str, last_used: u64) -> UsageRecord {
        UsageRecord {
            id: id.into(),
            record_type: ty.into(),
            description: format!("step {id}"),
            size: 100,
            created: 1,
            last_used: Some(last_used),
            usage_count: 1,
            shared: false,
            in_use: false,
            mutable: ty == TYPE_CACHE_MOUNT,
        }
    }

    fn filters(f: &[&str]) -> Filters {
        Filters::parse(&f.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn filters_and_within_or_across() {
        let local = record("aaa", TYPE_LOCAL, 10);
        let mount = record("bbb", TYPE_CACHE_MOUNT, 10);
        let regular = record("ccc", TYPE_REGULAR, 10);
        let f = filters(&["type==source.local", "type==exec.cachemount"]);
        assert!(f.matches(&local) && f.matches(&mount) && !f.matches(&regular));
        // One string with commas: every condition must hold, so no record has both types.
        let f = filters(&["type==source.local,type==exec.cachemount"]);
        assert!(!f.matches(&local) && !f.matches(&mount));
        let f = filters(&["type!=regular,id==aaa"]);
        assert!(f.matches(&local) && !f.matches(&mount));
        let f = filters(&["description~=^step (a|c)"]);
        assert!(f.matches(&local) && f.matches(&regular) && !f.matches(&mount));
        let f = filters(&["mutable"]);
        assert!(f.matches(&mount) && !f.matches(&regular));
        assert!(filters(&[]).matches(&regular));
        assert!(filters(&["id==\"ccc\""]).matches(&regular));
    }

    #[test]
    fn bad_filters_name_the_filter() {
        let err = |f: &str| Filters::parse(&[f.to_string()]).unwrap_err().to_string();
        assert_eq!(
            err("type=source.local"),
            "invalid filter \"type=source.local\": \"type=source.local\": unsupported operator (use ==, != or ~=)"
        );
        assert!(err("colour==red").contains("unknown field \"colour\""));
        assert!(err("description~=(").contains("bad regular expression"));
        assert!(err("type==a,").contains("empty condition"));
    }

    fn rule() -> PruneRule {
        PruneRule::default()
    }

    #[test]
    fn keep_bytes_follows_the_space_limits() {
        // No limit at all: remove every eligible record.
        assert_eq!(keep_bytes(&rule(), 1000, 10), None);
        let r = PruneRule {
            max_used_space: 600,
            ..rule()
        };
        assert_eq!(keep_bytes(&r, 1000, 1 << 40), Some(600));
        // minFreeSpace: 300 bytes short of it, so keep 700 of 1000…
        let r = PruneRule {
            min_free_space: 500,
            ..rule()
        };
        assert_eq!(keep_bytes(&r, 1000, 200), Some(700));
        // …and nothing to do when enough is free.
        assert_eq!(keep_bytes(&r, 1000, 900), Some(1000));
        // …the smaller of the two wins, never below reservedSpace.
        let r = PruneRule {
            max_used_space: 600,
            min_free_space: 500,
            reserved_space: 650,
            ..rule()
        };
        assert_eq!(keep_bytes(&r, 1000, 200), Some(650));
        // reservedSpace alone (legacy keepBytes) is the cap.
        let r = PruneRule {
            reserved_space: 400,
            ..rule()
        };
        assert_eq!(keep_bytes(&r, 1000, 1 << 40), Some(400));
    }

    #[test]
    fn eligibility_by_duration_type_and_use() {
        let now = 100_000;
        let f = Filters::default();
        let keep = PruneRule {
            keep_duration: std::time::Duration::from_secs(3600),
            ..rule()
        };
        assert!(!eligible(
            &keep,
            &f,
            &record("new", TYPE_REGULAR, now - 60),
            now
        ));
        assert!(eligible(
            &keep,
            &f,
            &record("old", TYPE_REGULAR, now - 7200),
            now
        ));
        let mut busy = record("busy", TYPE_REGULAR, 0);
        busy.in_use = true;
        assert!(!eligible(&rule(), &f, &busy, now));
        let all = PruneRule {
            all: true,
            ..rule()
        };
        assert!(!eligible(&all, &f, &busy, now));
        let mut shared = record("shared", TYPE_REGULAR, 0);
        shared.shared = true;
        assert!(!eligible(&rule(), &f, &shared, now));
        assert!(eligible(&all, &f, &shared, now));
        let frontend = record("fe", "frontend", 0);
        assert!(!eligible(&rule(), &f, &frontend, now));
        assert!(eligible(&all, &f, &frontend, now));
    }

    #[test]
    fn oldest_use_goes_first() {
        let mut rs = vec![
            record("b", TYPE_REGULAR, 50),
            record("a", TYPE_REGULAR, 10),
            record("c", TYPE_REGULAR, 50),
        ];
        rs[2].usage_count = 0;
        prune_order(&mut rs);
        let ids: Vec<&str> = rs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);
    }
}
