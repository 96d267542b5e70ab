//! The wasmtime runtime: one engine, compiled components cached on disk by digest, one
//! short-lived store per build with a deadline, a memory cap and an output budget.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap};

use crate::bridge::{Bridge, FrontendOutput};
use crate::error::{FrontendError, Limit};
use crate::host::v0_1::{Frontend as FrontendV0_1, FrontendPre as FrontendPreV0_1};
use crate::host::{self, HostState, MemoryLimiter, OutputLimitExceeded};

/// How often the epoch advances; deadlines are counted in these ticks.
const TICK: Duration = Duration::from_millis(10);

/// WIT packages this host implements, as `name@major.minor` prefixes of import names.
pub const SUPPORTED_WIT: &[&str] = &["buildwit:frontend@0.1"];

/// Limits on every frontend run.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Wall time of one run (epoch interruption).
    pub deadline: Duration,
    /// Linear memory of the frontend.
    pub memory: usize,
    /// Wasm stack (engine-wide: fixed when the runtime is created).
    pub stack: usize,
    /// Bytes the frontend may hand to the host in one run: definitions, metadata, logs.
    pub output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(60),
            memory: 512 << 20,
            stack: 512 << 10,
            output: 64 << 20,
        }
    }
}

/// A loaded frontend component, ready to instantiate.
pub struct LoadedFrontend {
    /// A name for messages: a file name or an image reference.
    pub label: String,
    /// `sha256:…` of the component bytes.
    pub digest: String,
    /// The WIT version it targets, such as `buildwit:frontend@0.1.0`.
    pub wit_version: String,
    /// Its imports.
    pub imports: Vec<String>,
    /// Its exports.
    pub exports: Vec<String>,
    /// Component size in bytes.
    pub size: usize,
    /// Whether it was compiled now (false: loaded from the on-disk cache).
    pub compiled: bool,
    pre: FrontendPreV0_1<HostState>,
    /// What its `info` said, asked once: every build records it.
    info: std::sync::OnceLock<FrontendInfo>,
}

impl std::fmt::Debug for LoadedFrontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedFrontend")
            .field("label", &self.label)
            .field("digest", &self.digest)
            .field("wit_version", &self.wit_version)
            .finish()
    }
}

/// Name, version and channel a frontend reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendInfo {
    /// Such as `dockerfile`.
    pub name: String,
    /// Semver.
    pub version: String,
    /// `stable`, `labs`, ...
    pub channel: String,
}

/// Runs frontend components.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    /// `linker` and WASI 0.2, for components that import WASI.
    wasi_linker: Linker<HostState>,
    limits: Limits,
    cache_dir: Option<PathBuf>,
    loaded: Mutex<HashMap<String, Arc<LoadedFrontend>>>,
}

impl Runtime {
    /// A runtime with these limits; compiled components are cached under `cache_dir`.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Self, FrontendError> {
        let mut config = crate::engine::config();
        config.max_wasm_stack(limits.stack);
        let engine = Engine::new(&config).map_err(|e| FrontendError::Engine(e.to_string()))?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("buildwit-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| FrontendError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        FrontendV0_1::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| FrontendError::Engine(e.to_string()))?;
        let mut wasi_linker = linker.clone();
        crate::wasi::add_to_linker(&mut wasi_linker)
            .map_err(|e| FrontendError::Engine(e.to_string()))?;
        Ok(Runtime {
            engine,
            linker,
            wasi_linker,
            limits,
            cache_dir,
            loaded: Mutex::new(HashMap::new()),
        })
    }

