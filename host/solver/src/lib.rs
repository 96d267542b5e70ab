//! The LLB solver: takes a BuildKit LLB definition, works out the cache key of every
//! vertex, and builds the result, running only the vertices whose results are not cached
//! and that the result needs.
//!
//! Keys are computed first, top-down from the sources, without running anything (local
//! sources are scanned, unpinned images resolved). Then the result vertex is looked up in
//! the cache; only on a miss are its inputs built, concurrently, and it is run on the
//! worker. At most `max-parallelism` ops run at once; a vertex wanted by two builds at the
//! same time runs once (both wait on one cell keyed by the cache key).

#![warn(missing_docs)]

pub mod cachedb;
pub mod gc;
pub mod keys;
pub mod progress;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use buildwit_llb::pb;
use buildwit_llb::{Graph, Vertex};
use buildwit_registry::Registries;
use buildwit_worker::local::{LocalSource, LocalTree};
use buildwit_worker::{OpError, Session, Snapshot, Worker};
use futures::future::{BoxFuture, FutureExt, try_join_all};
use tokio::sync::{OnceCell, Semaphore};

pub use cachedb::{CacheDb, Record};
pub use gc::{FileRecords, GcError, PruneReport, UsageRecord};
pub use progress::{Progress, ProgressEvent};

use keys::Dep;

/// Why a solve failed. Cloneable: builds waiting on the same vertex all get the error.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SolveError {
    /// The definition is not valid LLB.
    #[error("invalid LLB: {0}")]
    Invalid(String),
    /// The build asks for an entitlement it was not granted.
    #[error("{0}")]
    Entitlement(String),
    /// A step failed.
    #[error("{name}: {message}")]
    Step {
        /// The vertex's name.
        name: String,
        /// What went wrong.
        message: String,
        /// The exit code of a failed process.
        exit_code: Option<i32>,
        /// Its last lines of output.
        tail: Vec<String>,
    },
    /// The cache database or the worker's state failed.
    #[error("{0}")]
    Internal(String),
}

/// The cache keys of a solved build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SolvedKeys {
    /// The key of the result's vertex.
    pub result: String,
    /// The key of every vertex of the graph (some have no record: a cached descendant
    /// meant they were not needed).
    pub all: Vec<String>,
    /// The sources the build read, pinned, in the definition's order.
    pub materials: Vec<Material>,
}

/// A source a build read, pinned as its key was computed (provenance's resolved
/// dependencies).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Material {
    /// An image, `NAME[:TAG]@sha256:…`, for `os/arch[/variant]`.
    Image {
        /// The reference, pinned.
        reference: String,
        /// The platform it was resolved for.
        platform: String,
    },
    /// A git repository at a commit.
    Git {
        /// The remote, with `#REF` when one was asked for.
        url: String,
        /// The commit.
        commit: String,
    },
    /// An HTTP download.
    Http {
        /// The URL.
        url: String,
        /// Its content digest.
        digest: String,
    },
}

/// What a build may do beyond the sandbox (`--allow`), within what the daemon permits.
#[derive(Clone, Debug, Default)]
pub struct Entitlements {
    /// Granted by the daemon (`insecure-entitlements`).
    pub daemon: Vec<String>,
    /// Asked for by the build (`--allow`).
    pub build: Vec<String>,
}

impl Entitlements {
    /// As BuildKit at the start of a solve: the build may ask only for entitlements the
    /// daemon allows, whether a step uses them or not.
    fn check_requested(&self) -> Result<(), SolveError> {
        for name in &self.build {
            let known = ["security.insecure", "network.host", "device"].contains(&name.as_str())
                || name.starts_with("device=");
            if !known {
                return Err(SolveError::Entitlement(format!(
                    "unknown entitlement {name}"
                )));
            }
            if !self.daemon.iter().any(|e| e == name) {
                return Err(SolveError::Entitlement(format!(
                    "granting entitlement {name} is not allowed by build daemon configuration"
                )));
            }
        }
        Ok(())
    }

