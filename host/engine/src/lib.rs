//! The buildwit engine: what every API builds with.
//!
//! [`BuildApi`] is the one API every client uses. [`Engine`] implements it in-process (what
//! the CLI uses without `--addr`); `buildwitd` serves the same engine over buildwit's gRPC
//! API (`buildwit-daemon`) and BuildKit's (`buildwit-buildkit`), which reach their clients
//! through a [`ClientLink`], so every mode behaves alike. A build runs its frontend, then
//! (unless only the LLB or a subrequest's answer is wanted) solves the LLB on the worker and
//! exports the result.

mod build_io;
use build_io::BuildIo;
use buildwit_exporter::cache::CacheTarget;
mod cache;
mod cache_bucket;
mod cache_gha;
mod cache_io;
pub mod client;
mod container;
mod export;
mod frontends;
pub mod history;
pub mod info;
mod local;
pub mod outputs;
mod provenance;
pub mod wasm_images;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use buildwit_frontend::{Event, FrontendError, Limits, Runtime};
use buildwit_llb::pb;
use buildwit_solver::{Entitlements, ProgressEvent, SolveError, Solver};
use buildwit_worker::{Session, Snapshot};

pub use buildwit_exporter::{OutputSpec, parse_output};
pub use buildwit_frontend::{FrontendOutput, SolvedRef};
pub use client::{ClientCacheDirs, ClientLink};
pub use export::Exported;
pub use frontends::{BUILTIN_DOCKERFILE_VERSION, Frontends, Selected, Served, repository_name};
pub use local::LocalBridge;

/// Which frontend runs a build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontendRef {
    /// A frontend registered by name: `dockerfile.v0`, `gateway.v0`.
    Named(String),
    /// A component file: the frontend author's inner loop, no registry needed.
    File(PathBuf),
    /// A Wasm frontend image in a registry, as `# syntax=` names one.
    Image(String),
}

/// A build as a client asks for it.
#[derive(Clone, Debug)]
pub struct BuildRequest {
    /// The frontend.
    pub frontend: FrontendRef,
    /// Frontend options (`filename`, `target`, `build-arg:K`, ...).
    pub options: Vec<(String, String)>,
    /// Local directories by name (`context`, `dockerfile`).
    pub locals: BTreeMap<String, PathBuf>,
    /// Secrets by id (`--secret`).
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// SSH agent sockets by id (`--ssh`).
    pub ssh: BTreeMap<String, PathBuf>,
    /// OCI image layouts by store name (`--oci-layout`).
    pub oci_layouts: BTreeMap<String, PathBuf>,
    /// Entitlements the build asks for (`--allow network.host`).
    pub allow: Vec<String>,
    /// Build the result (false: only run the frontend, for `--dump-llb` and `--call`).
    pub solve: bool,
    /// Where the result goes (`--output`); nothing: built and cached only.
    pub outputs: Vec<OutputSpec>,
    /// Where the build cache goes (`--cache-to`).
    pub cache_to: Vec<buildwit_exporter::cache::CacheSpec>,
    /// Caches to import before solving (`--cache-from`).
    pub cache_from: Vec<buildwit_exporter::cache::CacheSpec>,
    /// The client behind the request (buildwitd's remote clients; default in-process).
    pub client: ClientLink,
    /// Wall-time limit of each frontend run (`--frontend-timeout`; `None`: the engine's).
    pub frontend_timeout: Option<Duration>,
    /// A result the client's own frontend made (BuildKit's client-side gateway builds,
    /// as buildctl and buildx run them): built and exported as it is, no frontend runs;
    /// `frontend` names the frontend it came from.
    pub prepared: Option<FrontendOutput>,
}

/// Which frontend served a build.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FrontendRecord {
    /// The reference or file it was loaded from.
    pub source: String,
    /// `sha256:` of the component.
    pub digest: String,
    /// The WIT version it speaks.
    pub wit_version: String,
    /// Its own name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its channel.
    pub channel: String,
    /// Whether this build had to compile it (false: compiled artifact from the cache).
    pub compiled: bool,
}

impl FrontendRecord {
    /// A frontend the client ran itself: buildwit knows only its name.
    fn client(frontend: &FrontendRef) -> Self {
        FrontendRecord {
            source: frontend_name(frontend),
            digest: String::new(),
            wit_version: String::new(),
            name: frontend_name(frontend),
            version: String::new(),
            channel: "client".into(),
            compiled: false,
        }
    }
}