    /// The limits of every run.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Load a frontend from a file: a component, or a core module built against the SDK
    /// ([`crate::component_of`]).
    pub fn load_file(&self, path: &Path) -> Result<Arc<LoadedFrontend>, FrontendError> {
        let label = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| FrontendError::Load {
            frontend: label.clone(),
            reason: format!("cannot read it: {e}"),
        })?;
        self.load(&label, &bytes)
    }

    /// Check a component (or a core module, wrapped first) against the contract, compile it
    /// (or load the compiled artifact from the cache) and prepare it for instantiation.
    /// Loading the same bytes again is a map lookup.
    pub fn load(&self, label: &str, bytes: &[u8]) -> Result<Arc<LoadedFrontend>, FrontendError> {
        let bytes = crate::component_of(bytes).map_err(|reason| FrontendError::Load {
            frontend: label.to_string(),
            reason,
        })?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        self.load_known(label, &bytes, &digest)
    }

    /// The frontend loaded earlier from the component with this digest.
    pub fn loaded(&self, digest: &str) -> Option<Arc<LoadedFrontend>> {
        self.loaded.lock().unwrap().get(digest).cloned()
    }

    /// [`Runtime::load`] for bytes whose digest the caller already knows (embedded
    /// components, the verified frontend store): hashing megabytes on every start is
    /// measurable. A wrong digest would only name the compiled-artifact cache wrongly.
    pub fn load_known(
        &self,
        label: &str,
        bytes: &[u8],
        digest: &str,
    ) -> Result<Arc<LoadedFrontend>, FrontendError> {
        self.load_with(label, bytes, digest, None)
    }

    /// [`Runtime::load_known`] for a component that comes with the artifact compiled for
    /// it when buildwit was built (the built-in frontends): used when it fits this engine,
    /// which wasmtime checks (its version, settings and the CPU's features); else the
    /// component is compiled as any other.
    pub fn load_builtin(
        &self,
        label: &str,
        bytes: &[u8],
        digest: &str,
        compiled: &[u8],
    ) -> Result<Arc<LoadedFrontend>, FrontendError> {
        self.load_with(label, bytes, digest, Some(compiled))
    }

    fn load_with(
        &self,
        label: &str,
        bytes: &[u8],
        digest: &str,
        precompiled: Option<&[u8]>,
    ) -> Result<Arc<LoadedFrontend>, FrontendError> {
        let digest = digest.to_string();
        if let Some(f) = self.loaded.lock().unwrap().get(&digest) {
            return Ok(f.clone());
        }
        let load_err = |reason: String| FrontendError::Load {
            frontend: label.to_string(),
            reason,
        };
        let shape = inspect(bytes).map_err(load_err)?;
        // SAFETY: a precompiled artifact is embedded in this binary by its own build
        // script, made by the same wasmtime from the component embedded beside it;
        // `deserialize` refuses one made for another engine.
        let ahead =
            precompiled.and_then(|a| unsafe { Component::deserialize(&self.engine, a) }.ok());
        let (component, compiled) = match ahead {
            Some(c) => (c, false),
            None => self.compile(&digest, bytes).map_err(load_err)?,
        };

        let linker = if shape.imports.iter().any(|i| i.starts_with("wasi:")) {
            &self.wasi_linker
        } else {
            &self.linker
        };
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| load_err(format!("it does not fit buildwit:frontend@0.1: {e}")))?;
        let pre = FrontendPreV0_1::new(instance_pre).map_err(|e| {
            load_err(format!(
                "it does not export buildwit:frontend/builder@0.1: {e}"
            ))
        })?;
        let loaded = Arc::new(LoadedFrontend {
            label: label.to_string(),
            digest: digest.clone(),
            wit_version: shape.wit_version,
            imports: shape.imports,
            exports: shape.exports,
            size: bytes.len(),
            compiled,
            pre,
            info: std::sync::OnceLock::new(),
        });
        self.loaded.lock().unwrap().insert(digest, loaded.clone());
        Ok(loaded)
    }

    /// Compile, or load the artifact an earlier compile left in the cache directory.
    fn compile(&self, digest: &str, bytes: &[u8]) -> Result<(Component, bool), String> {
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, bytes)
                .map(|c| (c, true))
                .map_err(|e| format!("it does not compile: {e:#}"));
        };
        let mut compat = Sha256::new();
        std::hash::Hash::hash(
            &self.engine.precompile_compatibility_hash(),
            &mut HashWriter(&mut compat),
        );
        let key = format!(
            "{}-{}",
            &digest["sha256:".len()..],
            &hex::encode(compat.finalize())[..16]
        );
        let path = dir.join(format!("{key}.cwasm"));
        if path.exists() {
            // SAFETY: the file was written by this code (below), keyed by the engine's
            // compatibility hash, and replaced only by atomic renames, so it is a valid
            // artifact for this engine: under the daemon's own root, or packed into a
            // frontend image by `frontend push --container` (whose runner then runs in that
            // image's container, which its author controls anyway).
            if let Ok(c) = unsafe { Component::deserialize_file(&self.engine, &path) } {
                // Its time of last use, for the cache's GC (which may remove it any time).
                let _ = std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                return Ok((c, false));
            }
        }
        let artifact = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| format!("it does not compile: {e:#}"))?;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // Unique per writer, so concurrent compiles of one component never share a file.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!("{key}.{}-{n}.tmp", std::process::id()));
        std::fs::write(&tmp, &artifact)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                format!("cannot write {}: {e}", path.display())
            })?;
        // SAFETY: as above; we just wrote it.
        let c = unsafe { Component::deserialize_file(&self.engine, &path) }
            .map_err(|e| e.to_string())?;
        Ok((c, true))
    }

    /// Ask a frontend who it is (once per loaded component; later calls are answered from
    /// the first).
    pub fn info(
        &self,
        frontend: &LoadedFrontend,
        bridge: Arc<dyn Bridge>,
    ) -> Result<FrontendInfo, FrontendError> {
        if let Some(info) = frontend.info.get() {
            return Ok(info.clone());
        }
        let mut store = self.store(frontend, bridge, Vec::new(), Vec::new(), None);
        let instance = frontend
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.trap(frontend, &store, e))?;
        let info = instance.buildwit_frontend_builder().call_info(&mut store);
        forward_output(&store);
        let info = info.map_err(|e| self.trap(frontend, &store, e))?;
        let info = FrontendInfo {
            name: info.name,
            version: info.version,
            channel: info.channel,
        };
        Ok(frontend.info.get_or_init(|| info).clone())
    }

    /// Run a frontend's `build` with these options and inputs, within `deadline` (the
    /// runtime's when `None`).
    pub fn run(
        &self,
        frontend: &LoadedFrontend,
        options: Vec<(String, String)>,
        inputs: Vec<(String, buildwit_llb::pb::Definition)>,
        bridge: Arc<dyn Bridge>,
        deadline: Option<Duration>,
    ) -> Result<FrontendOutput, FrontendError> {
        let mut store = self.store(frontend, bridge, options, inputs, deadline);
        let started = Instant::now();
        let instance = frontend
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.trap(frontend, &store, e))?;
        let result = instance.buildwit_frontend_builder().call_build(&mut store);
        forward_output(&store);
        let result = result.map_err(|e| self.trap(frontend, &store, e))?;
        tracing::debug!(frontend = %frontend.label, elapsed = ?started.elapsed(), "frontend returned");
        let result = result.map_err(|e| FrontendError::Build {
            frontend: frontend.label.clone(),
            error: host::from_wit_error(e),
        })?;
        let metadata_size: usize = result.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        store
            .data_mut()
            .charge(metadata_size)
            .map_err(|e| self.trap(frontend, &store, e))?;
        let table = &mut store.data_mut().table;
        let take = |table: &mut ResourceTable, r| {
            table.delete(r).map_err(|e| FrontendError::Output {
                frontend: frontend.label.clone(),
                reason: format!("it returned an invalid reference: {e}"),
            })
        };
        let reference = match result.ref_ {
            Some(r) => Some(take(table, r)?),
            None => None,
        };
        let mut refs = Vec::with_capacity(result.refs.len());
        for (k, r) in result.refs {
            refs.push((k, take(table, r)?));
        }
        Ok(FrontendOutput {
            reference,
            refs,
            metadata: result.metadata,
        })
    }

    fn store(
        &self,
        frontend: &LoadedFrontend,
        bridge: Arc<dyn Bridge>,
        options: Vec<(String, String)>,
        inputs: Vec<(String, buildwit_llb::pb::Definition)>,
        deadline: Option<Duration>,
    ) -> Store<HostState> {
        let deadline = deadline.unwrap_or(self.limits.deadline);
        let limits = MemoryLimiter {
            inner: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory)
                .table_elements(1 << 20)
                .instances(16)
                .tables(16)
                .memories(4)
                .trap_on_grow_failure(true)
                .build(),
            max: self.limits.memory,
            hit: false,
        };
        let mut store = Store::new(
            &self.engine,
            HostState {
                table: ResourceTable::new(),
                limits,
                bridge,
                frontend: frontend.label.clone(),
                options,
                inputs,
                output_used: 0,
                output_limit: self.limits.output,
                deadline,
                panic: None,
                wasi: crate::wasi::Wasi::new(),
            },
        );
        store.limiter(|s| &mut s.limits);
        let ticks = deadline.as_millis().div_ceil(TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store
    }

    /// Explain why a call failed, naming the frontend and the limit it hit.
    fn trap(
        &self,
        frontend: &LoadedFrontend,
        store: &Store<HostState>,
        error: wasmtime::Error,
    ) -> FrontendError {
        let name = frontend.label.clone();
        let state = store.data();
        if let Some(e) = error.downcast_ref::<OutputLimitExceeded>() {
            return FrontendError::LimitExceeded {
                frontend: name,
                limit: Limit::Output(self.limits.output),
                detail: e.to_string(),
            };
        }
        if state.limits.hit {
            return FrontendError::LimitExceeded {
                frontend: name,
                limit: Limit::Memory(self.limits.memory),
                detail: format!("{error:#}"),
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => FrontendError::LimitExceeded {
                frontend: name,
                limit: Limit::Deadline(state.deadline),
                detail: "interrupted".into(),
            },
            Some(Trap::StackOverflow) => FrontendError::LimitExceeded {
                frontend: name,
                limit: Limit::Stack(self.limits.stack),
                detail: "wasm stack overflow".into(),
            },
            // The trap itself, without the (possibly very long) Wasm backtrace.
            Some(trap) => FrontendError::Trap {
                frontend: name,
                panic: state.panic.clone().or_else(|| state.wasi.last_words()),
                detail: trap.to_string(),
            },
            None => FrontendError::Trap {
                frontend: name,
                panic: state.panic.clone().or_else(|| state.wasi.last_words()),
                detail: error.root_cause().to_string(),
            },
        }
    }
}