    /// A step needs `name`: granted by both the daemon and the build.
    fn check(&self, name: &str) -> Result<(), SolveError> {
        if self.build.iter().any(|e| e == name) && self.daemon.iter().any(|e| e == name) {
            return Ok(());
        }
        Err(SolveError::Entitlement(format!(
            "{name} is not allowed (it needs --allow {name} and {name} in the daemon's insecure-entitlements)"
        )))
    }
}

/// A vertex's outputs, filled once by whichever build gets to it first.
type Outputs = OnceCell<Arc<Vec<Snapshot>>>;

/// A build's claim on its entry of [`Solver`]'s in-flight map: the entry goes when the
/// last build waiting on it is done or dropped (a cancelled build's future), so that a
/// step never runs twice at once and the map does not keep cancelled steps.
struct Inflight<'a> {
    solver: &'a Solver,
    key: &'a str,
    cell: &'a Arc<Outputs>,
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        let mut inflight = self
            .solver
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Held by the map and this build alone: no other build waits on it.
        if Arc::strong_count(self.cell) <= 2
            && inflight
                .get(self.key)
                .is_some_and(|c| Arc::ptr_eq(c, self.cell))
        {
            inflight.remove(self.key);
        }
    }
}

/// The solver, shared by all builds of a daemon.
pub struct Solver {
    worker: Arc<Worker>,
    registries: Arc<Registries>,
    db: CacheDb,
    permits: Option<Semaphore>,
    inflight: Mutex<HashMap<String, Arc<Outputs>>>,
    leases: gc::Leases,
    /// Files counted and collected beside the cache's records.
    files: Vec<gc::FileRecords>,
}

/// One solve: the graph, its keys, and where its events go.
struct Job {
    graph: Graph,
    keys: Vec<String>,
    names: Vec<String>,
    trees: HashMap<usize, (LocalSource, LocalTree)>,
    images: HashMap<usize, String>,
    /// HTTP sources: the content digest (known up front from `http.checksum`, or by
    /// downloading while computing keys).
    downloads: HashMap<usize, String>,
    /// OCI layout sources: store name, directory, digest.
    layouts: HashMap<usize, (String, std::path::PathBuf, String)>,
    /// Git sources: the source and the commit its ref names now.
    commits: HashMap<usize, (buildwit_worker::git::GitSource, String)>,
    session: Arc<Session>,
    progress: Arc<dyn Progress>,
    used: Mutex<Vec<String>>,
    /// Vertices progress has shown (started, or cached), so each is shown once.
    shown: Mutex<Vec<bool>>,
}

impl Job {
    fn materials(&self) -> Vec<Material> {
        let mut out = Vec::new();
        for (i, v) in self.graph.ops().iter().enumerate() {
            if let Some(reference) = self.images.get(&i) {
                let p = v.op.platform.clone().unwrap_or_default();
                let mut platform =
                    format!("{}/{}", or(&p.os, "linux"), or(&p.architecture, "amd64"));
                if !p.variant.is_empty() {
                    platform = format!("{platform}/{}", p.variant);
                }
                out.push(Material::Image {
                    reference: reference.clone(),
                    platform,
                });
            } else if let Some((git, commit)) = self.commits.get(&i) {
                let url = match git.reference.as_str() {
                    "" => git.url.clone(),
                    r => format!("{}#{r}", git.url),
                };
                out.push(Material::Git {
                    url,
                    commit: commit.clone(),
                });
            } else if let (Some(digest), Some(pb::op::Op::Source(s))) =
                (self.downloads.get(&i), &v.op.op)
            {
                out.push(Material::Http {
                    url: s.identifier.clone(),
                    digest: digest.clone(),
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|m| seen.insert(m.clone()));
        out
    }

    /// Show vertex `i` as cached, and the vertices it was made from: a result from the
    /// cache stands for all of them, and BuildKit lists each as `CACHED`.
    fn show_cached(&self, i: usize) {
        let mut stack = vec![i];
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut self.shown.lock().unwrap()[i], true) {
                continue;
            }
            let v = &self.graph.ops()[i];
            self.progress.event(ProgressEvent::Cached {
                vertex: v.digest.to_string(),
                name: self.names[i].clone(),
            });
            stack.extend(v.inputs.iter().rev());
        }
    }
}

/// A vertex's name as progress shows it: its `llb.customname`, else a summary of the op.
pub fn vertex_name(v: &Vertex) -> String {
    if let Some(name) = v
        .metadata
        .as_ref()
        .and_then(|m| m.description.get("llb.customname"))
    {
        return name.clone();
    }
    match &v.op.op {
        Some(pb::op::Op::Source(s)) => s.identifier.clone(),
        Some(pb::op::Op::Exec(e)) => e
            .meta
            .as_ref()
            .map(|m| m.args.join(" "))
            .unwrap_or_default(),
        Some(pb::op::Op::File(_)) => "file".into(),
        Some(pb::op::Op::Merge(_)) => "merge".into(),
        Some(pb::op::Op::Diff(_)) => "diff".into(),
        Some(pb::op::Op::Build(_)) => "build".into(),
        Some(pb::op::Op::Passthrough(p)) => p.id.clone(),
        None => String::new(),
    }
}

impl Solver {
    /// A solver running ops on `worker`, remembering results in `db`.
    pub fn new(
        worker: Arc<Worker>,
        registries: Arc<Registries>,
        db: CacheDb,
        max_parallelism: Option<usize>,
    ) -> Self {
        Solver {
            worker,
            registries,
            db,
            permits: max_parallelism.filter(|&n| n > 0).map(Semaphore::new),
            inflight: Mutex::new(HashMap::new()),
            leases: gc::Leases::default(),
            files: Vec::new(),
        }
    }