/// What a build produced.
#[derive(Clone, Debug)]
pub struct BuildOutcome {
    /// The frontend that served it.
    pub frontend: FrontendRecord,
    /// The LLB of the result (`None` = scratch).
    pub definition: Option<pb::Definition>,
    /// The LLB of per-platform results.
    pub platforms: Vec<(String, pb::Definition)>,
    /// Result metadata (`containerimage.config`, ...).
    pub metadata: Vec<(String, Vec<u8>)>,
    /// Time the frontend took, load included.
    pub frontend_time: Duration,
    /// The built result, when the request asked to solve (`None`: scratch).
    pub result: Option<Snapshot>,
    /// Time the solve took.
    pub solve_time: Duration,
    /// What the exports made.
    pub exported: Vec<Exported>,
    /// The build's id in the history (empty when not recorded).
    pub build_id: String,
}

/// Where build events go (the CLI prints them).
pub trait EventSink: Send + Sync {
    /// One event of a frontend.
    fn event(&self, event: Event);

    /// Progress of the solve.
    fn progress(&self, _event: ProgressEvent) {}
}

impl<F: Fn(Event) + Send + Sync> EventSink for F {
    fn event(&self, event: Event) {
        self(event)
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// No such frontend, or it is disabled (BuildKit's wording).
    #[error("invalid frontend: {0}")]
    InvalidFrontend(String),
    /// The frontend failed or misbehaved.
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    /// Refused by frontend policy (BuildKit's wording).
    #[error("{0}")]
    Policy(String),
    /// The engine could not start.
    #[error("cannot start the engine: {0}")]
    Setup(String),
    /// Building the graph failed.
    #[error(transparent)]
    Solve(#[from] SolveError),
    /// Writing the result failed.
    #[error("{0}")]
    Export(String),
    /// Reading or pruning the build cache failed.
    #[error(transparent)]
    Cache(#[from] buildwit_solver::GcError),
}

/// A `--platform` value as (os, architecture, variant), read as containerd reads one:
/// empty or `local` is this host, a lone OS gets this host's architecture, and a lone
/// architecture Linux.
fn parse_platform(platform: &str) -> (String, String, String) {
    const OSES: &[&str] = &[
        "linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos",
        "android", "aix", "plan9",
    ];
    let host = buildwit_exporter::host_architecture();
    let parts: Vec<&str> = platform.split('/').collect();
    let (os, arch, variant) = match parts.as_slice() {
        [""] | ["local"] => ("linux", host, ""),
        [one] if OSES.contains(one) => (*one, host, ""),
        [arch] => ("linux", *arch, ""),
        [os, arch] => (*os, *arch, ""),
        [os, arch, variant, ..] => (*os, *arch, *variant),
        [] => ("linux", host, ""),
    };
    (os.to_string(), arch.to_string(), variant.to_string())
}

/// The worker's platforms as BuildKit lists them to a frontend: its own first, the
/// default target.
fn worker_platforms(platforms: &[String]) -> Vec<pb::Platform> {
    let native = [String::new()];
    let platforms = if platforms.is_empty() {
        &native[..]
    } else {
        platforms
    };
    platforms
        .iter()
        .map(|p| {
            let (os, architecture, variant) = parse_platform(p);
            pb::Platform {
                architecture,
                os,
                variant,
                ..Default::default()
            }
        })
        .collect()
}

/// Make the state directory `root` reachable by its owner only (0700), whatever the umask:
/// it holds clients' contexts, secrets in flight and compiled frontend code. An existing
/// directory is changed only when it is empty or already buildwit's (never a `--root /tmp`).
fn private_root(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let ours = ["buildwit.lock", "cache.db", "frontends", "snapshots"]
                .iter()
                .any(|n| root.join(n).symlink_metadata().is_ok());
            let empty = std::fs::read_dir(root)?.next().is_none();
            if !(ours || empty) {
                if std::fs::metadata(root)?.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        "the state directory {} is open to other users; give it mode 0700",
                        root.display()
                    );
                }
                return Ok(());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(root)?;
        }
        Err(e) => return Err(e),
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
}

/// The client-facing build API, the same in-process and over gRPC.
pub trait BuildApi {
    /// Run one build.
    fn build(
        &self,
        request: BuildRequest,
        events: Arc<dyn EventSink>,
    ) -> Result<BuildOutcome, DaemonError>;

    /// Describe a frontend component without building.
    fn inspect_frontend(&self, frontend: &FrontendRef) -> Result<FrontendRecord, DaemonError>;
}

/// The engine, in-process.
pub struct Engine {
    frontends: Arc<Frontends>,
}

impl Engine {
    /// Open the engine with its state under `root`.
    pub fn open(
        config: buildwit_config::Config,
        root: PathBuf,
        limits: Limits,
    ) -> Result<Self, DaemonError> {
        private_root(&root).map_err(|e| {
            DaemonError::Setup(format!("the state directory {}: {e}", root.display()))
        })?;
        let runtime = Runtime::new(limits, Some(frontends::compiled_dir(&root)))?;
        let registries = Arc::new(
            buildwit_registry::Registries::new(&config.registry)
                .map_err(|e| DaemonError::Setup(e.to_string()))?,
        );
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("buildwit-io")
            .enable_all()
            .build()
            .map_err(|e| DaemonError::Setup(e.to_string()))?;
        Ok(Engine {
            frontends: Arc::new(Frontends {
                config,
                runtime,
                registries,
                io,
                images: wasm_images::WasmImages::open(root.join("frontends").join("images")),
                root,
                solver: OnceLock::new(),
            }),
        })
    }