/// What a frontend wrote to stdout and stderr, as lines of the build's log.
fn forward_output(store: &Store<HostState>) {
    let state = store.data();
    let (stdout, stderr) = state.wasi.output();
    for (text, level) in [
        (stdout, crate::bridge::LogLevel::Info),
        (stderr, crate::bridge::LogLevel::Warn),
    ] {
        // A line an event: at most this many, then a count of the rest.
        const MAX_LINES: usize = 10_000;
        let lines: Vec<&str> = text.lines().collect();
        let mut messages: Vec<String> = lines
            .iter()
            .take(MAX_LINES)
            .map(|l| l.to_string())
            .collect();
        if lines.len() > MAX_LINES {
            messages.push(format!(
                "({} more lines not shown)",
                lines.len() - MAX_LINES
            ));
        }
        for message in messages {
            state.bridge.event(crate::bridge::Event::Log {
                frontend: state.frontend.clone(),
                level,
                message,
            });
        }
    }
}

/// What a component's binary says about it, read before compiling.
struct Shape {
    wit_version: String,
    imports: Vec<String>,
    exports: Vec<String>,
}

/// Check that the bytes are a component of a supported WIT version that imports nothing
/// but the gateway (and inert WASI), without compiling it.
fn inspect(bytes: &[u8]) -> Result<Shape, String> {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("it is not a valid Wasm binary: {e}"))? {
            wasmparser::Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != wasmparser::Encoding::Component {
                    return Err("it is a core Wasm module, not a component; wrap it with `wasm-tools component new`".into());
                }
                depth += 1;
            }
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(s) if depth == 1 => {
                for import in s {
                    let import = import.map_err(|e| e.to_string())?;
                    imports.push(import.name.name.to_string());
                }
            }
            wasmparser::Payload::ComponentExportSection(s) if depth == 1 => {
                for export in s {
                    let export = export.map_err(|e| e.to_string())?;
                    exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    let ours = |name: &str| name.starts_with("buildwit:frontend/");
    let version_of = |name: &str| name.split_once('@').map(|(_, v)| v.to_string());
    let builder = exports
        .iter()
        .find(|e| e.starts_with("buildwit:frontend/builder@"))
        .ok_or_else(|| {
            format!(
                "it does not export buildwit:frontend/builder (its exports: {}); build it with buildwit-sdk",
                list(&exports)
            )
        })?;
    let version = version_of(builder).unwrap_or_default();
    if !SUPPORTED_WIT
        .iter()
        .any(|s| format!("buildwit:frontend@{version}").starts_with(&format!("{s}.")))
    {
        return Err(format!(
            "it targets buildwit:frontend@{version}; this buildwit supports {}",
            SUPPORTED_WIT.join(", ")
        ));
    }
    for import in &imports {
        if ours(import) {
            if version_of(import).as_deref() != Some(version.as_str()) {
                return Err(format!(
                    "it mixes WIT versions: imports {import} but exports {builder}"
                ));
            }
        } else if !crate::wasi::provides(import) {
            return Err(format!(
                "it imports {import}, which buildwit does not provide: a frontend gets files, \
                 images and network only through buildwit:frontend/gateway (of WASI, only \
                 0.2's cli, clocks, filesystem, io, random and sockets, which give it nothing \
                 of the host)"
            ));
        }
    }
    Ok(Shape {
        wit_version: format!("buildwit:frontend@{version}"),
        imports,
        exports,
    })
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Feeds `Hash` output into a SHA-256 so the engine's compatibility hash becomes a stable
/// file-name component.
struct HashWriter<'a>(&'a mut Sha256);

impl std::hash::Hasher for HashWriter<'_> {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