    /// Count these files in `du` and collect them in prune and GC.
    pub fn with_files(mut self, files: gc::FileRecords) -> Self {
        self.files.push(files);
        self
    }

    /// The worker.
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    /// The cache database.
    pub fn db(&self) -> &CacheDb {
        &self.db
    }

    /// Build the result of a definition. `None`: the definition is empty (scratch).
    pub async fn solve(
        self: &Arc<Self>,
        definition: &pb::Definition,
        session: Arc<Session>,
        entitlements: &Entitlements,
        progress: Arc<dyn Progress>,
    ) -> Result<Option<Snapshot>, SolveError> {
        Ok(self
            .solve_with_keys(definition, session, entitlements, progress)
            .await?
            .0)
    }

    /// [`Solver::solve`], also returning the cache keys of the build (for cache export).
    pub async fn solve_with_keys(
        self: &Arc<Self>,
        definition: &pb::Definition,
        session: Arc<Session>,
        entitlements: &Entitlements,
        progress: Arc<dyn Progress>,
    ) -> Result<(Option<Snapshot>, SolvedKeys), SolveError> {
        let Some(graph) = buildwit_llb::validate_allow_empty(definition)
            .map_err(|e| SolveError::Invalid(e.to_string()))?
        else {
            return Ok((None, SolvedKeys::default()));
        };
        entitlements.check_requested()?;
        for v in graph.ops() {
            // A step for a platform this host can neither run nor emulate fails before any
            // step runs.
            if let (Some(pb::op::Op::Exec(_)), Some(p)) = (&v.op.op, &v.op.platform) {
                let platform = format!("{}/{}", or(&p.os, "linux"), or(&p.architecture, "amd64"));
                let platforms = &self.worker.platforms;
                if !buildwit_worker::platforms::can_run(platforms, &platform) {
                    return Err(SolveError::Invalid(format!(
                        "cannot run steps for {platform}: this worker runs {}; install an emulator for it (apt-get install qemu-user-static, which registers qemu in binfmt_misc), and list it in [worker.oci] platforms if that is set",
                        platforms.join(", ")
                    )));
                }
            }
            if let Some(pb::op::Op::Exec(e)) = &v.op.op {
                if e.network == pb::NetMode::Host as i32 {
                    entitlements.check("network.host")?;
                }
                if e.security == pb::SecurityMode::Insecure as i32 {
                    entitlements.check("security.insecure")?;
                }
            }
        }
        let job = Arc::new(self.prepare(graph, session.clone(), progress).await?);
        // Before the first lookup: GC keeps what this build uses while its session lives.
        let mounts = job
            .graph
            .ops()
            .iter()
            .filter_map(|v| match &v.op.op {
                Some(pb::op::Op::Exec(e)) => Some(e.mounts.iter()),
                _ => None,
            })
            .flatten()
            .filter(|m| m.mount_type == pb::MountType::Cache as i32)
            .map(buildwit_worker::cache_mount_name)
            .collect();
        self.lease(&session, &job.keys, mounts);
        let result = job.graph.terminal().inputs[0];
        let index = job.graph.result().index as usize;
        let outputs = self.clone().ensure(job.clone(), result).await?;
        let used = std::mem::take(&mut *job.used.lock().unwrap());
        self.db
            .touch(&used)
            .map_err(|e| SolveError::Internal(e.to_string()))?;
        let snapshot = outputs.get(index).cloned().ok_or_else(|| {
            SolveError::Invalid(format!(
                "the result is output {index}, which its op does not have"
            ))
        })?;
        let keys = SolvedKeys {
            result: job.keys[result].clone(),
            all: job.keys.clone(),
            materials: job.materials(),
        };
        Ok((Some(snapshot), keys))
    }