    /// The solver and its worker, opened on first use.
    pub fn solver(&self) -> Result<Arc<Solver>, DaemonError> {
        self.frontends.solver()
    }

    /// Solve several definitions (one per platform) at once: what they share runs once.
    fn solve_all(
        &self,
        definitions: &[&pb::Definition],
        session: Arc<Session>,
        allow: &[String],
        events: Arc<dyn EventSink>,
    ) -> Result<Vec<(Option<Snapshot>, buildwit_solver::SolvedKeys)>, DaemonError> {
        let solver = self.solver()?;
        let entitlements = Entitlements {
            daemon: self.frontends.config.insecure_entitlements.clone(),
            build: allow.to_vec(),
        };
        // A step the platforms share is one vertex: shown once, not cached once per platform.
        let shown = Mutex::new(std::collections::HashSet::new());
        let progress: Arc<dyn buildwit_solver::Progress> =
            Arc::new(move |e: ProgressEvent| match &e {
                ProgressEvent::Started { vertex, .. } => {
                    shown.lock().unwrap().insert(vertex.clone());
                    events.progress(e)
                }
                ProgressEvent::Cached { vertex, .. }
                    if !shown.lock().unwrap().insert(vertex.clone()) => {}
                _ => events.progress(e),
            });
        // The first platform to fail stops the others' running steps.
        let solves = definitions.iter().map(|def| {
            let session = session.clone();
            let solve =
                solver.solve_with_keys(def, session.clone(), &entitlements, progress.clone());
            async move {
                let result = solve.await;
                if result.is_err() {
                    session
                        .cancelled
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                result
            }
        });
        Ok(self
            .frontends
            .io
            .block_on(futures_util::future::try_join_all(solves))?)
    }

    /// Import each cache before the solve; one that cannot be read is only a warning.
    fn import_caches(
        &self,
        specs: &[buildwit_exporter::cache::CacheSpec],
        events: &dyn EventSink,
        io: BuildIo,
        client: &ClientLink,
        platforms: &[(String, String, String)],
    ) -> Result<(), DaemonError> {
        if specs.is_empty() {
            return Ok(());
        }
        let solver = self.solver()?;
        for spec in specs {
            let import = |mirror: Option<&Path>| {
                cache_io::import(
                    &solver,
                    &self.frontends.registries.with_access(&client.registry),
                    io,
                    spec,
                    mirror,
                    platforms,
                )
            };
            let result = match (&spec.target, &client.cache_dirs) {
                (CacheTarget::Local(path), Some(remote)) => {
                    on_client_dir(remote.as_ref(), path, spec, |mirror| import(Some(mirror)))
                }
                _ => import(None),
            };
            if let Err(e) = result {
                io.check()?;
                warn(events, format!("importing cache: {e}"));
            }
        }
        Ok(())
    }

    /// Export the build cache; a failure fails the build unless `ignore-error=true`. Each
    /// export is a step of the progress, with what it wrote.
    fn export_caches(
        &self,
        specs: &[buildwit_exporter::cache::CacheSpec],
        keys: &[buildwit_solver::SolvedKeys],
        events: &dyn EventSink,
        io: BuildIo,
        client: &ClientLink,
    ) -> Result<(), DaemonError> {
        let specs: Vec<_> = specs
            .iter()
            .filter(|s| s.target != CacheTarget::Inline)
            .collect();
        if specs.is_empty() {
            return Ok(());
        }
        let solver = self.solver()?;
        for (i, spec) in specs.into_iter().enumerate() {
            let vertex = format!("cache-export-{i}");
            let name = format!("exporting cache to {}", spec.describe());
            events.progress(ProgressEvent::Started {
                vertex: vertex.clone(),
                name: name.clone(),
            });
            let started = Instant::now();
            let export = |mirror: Option<&Path>| {
                cache_io::export(
                    &solver,
                    &self.frontends.registries.with_access(&client.registry),
                    io,
                    spec,
                    mirror,
                    keys,
                )
            };
            let result = match (&spec.target, &client.cache_dirs) {
                (CacheTarget::Local(path), Some(remote)) => {
                    on_client_dir(remote.as_ref(), path, spec, |mirror| export(Some(mirror)))
                }
                _ => export(None),
            };
            io.check()?;
            if let Ok(done) = &result {
                let w = &done.written;
                events.progress(ProgressEvent::Log {
                    vertex: vertex.clone(),
                    stream: 1,
                    line: format!(
                        "{} records, {} blobs written ({} bytes), {} already there, manifest {}",
                        done.records, w.blobs, w.bytes, w.present, done.manifest
                    ),
                });
            }
            events.progress(ProgressEvent::Completed {
                vertex,
                name,
                duration: started.elapsed(),
                error: result.as_ref().err().cloned(),
            });
            match result {
                Ok(_) => {}
                Err(e) if spec.ignore_error => warn(events, format!("exporting cache: {e}")),
                Err(e) => return Err(DaemonError::Export(format!("exporting cache: {e}"))),
            }
        }
        Ok(())
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.frontends.root
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &buildwit_config::Config {
        &self.frontends.config
    }

    /// The longest a frontend may run (a client may ask for less, not more).
    pub fn frontend_deadline(&self) -> Duration {
        self.frontends.runtime.limits().deadline
    }

    /// Whether frontends given as a file may run: a file is a gateway frontend with no
    /// repository, and the same policy applies.
    pub fn check_frontend_file(&self) -> Result<(), DaemonError> {
        let gateway = &self.frontends.config.frontend.gateway;
        if gateway.allows_frontend_files() {
            return Ok(());
        }
        Err(DaemonError::Policy(format!(
            "frontends given as a file (--frontend-file) are not allowed by this daemon's configuration ({}; set allowFrontendFiles = true under [frontend.\"gateway.v0\"] to allow them)",
            if gateway.is_enabled() {
                "allowedRepositories is set"
            } else {
                "gateway.v0 is disabled"
            }
        )))
    }

    fn select(
        &self,
        frontend: &FrontendRef,
        options: &[(String, String)],
        access: &buildwit_registry::Access,
    ) -> Result<Selected, DaemonError> {
        match frontend {
            FrontendRef::File(path) => Ok(Selected {
                served: {
                    self.check_frontend_file()?;
                    Served::Wasm(self.frontends.runtime.load_file(path)?)
                },
                source: path.display().to_string(),
                warnings: Vec::new(),
            }),
            FrontendRef::Named(name) => self.frontends.select(name, options, access),
            FrontendRef::Image(reference) => self.frontends.select(
                "gateway.v0",
                &[("source".to_string(), reference.clone())],
                access,
            ),
        }
    }

    fn record(
        &self,
        selected: &Selected,
        bridge: Arc<LocalBridge>,
    ) -> Result<FrontendRecord, DaemonError> {
        let loaded = match &selected.served {
            Served::Wasm(loaded) => loaded,
            Served::Container(image) => {
                let name = image
                    .pinned
                    .split_once('@')
                    .map_or(&*image.pinned, |(n, _)| n);
                let (tag, digest) = frontends::tag_and_digest(&image.pinned);
                return Ok(FrontendRecord {
                    source: selected.source.clone(),
                    digest: digest.unwrap_or_default(),
                    wit_version: String::new(),
                    name: name.to_string(),
                    version: tag.unwrap_or_default(),
                    channel: "container".into(),
                    compiled: false,
                });
            }
        };
        let info = self.frontends.runtime.info(loaded, bridge)?;
        Ok(FrontendRecord {
            source: selected.source.clone(),
            digest: loaded.digest.clone(),
            wit_version: loaded.wit_version.clone(),
            name: info.name,
            version: info.version,
            channel: info.channel,
            compiled: loaded.compiled,
        })
    }
}

/// The platforms of a multi-platform result, in the frontend's order: `refs.platforms`'
/// ids, else the references' own. Each must be `os/arch[/variant]` (it names a folder of a
/// local export).
fn result_platforms<R>(
    metadata: &[(String, Vec<u8>)],
    refs: &[(String, R)],
) -> Result<Vec<String>, DaemonError> {
    let listed = metadata
        .iter()
        .find(|(k, _)| k == "refs.platforms")
        .and_then(|(_, v)| serde_json::from_slice::<serde_json::Value>(v).ok())
        .and_then(|v| {
            v["Platforms"].as_array().map(|ps| {
                ps.iter()
                    .filter_map(|p| p["ID"].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
        });
    let ids = match listed {
        Some(ids) if !ids.is_empty() => ids,
        _ => refs.iter().map(|(k, _)| k.clone()).collect(),
    };
    for id in &ids {
        let parts: Vec<&str> = id.split('/').collect();
        let word =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(word) {
            return Err(DaemonError::Export(format!(
                "the frontend's result names platform {id:?}, which is not os/arch[/variant]"
            )));
        }
    }
    Ok(ids)
}

/// A frontend as the request named it: a name, a file, a reference.
fn frontend_name(frontend: &FrontendRef) -> String {
    match frontend {
        FrontendRef::Named(n) => n.clone(),
        FrontendRef::File(f) => f.display().to_string(),
        FrontendRef::Image(r) => r.clone(),
    }
}

/// The option the built-in Dockerfile frontend takes as the `local.unique` of the build
/// context (its `LOCAL_UNIQUE_OPTION`).
const LOCAL_UNIQUE_OPTION: &str = "buildwit:local-unique";

impl BuildApi for Engine {
    fn build(
        &self,
        mut request: BuildRequest,
        events: Arc<dyn EventSink>,
    ) -> Result<BuildOutcome, DaemonError> {
        let created = history::now();
        let started = Instant::now();
        let id = history::new_id();
        let name = request.client.name.clone().unwrap_or_else(|| {
            request
                .locals
                .get("context")
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| format!("{:?}", request.frontend))
        });
        let frontend = frontend_name(&request.frontend);
        let target = request
            .options
            .iter()
            .find(|(k, _)| k == "target")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let record_it = request.solve;
        let counting = Arc::new(history::Counting {
            inner: events,
            steps: Default::default(),
            cached: Default::default(),
        });
        // BuildKit's Dockerfile frontend gives the build context a `local.unique` of a new
        // id per session (not in the cache key); ours takes it as this option.
        if !request
            .options
            .iter()
            .any(|(k, _)| k == LOCAL_UNIQUE_OPTION)
        {
            request
                .options
                .push((LOCAL_UNIQUE_OPTION.to_string(), id.clone()));
        }
        let mut result = self.run_build(request, counting.clone(), &id);
        if record_it {
            if let Ok(outcome) = &mut result {
                outcome.build_id = id.clone();
            }
            let mut record = history::HistoryRecord {
                id,
                name,
                created,
                duration_ms: started.elapsed().as_millis() as u64,
                status: if result.is_ok() { "Completed" } else { "Error" }.into(),
                error: result.as_ref().err().map(|e| e.to_string()),
                frontend,
                target,
                steps: counting.steps.load(std::sync::atomic::Ordering::Relaxed),
                cached_steps: counting.cached.load(std::sync::atomic::Ordering::Relaxed),
                ..Default::default()
            };
            if let Ok(outcome) = &result {
                record.served_by = Some(outcome.frontend.clone());
                record.outputs = outcome
                    .exported
                    .iter()
                    .map(|e| match &e.digest {
                        Some(d) => format!("{} to {} ({d})", e.kind, e.dest),
                        None => format!("{} to {}", e.kind, e.dest),
                    })
                    .collect();
            }
            if let Err(e) = self.history().record(&record) {
                tracing::warn!("recording build history: {e}");
            }
        }
        result
    }

    fn inspect_frontend(&self, frontend: &FrontendRef) -> Result<FrontendRecord, DaemonError> {
        let selected = self.select(frontend, &[], &Default::default())?;
        let bridge = Arc::new(LocalBridge::new(
            Arc::new(Session::default()),
            Arc::new(|_| {}),
            self.frontends.clone(),
        ));
        self.record(&selected, bridge)
    }
}

/// `f` on the mirror of a client's local cache directory `path` (of `spec`).
fn on_client_dir<T>(
    dirs: &dyn ClientCacheDirs,
    path: &Path,
    spec: &buildwit_exporter::cache::CacheSpec,
    f: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<T, String> {
    let mut f = Some(f);
    let mut result = None;
    let synced = dirs.cache_dir(path, &mut |mirror| {
        result = f.take().map(|f| f(mirror));
    });
    match (synced, result) {
        (Ok(()), Some(result)) => result,
        (Ok(()), None) => Err(format!(
            "{}: the client's directory was not read",
            spec.describe()
        )),
        (Err(e), _) => Err(format!("{}: {e}", spec.describe())),
    }
}

/// Whether a build asks for an inline cache: `--cache-to type=inline`, or BuildKit's build
/// argument `BUILDKIT_INLINE_CACHE=1`.
fn inline_cache_wanted(request: &BuildRequest) -> bool {
    request
        .cache_to
        .iter()
        .any(|s| s.target == CacheTarget::Inline)
        || request.options.iter().any(|(k, v)| {
            k == "build-arg:BUILDKIT_INLINE_CACHE" && matches!(v.as_str(), "1" | "true")
        })
}

/// A warning of the engine itself (not of a frontend).
fn warn(events: &dyn EventSink, message: String) {
    tracing::warn!("{message}");
    events.event(Event::Warning {
        frontend: "buildwit".into(),
        warning: buildwit_frontend::bridge::Warning {
            level: 1,
            short: message,
            detail: Vec::new(),
            url: String::new(),
            location: None,
        },
    });
}

/// The imports and exports of a frontend component, for `buildwit frontend inspect`.
pub fn frontend_interfaces(
    engine: &Engine,
    frontend: &FrontendRef,
) -> Result<(Vec<String>, Vec<String>, usize), DaemonError> {
    let selected = engine.select(frontend, &[], &Default::default())?;
    let loaded = selected.component()?;
    Ok((loaded.imports.clone(), loaded.exports.clone(), loaded.size))
}

impl Engine {
    /// Publish a frontend component as a Wasm artifact: the component is checked against
    /// the contract first (a supported WIT version, nothing but our imports), and its name,
    /// version and channel become annotations. Returns the manifest digest and how many
    /// blobs were uploaded (blobs the registry has are skipped).
    pub fn push_frontend(
        &self,
        file: &std::path::Path,
        reference: &str,
    ) -> Result<(String, usize), DaemonError> {
        let frontend = FrontendRef::File(file.to_path_buf());
        let record = self.inspect_frontend(&frontend)?;
        let selected = self.select(&frontend, &[], &Default::default())?;
        let loaded = selected.component()?;
        let created = buildwit_exporter::now_rfc3339();
        let config = wasm_images::artifact_config(
            &loaded.digest,
            &loaded.imports,
            &loaded.exports,
            &created,
        );
        let mut annotations = std::collections::BTreeMap::new();
        annotations.insert(
            "org.opencontainers.image.title".to_string(),
            record.name.clone(),
        );
        annotations.insert(
            "org.opencontainers.image.version".to_string(),
            record.version.clone(),
        );
        annotations.insert("org.opencontainers.image.created".to_string(), created);
        annotations.insert(
            wasm_images::ANNOTATION_CHANNEL.to_string(),
            record.channel.clone(),
        );
        annotations.insert(
            "dev.buildwit.frontend.wit".to_string(),
            record.wit_version.clone(),
        );
        let title = file.file_name().map_or_else(
            || "frontend.wasm".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        let manifest = wasm_images::artifact_manifest(
            &config,
            &loaded.digest,
            loaded.size,
            &title,
            &annotations,
        );
        // A core module goes up as the component it was loaded as.
        let bytes = std::fs::read(file)
            .map_err(|e| DaemonError::Setup(format!("{}: {e}", file.display())))?;
        let component = buildwit_frontend::component_of(&bytes)
            .map_err(|e| DaemonError::Policy(format!("{}: {e}", file.display())))?;
        self.push_image(reference, vec![config, component.into_owned()], &manifest)
    }

    /// Publish a frontend component as a container image that a stock BuildKit runs as a
    /// `# syntax=` frontend: `runner` (buildwit's `buildwit-frontend` binary) is its
    /// entrypoint and runs the component, answering its gateway imports with BuildKit's
    /// `LLBBridge`. Returns the manifest digest and how many blobs were uploaded.
    pub fn push_frontend_container(
        &self,
        file: &std::path::Path,
        reference: &str,
        runner: &std::path::Path,
    ) -> Result<(String, usize), DaemonError> {
        let frontend = FrontendRef::File(file.to_path_buf());
        let record = self.inspect_frontend(&frontend)?;
        let bytes = std::fs::read(file)
            .map_err(|e| DaemonError::Setup(format!("{}: {e}", file.display())))?;
        let component = buildwit_frontend::component_of(&bytes)
            .map_err(|e| DaemonError::Policy(format!("{}: {e}", file.display())))?
            .into_owned();
        // Compiled as the runner compiles it, so that it starts without compiling where
        // the machine matches.
        let dir = self
            .frontends
            .root
            .join("frontends")
            .join(format!("push-compiled-{}", std::process::id()));
        let compiled = container::compiled(&record.name, &component, &dir)?;
        let image = container::runner_image(runner, &component, &compiled, &record)
            .map_err(DaemonError::Setup)?;
        self.push_image(reference, vec![image.config, image.layer], &image.manifest)
    }

    /// Push an OCI image manifest and its blobs; the manifest digest and how many blobs
    /// were uploaded (those the registry has are skipped).
    fn push_image(
        &self,
        reference: &str,
        blobs: Vec<Vec<u8>>,
        manifest: &[u8],
    ) -> Result<(String, usize), DaemonError> {
        let tmp = self.frontends.root.join("frontends").join("push");
        std::fs::create_dir_all(&tmp)
            .map_err(|e| DaemonError::Setup(format!("{}: {e}", tmp.display())))?;
        let mut files = Vec::new();
        for blob in &blobs {
            let digest = buildwit_llb::digest_of(blob).to_string();
            let path = tmp.join(format!(
                "{}.{}",
                digest.trim_start_matches("sha256:"),
                std::process::id()
            ));
            std::fs::write(&path, blob)
                .map_err(|e| DaemonError::Setup(format!("{}: {e}", path.display())))?;
            files.push((digest, path));
        }
        let pushed = self
            .frontends
            .io
            .block_on(self.frontends.registries.push_image(
                reference,
                &files,
                manifest,
                "application/vnd.oci.image.manifest.v1+json",
            ));
        for (_, path) in &files {
            let _ = std::fs::remove_file(path);
        }
        let uploaded = pushed
            .map_err(|e| DaemonError::Policy(format!("pushing {reference}: {e}")))?
            .blobs;
        Ok((buildwit_llb::digest_of(manifest).to_string(), uploaded))
    }

    /// The frontend images in the local store: reference (empty if only known by
    /// digest), manifest digest, and what it holds.
    pub fn list_frontends(&self) -> Vec<(String, String, wasm_images::ImageRecord)> {
        self.frontends.images.list()
    }

    /// Forget a frontend image; returns the components deleted.
    pub fn remove_frontend(&self, what: &str) -> Result<Vec<String>, DaemonError> {
        self.frontends.images.remove(what)
    }
}

impl Engine {
    /// One build: the frontend, the solve, the exports.
    fn run_build(
        &self,
        request: BuildRequest,
        events: Arc<dyn EventSink>,
        id: &str,
    ) -> Result<BuildOutcome, DaemonError> {
        let started = Instant::now();
        let started_on = std::time::SystemTime::now();
        let provenance = provenance::Wanted::from_options(&request.options)?;
        let options = request.options.clone();
        // `SOURCE_DATE_EPOCH` reaches every exporter that was not given a time of its own,
        // as BuildKit's controller passes it on.
        let epoch_arg = options
            .iter()
            .find(|(k, _)| k == "build-arg:SOURCE_DATE_EPOCH")
            .and_then(|(_, v)| v.parse::<i64>().ok());
        let inline_wanted = request.solve && inline_cache_wanted(&request);
        let session = Arc::new(Session {
            locals: request.locals.clone(),
            secrets: request.secrets,
            ssh: request.ssh,
            oci_layouts: request.oci_layouts,
            sync: request.client.sync.clone(),
            cancelled: request.client.cancelled.clone(),
            registry: request.client.registry.clone(),
        });
        // The platforms the build targets (an inline cache in a multi-platform image is per
        // platform).
        let platforms: Vec<_> = request
            .options
            .iter()
            .find(|(k, _)| k == "platform")
            .map_or("", |(_, v)| v.as_str())
            .split(',')
            .map(parse_platform)
            .collect();
        let (frontend, out) = match request.prepared {
            Some(out) => (FrontendRecord::client(&request.frontend), out),
            None => {
                let selected =
                    self.select(&request.frontend, &request.options, &session.registry)?;
                let bridge = Arc::new(
                    LocalBridge::new(session.clone(), events.clone(), self.frontends.clone())
                        .deadline(request.frontend_timeout),
                );
                bridge.warn_all(&selected);
                let frontend = self.record(&selected, bridge.clone())?;
                let out = bridge
                    .run(&selected.served, request.options, Vec::new())
                    .map_err(|e| bridge.name_failure(e))?;
                (frontend, out)
            }
        };
        let frontend_time = started.elapsed();
        let definition = out.reference.map(|r| (*r.definition).clone());
        let solve_started = Instant::now();
        let io = BuildIo {
            rt: &self.frontends.io,
            cancelled: &request.client.cancelled,
        };
        if request.solve && (definition.is_some() || !out.refs.is_empty()) {
            self.import_caches(
                &request.cache_from,
                events.as_ref(),
                io,
                &request.client,
                &platforms,
            )?;
        }
        // A platform's value of a metadata key, else the one value (as BuildKit reads
        // the keys).
        let meta_of = |key: &str, suffix: &str| {
            let find = |key: &str| {
                out.metadata
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            };
            find(&format!("{key}{suffix}")).or_else(|| find(key))
        };
        // What to export: one result, or one per platform in the frontend's order (a
        // platform listed without a reference is scratch).
        let mut results = Vec::new();
        let mut solved = Vec::new();
        let mut graphs = Vec::new();
        if request.solve {
            let targets = match &definition {
                Some(def) => vec![(String::new(), Some(def))],
                None if out.refs.is_empty() => vec![(String::new(), None)],
                None => result_platforms(&out.metadata, &out.refs)?
                    .into_iter()
                    .map(|id| {
                        let def = out
                            .refs
                            .iter()
                            .find(|(k, _)| *k == id)
                            .map(|(_, r)| &*r.definition);
                        (id, def)
                    })
                    .collect(),
            };
            let definitions: Vec<&pb::Definition> = targets.iter().filter_map(|t| t.1).collect();
            let mut solves = self
                .solve_all(
                    &definitions,
                    session.clone(),
                    &request.allow,
                    events.clone(),
                )?
                .into_iter();
            for (platform, def) in targets {
                let (result, keys) = match def {
                    Some(_) => solves.next().expect("a result per definition"),
                    None => (None, Default::default()),
                };
                let suffix = if platform.is_empty() {
                    String::new()
                } else {
                    format!("/{platform}")
                };
                let epoch = meta_of("source.date.epoch", &suffix)
                    .map(|v| export::parse_epoch(&v))
                    .transpose()?
                    .flatten();
                results.push(export::PlatformResult {
                    config: meta_of("containerimage.config", &suffix),
                    base_config: meta_of("containerimage.base.config", &suffix),
                    epoch,
                    platform,
                    result,
                });
                solved.push(keys);
                graphs.push(def);
            }
        }
        // Provenance per platform, as BuildKit makes it: that platform's sources and LLB.
        let finished_on = std::time::SystemTime::now();
        let mut attestations = Vec::new();
        if let Some(wanted) = &provenance {
            for (keys, graph) in solved.iter().zip(&graphs) {
                attestations.push(vec![provenance::statement(
                    wanted,
                    &provenance::Facts {
                        frontend: &frontend_name(&request.frontend),
                        record: &frontend,
                        options: &options,
                        locals: request.locals.keys().map(String::as_str).collect(),
                        materials: &keys.materials,
                        definition: *graph,
                        invocation_id: id,
                        started: started_on,
                        finished: finished_on,
                    },
                )?]);
            }
        }
        // An inline cache describes one image's layers: each platform's image has its own.
        let inline = match inline_wanted {
            true => self.inline_caches(&request.outputs, &solved, events.as_ref())?,
            false => Vec::new(),
        };
        // A cancelled build exports nothing: no partial results.
        io.check()?;
        let mut exported = Vec::new();
        // Asking the frontend (`--call`, `--dump-llb`) exports nothing.
        let outputs = if request.solve {
            request.outputs.as_slice()
        } else {
            &[]
        };
        for output in outputs {
            let solver = self.solver()?;
            let mut output = output.clone();
            output.source_date_epoch = output.source_date_epoch.or(epoch_arg);
            let output = &output;
            exported.push(export::export(
                solver.worker(),
                &self
                    .frontends
                    .registries
                    .with_access(&request.client.registry),
                io,
                output,
                &results,
                export::Extras {
                    inline_caches: &inline,
                    attestations: &attestations,
                },
            )?);
        }
        if request.solve {
            self.export_caches(
                &request.cache_to,
                &solved,
                events.as_ref(),
                io,
                &request.client,
            )?;
        }
        if request.solve {
            self.gc_after_build();
        }
        Ok(BuildOutcome {
            frontend,
            definition,
            platforms: out
                .refs
                .into_iter()
                .map(|(k, r)| (k, (*r.definition).clone()))
                .collect(),
            metadata: out.metadata,
            frontend_time,
            result: results.into_iter().next().and_then(|r| r.result),
            solve_time: solve_started.elapsed(),
            exported,
            build_id: String::new(),
        })
    }

    /// The records of the inline cache a build asks for, per result: the min-mode records,
    /// whose layers are all the image's.
    fn inline_caches(
        &self,
        outputs: &[OutputSpec],
        solved: &[buildwit_solver::SolvedKeys],
        events: &dyn EventSink,
    ) -> Result<Vec<Vec<buildwit_exporter::cache::CacheEntry>>, DaemonError> {
        use buildwit_exporter::cache::CacheMode;
        if !outputs.iter().any(|o| o.kind.is_image()) {
            warn(
                events,
                "an inline cache goes in an image: add an image output (--output type=image|oci|docker or -t NAME)".into(),
            );
            return Ok(Vec::new());
        }
        let solver = self.solver()?;
        solved
            .iter()
            .map(|keys| cache_io::entries(&solver, CacheMode::Min, std::slice::from_ref(keys)))
            .collect::<Result<_, _>>()
            .map_err(|e| DaemonError::Export(format!("exporting inline cache: {e}")))
    }

    /// The build history.
    pub fn history(&self) -> history::History {
        let (max_age, max_entries) = self.frontends.config.history_limits();
        history::History::new(self.frontends.root.join("history"), max_age, max_entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_read_as_containerd_reads_them() {
        let host = buildwit_exporter::host_architecture();
        let p = |s: &str| parse_platform(s);
        let t = |os: &str, arch: &str, variant: &str| {
            (os.to_string(), arch.to_string(), variant.to_string())
        };
        assert_eq!(p(""), t("linux", host, ""));
        assert_eq!(p("local"), t("linux", host, ""));
        assert_eq!(p("linux"), t("linux", host, ""));
        assert_eq!(p("arm64"), t("linux", "arm64", ""));
        assert_eq!(p("linux/arm/v7"), t("linux", "arm", "v7"));
        assert_eq!(p("windows/amd64"), t("windows", "amd64", ""));
    }
}