    /// Compute every vertex's key: scan local sources, pin images.
    async fn prepare(
        &self,
        graph: Graph,
        session: Arc<Session>,
        progress: Arc<dyn Progress>,
    ) -> Result<Job, SolveError> {
        let mut keys: Vec<String> = Vec::with_capacity(graph.ops().len());
        let mut trees = HashMap::new();
        let mut images = HashMap::new();
        let mut downloads = HashMap::new();
        let mut commits = HashMap::new();
        let mut layouts = HashMap::new();
        let names: Vec<String> = graph.ops().iter().map(vertex_name).collect();
        for (i, v) in graph.ops().iter().enumerate() {
            let key = match &v.op.op {
                Some(pb::op::Op::Source(s)) if s.identifier.starts_with("local://") => {
                    let source = self
                        .worker
                        .local_source(s, &session)
                        .map_err(|e| step(&names[i], e))?;
                    let worker = self.worker.clone();
                    let src = source.clone();
                    let name = s.identifier["local://".len()..].to_string();
                    let session = session.clone();
                    let tree = tokio::task::spawn_blocking(move || {
                        session.sync_local(&name, &src)?;
                        let version = session.local_version(&name);
                        worker.locals.scan_at(&src, version.as_deref())
                    })
                    .await
                    .map_err(|e| SolveError::Internal(e.to_string()))?
                    .map_err(|e| step(&names[i], OpError::Io(e)))?;
                    let key = keys::local_key(s, &tree);
                    trees.insert(i, (source, tree));
                    key
                }
                Some(pb::op::Op::Source(s)) if s.identifier.starts_with("docker-image://") => {
                    let reference = s.identifier["docker-image://".len()..].to_string();
                    let pinned = if reference.contains('@') {
                        reference
                    } else {
                        // An unpinned tag is resolved on every build, as BuildKit does.
                        let p = v.op.platform.clone().unwrap_or_default();
                        let resolved = self
                            .registries
                            .with_access(&session.registry)
                            .resolve_image_config(
                                &reference,
                                or(&p.os, "linux"),
                                or(&p.architecture, "amd64"),
                                &p.variant,
                            )
                            .await
                            .map_err(|e| step(&names[i], OpError::Invalid(e.to_string())))?;
                        format!("{}@{}", resolved.reference, resolved.digest)
                    };
                    let mut pinned_op = v.op.clone();
                    if let Some(pb::op::Op::Source(s)) = &mut pinned_op.op {
                        s.identifier = format!("docker-image://{pinned}");
                    }
                    images.insert(i, pinned);
                    keys::op_key(&pinned_op, &[])
                }
                Some(pb::op::Op::Source(s))
                    if s.identifier.starts_with("https://")
                        || s.identifier.starts_with("http://") =>
                {
                    // Without a checksum the content is only known by downloading it, which
                    // BuildKit does on every build too.
                    let digest = match s.attrs.get("http.checksum") {
                        Some(c) => c.clone(),
                        None => buildwit_worker::http::download(
                            &self.worker.content,
                            &s.identifier,
                            None,
                        )
                        .await
                        .map_err(|e| step(&names[i], OpError::Invalid(e.to_string())))?,
                    };
                    let key = keys::op_key(&v.op, &[Dep::Content(digest.clone())]);
                    downloads.insert(i, digest);
                    key
                }
                Some(pb::op::Op::Source(s)) if s.identifier.starts_with("oci-layout://") => {
                    let rest = &s.identifier["oci-layout://".len()..];
                    let (name, digest) = rest.split_once('@').ok_or_else(|| {
                        step(
                            &names[i],
                            OpError::Invalid(format!(
                                "{}: an oci-layout source needs @sha256:…",
                                s.identifier
                            )),
                        )
                    })?;
                    let store = s.attrs.get("oci.store").cloned().unwrap_or_else(|| {
                        name.split(['/', ':'])
                            .next()
                            .unwrap_or_default()
                            .to_string()
                    });
                    let dir = session.oci_layouts.get(&store).ok_or_else(|| {
                        step(&names[i], OpError::Invalid(format!("the client sent no OCI layout named {store:?} (use --oci-layout {store}=DIR)")))
                    })?;
                    layouts.insert(i, (store, dir.clone(), digest.to_string()));
                    // The digest pins the content: the layout's path is not part of the key.
                    let mut bare = v.op.clone();
                    if let Some(pb::op::Op::Source(s)) = &mut bare.op {
                        s.attrs.remove("oci.session");
                        s.attrs.remove("oci.store");
                    }
                    keys::op_key(&bare, &[])
                }
                Some(pb::op::Op::Source(s)) if s.identifier.starts_with("git://") => {
                    let git = buildwit_worker::git::GitSource::parse(s)
                        .map_err(|e| step(&names[i], OpError::Invalid(e.to_string())))?;
                    let g = git.clone();
                    let commit = tokio::task::spawn_blocking(move || g.resolve())
                        .await
                        .map_err(|e| SolveError::Internal(e.to_string()))?
                        .map_err(|e| step(&names[i], OpError::Invalid(e.to_string())))?;
                    let key = keys::op_key(&v.op, &[Dep::Content(commit.clone())]);
                    commits.insert(i, (git, commit));
                    key
                }
                _ => {
                    let mut deps = Vec::new();
                    for (n, &producer) in v.inputs.iter().enumerate() {
                        let content = trees.get(&producer).and_then(
                            |(_, tree): &(LocalSource, LocalTree)| {
                                keys::selectors(&v.op, n).map(|sel| tree.checksum(&sel))
                            },
                        );
                        deps.push(match content {
                            Some(c) => Dep::Content(c),
                            None => Dep::Key(keys[producer].as_str(), v.op.inputs[n].index),
                        });
                    }
                    keys::op_key(&v.op, &deps)
                }
            };
            keys.push(key);
        }
        let n = keys.len();
        Ok(Job {
            graph,
            keys,
            names,
            trees,
            images,
            downloads,
            layouts,
            commits,
            session,
            progress,
            used: Mutex::new(Vec::new()),
            shown: Mutex::new(vec![false; n]),
        })
    }

    /// The outputs of vertex `i`: from the cache, or built now.
    fn ensure(
        self: Arc<Self>,
        job: Arc<Job>,
        i: usize,
    ) -> BoxFuture<'static, Result<Arc<Vec<Snapshot>>, SolveError>> {
        async move {
            let key = job.keys[i].clone();
            let cell = self
                .inflight
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default()
                .clone();
            // Removed however this ends, a cancelled build's future dropped mid-step too.
            let _entry = Inflight {
                solver: &self,
                key: &key,
                cell: &cell,
            };
            cell.get_or_try_init(|| self.clone().build(job.clone(), i))
                .await
                .cloned()
        }
        .boxed()
    }

    fn cached(&self, key: &str) -> Result<Option<Vec<Snapshot>>, SolveError> {
        let Some(record) = self
            .db
            .get(key)
            .map_err(|e| SolveError::Internal(e.to_string()))?
        else {
            return Ok(None);
        };
        let mut outputs = Vec::new();
        for ids in &record.outputs {
            let mut layers = Vec::new();
            for id in ids {
                match self.worker.snapshots.layer(id) {
                    Some(l) => layers.push(l),
                    None => return Ok(None),
                }
            }
            outputs.push(Snapshot { layers });
        }
        Ok(Some(outputs))
    }

    async fn build(
        self: Arc<Self>,
        job: Arc<Job>,
        i: usize,
    ) -> Result<Arc<Vec<Snapshot>>, SolveError> {
        let v = &job.graph.ops()[i];
        let name = job.names[i].clone();
        let vertex = v.digest.to_string();
        let key = job.keys[i].clone();
        // `--no-cache` marks vertices to run again whatever the cache holds.
        let ignore_cache = v.metadata.as_ref().is_some_and(|m| m.ignore_cache);
        if !ignore_cache && let Some(outputs) = self.cached(&key)? {
            job.show_cached(i);
            job.used.lock().unwrap().push(key);
            return Ok(Arc::new(outputs));
        }
        let inputs: Vec<Arc<Vec<Snapshot>>> = try_join_all(
            v.inputs
                .iter()
                .map(|&p| self.clone().ensure(job.clone(), p)),
        )
        .await?;
        let inputs: Vec<Snapshot> = v
            .inputs
            .iter()
            .zip(&v.op.inputs)
            .zip(&inputs)
            .map(|((_, input), outs)| outs.get(input.index as usize).cloned().unwrap_or_default())
            .collect();
        let _permit = match &self.permits {
            Some(s) => Some(
                s.acquire()
                    .await
                    .map_err(|e| SolveError::Internal(e.to_string()))?,
            ),
            None => None,
        };
        job.shown.lock().unwrap()[i] = true;
        job.progress.event(ProgressEvent::Started {
            vertex: vertex.clone(),
            name: name.clone(),
        });
        let started = Instant::now();
        let result = self.run(&job, i, inputs).await;
        job.progress.event(ProgressEvent::Completed {
            vertex,
            name: name.clone(),
            duration: started.elapsed(),
            error: result.as_ref().err().map(|e| e.to_string()),
        });
        let outputs = result.map_err(|e| match e {
            OpError::Exit { code, ref tail, .. } => SolveError::Step {
                name: name.clone(),
                message: e.to_string(),
                exit_code: Some(code),
                tail: tail.clone(),
            },
            other => step(&name, other),
        })?;
        let record = Record {
            outputs: outputs
                .iter()
                .map(|s| s.layers.iter().map(|l| l.id.clone()).collect())
                .collect(),
            description: name,
            created: cachedb::now(),
            last_used: cachedb::now(),
            usage_count: 1,
            record_type: match &v.op.op {
                Some(pb::op::Op::Source(_)) if job.trees.contains_key(&i) => gc::TYPE_LOCAL,
                Some(pb::op::Op::Source(_)) if job.commits.contains_key(&i) => gc::TYPE_GIT,
                _ => gc::TYPE_REGULAR,
            }
            .to_string(),
        };
        self.db
            .put(&key, &record)
            .map_err(|e| SolveError::Internal(e.to_string()))?;
        Ok(Arc::new(outputs))
    }

    /// Run vertex `i` on the worker.
    async fn run(
        &self,
        job: &Arc<Job>,
        i: usize,
        inputs: Vec<Snapshot>,
    ) -> Result<Vec<Snapshot>, OpError> {
        let v = &job.graph.ops()[i];
        if job.session.is_cancelled() {
            return Err(OpError::Invalid("the build was cancelled".into()));
        }
        let key_hex = job.keys[i]["sha256:".len()..].to_string();
        if let Some(reference) = job.images.get(&i) {
            let p = v.op.platform.clone().unwrap_or_default();
            let pulled = buildwit_worker::image::pull(
                &self.registries.with_access(&job.session.registry),
                &self.worker.content,
                &self.worker.snapshots,
                reference,
                (or(&p.os, "linux"), or(&p.architecture, "amd64"), &p.variant),
            )
            .await
            .map_err(|e| OpError::Invalid(e.to_string()))?;
            return Ok(vec![pulled.snapshot]);
        }
        if let Some((store, dir, digest)) = job.layouts.get(&i) {
            let p = v.op.platform.clone().unwrap_or_default();
            // A remote client's layout is named as the client named it, not by its mirror.
            let label = match job.session.sync {
                Some(_) => format!("{store} (the client's --oci-layout)"),
                None => dir.display().to_string(),
            };
            let fetch = job.session.sync.clone().map(|sync| {
                let name = buildwit_worker::Session::layout_local(store);
                Box::new(move |paths: &[String]| sync.sync(&name, paths, &[], &[]))
                    as buildwit_worker::image::LayoutFetch
            });
            let image = buildwit_worker::image::from_layout(
                &self.worker.content,
                &self.worker.snapshots,
                dir,
                &label,
                digest,
                (or(&p.os, "linux"), or(&p.architecture, "amd64"), &p.variant),
                fetch,
            )
            .await
            .map_err(|e| OpError::Invalid(e.to_string()))?;
            return Ok(vec![image.snapshot]);
        }
        if let (Some(digest), Some(pb::op::Op::Source(s))) = (job.downloads.get(&i), &v.op.op) {
            let fetched =
                buildwit_worker::http::download(&self.worker.content, &s.identifier, Some(digest))
                    .await
                    .map_err(|e| OpError::Invalid(e.to_string()))?;
            let snap = buildwit_worker::http::snapshot(
                &self.worker.content,
                &self.worker.snapshots,
                &s.identifier,
                &fetched,
                &s.attrs,
            )
            .map_err(|e| OpError::Invalid(e.to_string()))?;
            return Ok(vec![snap]);
        }
        let worker = self.worker.clone();
        let job2 = job.clone();
        tokio::task::spawn_blocking(move || {
            let v = &job2.graph.ops()[i];
            let ids = |out: usize| format!("{}-{out}", &key_hex[..48]);
            let vertex = v.digest.to_string();
            let progress = job2.progress.clone();
            let output = move |stream: u8, line: &str| {
                progress.event(ProgressEvent::Log {
                    vertex: vertex.clone(),
                    stream,
                    line: line.to_string(),
                })
            };
            match &v.op.op {
                Some(pb::op::Op::Source(_)) => match (job2.trees.get(&i), job2.commits.get(&i)) {
                    (Some((source, tree)), _) => Ok(vec![worker.local_snapshot(source, tree)?]),
                    (_, Some((git, commit))) => Ok(vec![
                        git.snapshot(commit, &worker.snapshots)
                            .map_err(|e| OpError::Invalid(e.to_string()))?,
                    ]),
                    _ => Err(OpError::Invalid(format!(
                        "{}: this source type is not supported yet",
                        vertex_name(v)
                    ))),
                },
                Some(pb::op::Op::Exec(e)) => worker.exec(e, &inputs, &job2.session, &ids, &output),
                Some(pb::op::Op::File(f)) => worker.file(f, &inputs, &ids),
                Some(pb::op::Op::Merge(_)) => Ok(vec![worker.merge(&inputs)]),
                Some(pb::op::Op::Diff(d)) => {
                    let pick = |input: Option<i64>| -> Snapshot {
                        input
                            .and_then(|x| usize::try_from(x).ok())
                            .and_then(|n| inputs.get(n).cloned())
                            .unwrap_or_default()
                    };
                    let lower = pick(d.lower.as_ref().map(|l| l.input));
                    let upper = pick(d.upper.as_ref().map(|u| u.input));
                    Ok(vec![worker.diff(&lower, &upper, &ids(0))?])
                }
                Some(pb::op::Op::Passthrough(p)) => p
                    .outputs
                    .iter()
                    .map(|&n| {
                        usize::try_from(n)
                            .ok()
                            .and_then(|n| inputs.get(n).cloned())
                            .ok_or_else(|| {
                                OpError::Invalid(format!(
                                    "passthrough output names input {n}, which does not exist"
                                ))
                            })
                    })
                    .collect(),
                Some(pb::op::Op::Build(_)) => Err(OpError::Invalid(
                    "nested build ops are not supported; frontends forward through the gateway"
                        .into(),
                )),
                None => Err(OpError::Invalid("op has no operation".into())),
            }
        })
        .await
        .map_err(|e| OpError::Invalid(format!("worker task failed: {e}")))?
    }
}

fn or<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

fn step(name: &str, e: OpError) -> SolveError {
    SolveError::Step {
        name: name.to_string(),
        message: e.to_string(),
        exit_code: None,
        tail: Vec::new(),
    }
}
