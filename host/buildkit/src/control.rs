//! `moby.buildkit.v1.Control`: builds, their progress, the session tunnel, workers and the
//! build cache, over buildwit's engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use buildwit_engine::{
    BuildApi, BuildRequest, ClientLink, DaemonError, Engine, Exported, FrontendOutput, FrontendRef,
    SolvedRef,
};
use buildwit_exporter::cache::{CacheSpec, cache_from_attrs};
use buildwit_exporter::{Destination, OutputKind, OutputSpec, output_from_attrs};
use buildwit_llb::pb;
use futures_util::Stream;
use prost::Message;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::content::ClientStore;
use crate::filesync::{self, SessionSync};
use crate::jobs::Job;
use crate::progress::JobEvents;
use crate::proto::moby::buildkit::secrets::v1::GetSecretRequest;
use crate::proto::moby::buildkit::secrets::v1::secrets_client::SecretsClient;
use crate::proto::moby::buildkit::v1::control_server::{Control, ControlServer};
use crate::proto::moby::buildkit::v1::frontend::llb_bridge_server::LlbBridgeServer;
use crate::proto::moby::buildkit::v1::types::{BuildkitVersion, GcPolicy, WorkerRecord};
use crate::proto::moby::buildkit::v1::{
    BytesMessage, CacheOptionsEntry, DiskUsageRequest, DiskUsageResponse, Exporter, InfoRequest,
    InfoResponse, ListWorkersRequest, ListWorkersResponse, PruneRequest, SolveRequest,
    SolveResponse, StatusRequest, StatusResponse, UsageRecord,
};
use crate::ssh::Agents;
use crate::tunnel::{self, ClientSession, Waitable};

/// BuildKit's API over one engine. Clone it per listener.
#[derive(Clone)]
pub struct Buildkit {
    pub(crate) engine: Arc<Engine>,
    sessions: Arc<Waitable<ClientSession>>,
    pub(crate) jobs: Arc<Waitable<Job>>,
    /// Client mirrors some build holds.
    mirrors: Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>>,
    /// Whether the connection is private (a unix socket, TLS): secrets may travel.
    secure: bool,
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn unknown(e: DaemonError) -> Status {
    Status::unknown(e.to_string())
}

/// Run an engine call off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DaemonError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(unknown)
}

impl Buildkit {
    /// The API over `engine`; connections are private unless [`Buildkit::secure`] says not.
    pub fn new(engine: Arc<Engine>) -> Self {
        Buildkit {
            engine,
            sessions: Arc::default(),
            jobs: Arc::default(),
            mirrors: Arc::default(),
            secure: true,
        }
    }

    /// The same API for a listener that is (or is not) private.
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The `Control` service.
    pub fn control(&self) -> ControlServer<Self> {
        ControlServer::new(self.clone())
            .max_decoding_message_size(crate::MAX_MESSAGE)
            .max_encoding_message_size(crate::MAX_MESSAGE)
    }

    /// The `LLBBridge` service.
    pub fn bridge(&self) -> LlbBridgeServer<Self> {
        LlbBridgeServer::new(self.clone())
            .max_decoding_message_size(crate::MAX_MESSAGE)
            .max_encoding_message_size(crate::MAX_MESSAGE)
    }

    /// The one worker: this host's platforms (native first), labels and GC policy.
    pub(crate) async fn workers(&self) -> Result<Vec<WorkerRecord>, Status> {
        let engine = self.engine.clone();
        let info = blocking(move || engine.info()).await?;
        let platforms = info
            .platforms
            .iter()
            .map(|p| {
                let mut parts = p.split('/');
                pb::Platform {
                    os: parts.next().unwrap_or_default().to_string(),
                    architecture: parts.next().unwrap_or_default().to_string(),
                    variant: parts.next().unwrap_or_default().to_string(),
                    ..Default::default()
                }
            })
            .collect();
        let mut labels = info.labels;
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            labels.insert(
                "org.mobyproject.buildkit.worker.hostname".into(),
                host.trim().to_string(),
            );
        }
        Ok(vec![WorkerRecord {
            id: "buildwit".into(),
            labels: labels.into_iter().collect(),
            platforms,
            gc_policy: info
                .gc_policy
                .iter()
                .map(|r| GcPolicy {
                    all: r.all,
                    keep_duration: r.keep_duration.as_nanos() as i64,
                    reserved_space: r.reserved_space,
                    filters: r.filters.clone(),
                    max_used_space: r.max_used_space,
                    min_free_space: r.min_free_space,
                })
                .collect(),
            buildkit_version: Some(version()),
        }])
    }

    /// Where a build's file outputs wait before they go to the client.
    fn scratch(&self, build: &str) -> PathBuf {
        self.engine
            .root()
            .join("buildkit-outputs")
            .join(crate::synthetic_digest(build).trim_start_matches("sha256:"))
    }
}

fn version() -> BuildkitVersion {
    BuildkitVersion {
        package: "buildwit".into(),
        version: format!("v{}", env!("CARGO_PKG_VERSION")),
        revision: String::new(),
    }
}

fn timestamp(unix_seconds: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: unix_seconds as i64,
        nanos: 0,
    }
}

fn usage_record(r: buildwit_solver::UsageRecord) -> UsageRecord {
    UsageRecord {
        id: r.id,
        mutable: r.mutable,
        in_use: r.in_use,
        size: r.size as i64,
        created_at: Some(timestamp(r.created)),
        last_used_at: r.last_used.map(timestamp),
        usage_count: r.usage_count as i64,
        description: r.description,
        record_type: r.record_type,
        shared: r.shared,
        parents: Vec::new(),
    }
}

/// A cache entry of the request. A `type=local` cache is the client's layout: buildwitd
/// works on one under `scratch` instead.
fn cache_spec(
    entry: &CacheOptionsEntry,
    export: bool,
    scratch: &Path,
) -> Result<CacheSpec, Status> {
    let local = entry.r#type == "local";
    let mut attrs: Vec<(String, String)> = entry
        .attrs
        .iter()
        // The client's own: where its layout is, which tag and digest it holds.
        .filter(|(k, _)| !(local && matches!(k.as_str(), "dest" | "src" | "tag" | "digest")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if local {
        let key = if export { "dest" } else { "src" };
        attrs.push((key.into(), scratch.display().to_string()));
    }
    cache_from_attrs(&entry.r#type, &attrs, export)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The client's layout of a `type=local` cache, as the session names its store.
fn local_store(entry: &CacheOptionsEntry, export: bool) -> Option<String> {
    let key = if export { "dest" } else { "src" };
    (entry.r#type == "local").then(|| format!("local:{}", entry.attrs.get(key).map_or("", |v| v)))
}

/// The outputs of a request: `Exporters`, or the deprecated first one (clients send both).
fn exporters(req: &SolveRequest) -> Vec<Exporter> {
    if !req.exporters.is_empty() {
        return req.exporters.clone();
    }
    if req.exporter_deprecated.is_empty() {
        return Vec::new();
    }
    vec![Exporter {
        r#type: req.exporter_deprecated.clone(),
        attrs: req.exporter_attrs_deprecated.clone(),
    }]
}

/// A `Control/Solve` request, checked, with every path it writes placed under the build's
/// `scratch` directory. Made before a session, the engine or the disk is touched.
#[doc(hidden)]
#[derive(Debug)]
pub struct SolvePlan {
    /// One per exporter, in the request's order.
    pub outputs: Vec<OutputSpec>,
    pub cache_to: Vec<CacheSpec>,
    /// The local caches among them, for the client's store once built: the store's name
    /// and the layout under `scratch`.
    pub cache_sends: Vec<(String, PathBuf)>,
    pub cache_from: Vec<CacheImport>,
    /// The frontend's inputs, by name.
    pub inputs: BTreeMap<String, pb::Definition>,
    /// Raw LLB to build, when the request carries that instead of a frontend.
    pub definition: Option<pb::Definition>,
    pub options: Vec<(String, String)>,
    /// For the build's progress, once it has one.
    pub warnings: Vec<String>,
}

/// A cache to import, and for a local one what to fetch from the client first.
#[doc(hidden)]
#[derive(Debug)]
pub struct CacheImport {
    pub spec: CacheSpec,
    pub client: Option<ClientCache>,
}

/// A local cache the client holds: its store, the manifest it names, where it goes.
#[doc(hidden)]
#[derive(Debug)]
pub struct ClientCache {
    pub store: String,
    pub digest: String,
    pub layout: PathBuf,
}

/// Check `req` and place what it writes under `scratch` (see [`SolvePlan`]).
#[doc(hidden)]
pub fn plan_solve(req: &SolveRequest, scratch: &Path) -> Result<SolvePlan, Status> {
    if req.r#ref.is_empty() {
        return Err(Status::invalid_argument("the build has no Ref"));
    }
    if ![0, 10, 20, 30].contains(&req.compatibility_version) {
        return Err(Status::invalid_argument(format!(
            "unsupported compatibility version {}",
            req.compatibility_version
        )));
    }
    let definition = crate::bridge::definition(&req.definition)?;
    if definition.is_some() && !req.frontend.is_empty() {
        return Err(Status::invalid_argument(
            "cannot solve with both Definition and Frontend specified",
        ));
    }
    let outputs = exporters(req)
        .iter()
        .enumerate()
        .map(|(i, e)| output(e, &scratch.join(i.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let cache = req.cache.clone().unwrap_or_default();
    let (mut cache_to, mut cache_sends) = (Vec::new(), Vec::new());
    for (i, e) in cache.exports.iter().enumerate() {
        let layout = scratch.join(format!("cache-to-{i}"));
        cache_to.push(cache_spec(e, true, &layout)?);
        if let Some(store) = local_store(e, true) {
            cache_sends.push((store, layout));
        }
    }
    let mut cache_from = Vec::new();
    for (i, e) in cache.imports.iter().enumerate() {
        let layout = scratch.join(format!("cache-from-{i}"));
        let client = match local_store(e, false) {
            // The client names the manifest it holds; without one it has none to give.
            Some(store) => match e.attrs.get("digest") {
                Some(digest) => Some(ClientCache {
                    store,
                    digest: digest.clone(),
                    layout: layout.clone(),
                }),
                None => continue,
            },
            None => None,
        };
        let spec = cache_spec(e, false, &layout)?;
        cache_from.push(CacheImport { spec, client });
    }
    let mut inputs = BTreeMap::new();
    for (name, bytes) in &req.frontend_inputs {
        if let Some(def) = crate::bridge::definition(bytes)? {
            inputs.insert(name.clone(), def);
        }
    }
    let options: Vec<(String, String)> = req.frontend_attrs.clone().into_iter().collect();
    // Provenance is made; other attestations (buildx's `--sbom`) are not yet.
    let warnings = options
        .iter()
        .filter_map(|(k, v)| {
            let kind = k.strip_prefix("attest:")?;
            (kind != "provenance" && !v.split(',').any(|f| f == "disabled=true")).then(|| {
                format!("{k}: buildwitd does not make {kind} attestations yet; the result has none")
            })
        })
        .collect();
    Ok(SolvePlan {
        outputs,
        cache_to,
        cache_sends,
        cache_from,
        inputs,
        definition,
        options,
        warnings,
    })
}

/// An exporter as an engine output; a file or directory output is written under
/// `scratch` first, then sent to the client.
fn output(exporter: &Exporter, scratch: &Path) -> Result<OutputSpec, Status> {
    let mut attrs: Vec<(String, String)> = exporter
        .attrs
        .iter()
        .filter(|(k, _)| k.as_str() != "dest")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let kind = exporter.r#type.as_str();
    if matches!(kind, "local" | "tar" | "oci" | "docker") {
        attrs.push(("dest".into(), scratch.display().to_string()));
    }
    output_from_attrs(kind, attrs)
        .map_err(|e| Status::invalid_argument(format!("exporter {kind}: {e}")))
}

/// The secret ids and SSH agent ids the steps of a result mount or read.
fn session_ids(out: &FrontendOutput) -> (Vec<String>, Vec<String>) {
    let (mut secrets, mut agents) = (Vec::new(), Vec::new());
    for r in out.reference.iter().chain(out.refs.iter().map(|(_, r)| r)) {
        for bytes in &r.definition.def {
            let Ok(op) = pb::Op::decode(bytes.as_slice()) else {
                continue;
            };
            let Some(pb::op::Op::Exec(exec)) = op.op else {
                continue;
            };
            for m in &exec.mounts {
                if let Some(s) = &m.secret_opt {
                    secrets.push(s.id.clone());
                }
                if let Some(s) = &m.ssh_opt {
                    agents.push(if s.id.is_empty() {
                        "default".into()
                    } else {
                        s.id.clone()
                    });
                }
            }
            secrets.extend(exec.secretenv.iter().map(|s| s.id.clone()));
        }
    }
    for ids in [&mut secrets, &mut agents] {
        ids.sort();
        ids.dedup();
    }
    (secrets, agents)
}

/// Fetch the secrets the result uses from the client (one it does not have is left out:
/// the step that needs it says so, unless it is optional).
async fn fetch_secrets(
    session: &ClientSession,
    ids: Vec<String>,
    secure: bool,
) -> Result<BTreeMap<String, Vec<u8>>, Status> {
    let mut secrets = BTreeMap::new();
    if ids.is_empty() || !session.serves("/moby.buildkit.secrets.v1.Secrets/GetSecret") {
        return Ok(secrets);
    }
    if !secure {
        return Err(Status::failed_precondition(
            "secrets are only accepted over a unix socket or TLS",
        ));
    }
    let mut client =
        SecretsClient::new(session.channel.clone()).max_decoding_message_size(crate::MAX_MESSAGE);
    for id in ids {
        let request = GetSecretRequest {
            id: id.clone(),
            annotations: Default::default(),
        };
        match client.get_secret(request).await {
            Ok(r) => {
                secrets.insert(id, r.into_inner().data);
            }
            Err(e) if matches!(e.code(), tonic::Code::NotFound | tonic::Code::Unimplemented) => {}
            Err(e) => return Err(Status::unknown(format!("secret {id}: {}", e.message()))),
        }
    }
    Ok(secrets)
}

/// The exporter's answer on the wire: text as it is, a descriptor as base64 JSON.
fn exporter_response(e: &Exported) -> Vec<(String, String)> {
    use base64::Engine as _;
    e.response()
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                other => base64::engine::general_purpose::STANDARD.encode(other.to_string()),
            };
            (k.to_string(), text)
        })
        .collect()
}

/// Ends a build however `Solve` ends (returned, failed, or dropped when the client went
/// away): the build is cancelled if still running, its status stream ends, its scratch
/// files go.
struct Finish {
    jobs: Arc<Waitable<Job>>,
    id: String,
    job: Arc<Job>,
    events: Arc<JobEvents>,
    scratch: PathBuf,
    /// Dropped with the guard: the watch on the session stops.
    _ended: tokio::sync::oneshot::Sender<()>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.job.link.cancelled.store(true, Ordering::Relaxed);
        self.events.end_running();
        self.job.status.finish();
        self.jobs.remove(&self.id);
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

#[tonic::async_trait]
impl Control for Buildkit {
    type PruneStream = Stream_<UsageRecord>;
    type StatusStream = Stream_<StatusResponse>;
    type SessionStream = Stream_<BytesMessage>;

    async fn disk_usage(
        &self,
        request: Request<DiskUsageRequest>,
    ) -> Result<Response<DiskUsageResponse>, Status> {
        // buildx sends one empty filter for "everything".
        let filters: Vec<String> = request
            .into_inner()
            .filter
            .into_iter()
            .filter(|f| !f.is_empty())
            .collect();
        let engine = self.engine.clone();
        let records = blocking(move || engine.disk_usage(&filters)).await?;
        Ok(Response::new(DiskUsageResponse {
            record: records.into_iter().map(usage_record).collect(),
        }))
    }

    async fn prune(
        &self,
        request: Request<PruneRequest>,
    ) -> Result<Response<Self::PruneStream>, Status> {
        let r = request.into_inner();
        let rule = buildwit_config::PruneRule {
            all: r.all,
            filters: r.filter.into_iter().filter(|f| !f.is_empty()).collect(),
            keep_duration: Duration::from_nanos(r.keep_duration.max(0) as u64),
            reserved_space: r.reserved_space,
            max_used_space: r.max_used_space,
            min_free_space: r.min_free_space,
        };
        let engine = self.engine.clone();
        let report = blocking(move || engine.prune(&rule)).await?;
        let records: Vec<_> = report
            .records
            .into_iter()
            .map(|r| Ok(usage_record(r)))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(records))))
    }

    async fn solve(
        &self,
        request: Request<SolveRequest>,
    ) -> Result<Response<SolveResponse>, Status> {
        let req = request.into_inner();
        let scratch = self.scratch(&req.r#ref);
        let plan = plan_solve(&req, &scratch)?;
        // `<prefix>:<id>` names a session by its id.
        let session_id = req.session.rsplit(':').next().unwrap_or_default();
        let session = self
            .sessions
            .get(session_id, Duration::from_secs(5))
            .await
            .ok_or_else(|| Status::not_found(format!("no session {session_id:?}")))?;
        let sync = Arc::new(SessionSync::new(
            session.clone(),
            self.engine.root(),
            tokio::runtime::Handle::current(),
            self.mirrors.clone(),
        ));
        let link = ClientLink {
            name: Some(format!("buildkit session {}", session.id)),
            sync: Some(sync.clone()),
            registry: crate::auth::access(&session, self.secure),
            ..Default::default()
        };
        let (job, returned) = Job::new(link.clone(), plan.inputs);
        // The ref names the build's directory and job: a second build under it would write
        // into the first one's, and remove it when it ends.
        if !self.jobs.insert_new(&req.r#ref, job.clone()) {
            return Err(Status::already_exists(format!(
                "a build with ref {:?} is already running",
                req.r#ref
            )));
        }
        // A session that closes mid-build cancels the build (until the build ends).
        let (ended_tx, ended) = tokio::sync::oneshot::channel::<()>();
        {
            let (mut closed, cancelled) = (session.closed.clone(), link.cancelled.clone());
            tokio::spawn(async move {
                tokio::select! {
                    // An error: the session's end was dropped, which closes it too.
                    _ = closed.wait_for(|c| *c) => cancelled.store(true, Ordering::Relaxed),
                    _ = ended => {}
                }
            });
        }
        let events = JobEvents::new(job.clone());
        let _finish = Finish {
            jobs: self.jobs.clone(),
            id: req.r#ref.clone(),
            job: job.clone(),
            events: events.clone(),
            scratch: scratch.clone(),
            _ended: ended_tx,
        };
        std::fs::create_dir_all(&scratch)
            .map_err(|e| Status::internal(format!("{}: {e}", scratch.display())))?;
        // A local cache comes from the client's store first.
        let mut cache_from = Vec::new();
        for import in plan.cache_from {
            if let Some(client) = &import.client {
                let fetched = async {
                    ClientStore::new(&session, &client.store)?
                        .get_layout(&client.digest, &client.layout)
                        .await
                };
                if let Err(e) = fetched.await {
                    tracing::warn!("importing cache from {}: {e}", client.store);
                    continue;
                }
            }
            cache_from.push(import.spec);
        }
        for warning in plan.warnings {
            events.warn(warning);
        }
        let (outputs, cache_to, options) = (plan.outputs, plan.cache_to, plan.options);
        let (frontend, prepared) = match plan.definition {
            Some(def) => (
                "llb".to_string(),
                Some(FrontendOutput {
                    reference: Some(SolvedRef {
                        definition: Arc::new(def),
                    }),
                    ..Default::default()
                }),
            ),
            None if !req.frontend.is_empty() => (req.frontend.clone(), None),
            // The client runs the build function and returns the result through the bridge.
            None => {
                let out = returned
                    .await
                    .map_err(|_| Status::cancelled("the build ended without a result"))??;
                let frontend = job
                    .frontend
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                (frontend, Some(out))
            }
        };
        // An empty result with nowhere to go: buildx's probe of the daemon's caps.
        if let Some(out) = &prepared
            && out.reference.is_none()
            && out.refs.is_empty()
            && outputs.is_empty()
            && cache_to.is_empty()
        {
            return Ok(Response::new(SolveResponse::default()));
        }
        let (secret_ids, agent_ids) = prepared.as_ref().map(session_ids).unwrap_or_default();
        let secrets = fetch_secrets(&session, secret_ids, self.secure).await?;
        if !agent_ids.is_empty() && !self.secure {
            return Err(Status::failed_precondition(
                "SSH agents are only forwarded over a unix socket or TLS",
            ));
        }
        let agents = Agents::start(session.clone(), scratch.join("ssh"), &agent_ids)
            .await
            .map_err(|e| Status::internal(format!("forwarding SSH agents: {e}")))?;
        let request = BuildRequest {
            frontend: FrontendRef::Named(frontend),
            options,
            locals: BTreeMap::new(),
            secrets,
            ssh: agents.sockets.clone(),
            oci_layouts: BTreeMap::new(),
            allow: req.entitlements.clone(),
            solve: true,
            outputs: outputs.clone(),
            cache_to,
            cache_from,
            client: link,
            frontend_timeout: None,
            prepared,
        };
        let engine = self.engine.clone();
        let sink = events.clone();
        let outcome = blocking(move || engine.build(request, sink)).await?;
        // File outputs go to the client, each to the target of its exporter's index.
        let mut response = BTreeMap::new();
        for (i, (output, exported)) in outputs.iter().zip(&outcome.exported).enumerate() {
            let md = exporter_response(exported);
            response.extend(md.iter().cloned());
            let Some(Destination::Path(path)) = &output.dest else {
                continue;
            };
            // Named as BuildKit names its export steps.
            let name = match output.kind {
                OutputKind::Local => "exporting to client directory",
                OutputKind::Tar => "exporting to client tarball",
                OutputKind::Docker => "exporting to docker image format",
                _ => "exporting to oci image format",
            };
            let vertex = events.start(&format!("{}-export-{i}", req.r#ref), name);
            // A layout (`tar=false`) goes into the client's store; it writes the index.
            if output.kind.is_image() && !output.tar {
                let sent = async { ClientStore::new(&session, "export")?.put_layout(path).await };
                let sent = sent.await;
                events.complete(&vertex, sent.as_ref().err().map(|e| e.to_string()));
                sent.map_err(|e| {
                    Status::unknown(format!("sending output {i} to the client: {e}"))
                })?;
                continue;
            }
            let sent = match output.kind {
                OutputKind::Local => filesync::send_dir(&session, i, path).await,
                _ => filesync::send_file(&session, i, path, &md).await,
            };
            events.complete(&vertex, sent.as_ref().err().map(|e| e.to_string()));
            sent.map_err(|e| Status::unknown(format!("sending output {i} to the client: {e}")))?;
        }
        // A local cache goes into the client's store; the client tags the manifest.
        for (store, layout) in &plan.cache_sends {
            let sent = async {
                let n = ClientStore::new(&session, store)?
                    .put_layout(layout)
                    .await?;
                let index = std::fs::read(layout.join("index.json"))?;
                let index: serde_json::Value = serde_json::from_slice(&index)?;
                Ok::<_, std::io::Error>((n, index["manifests"][0].clone()))
            };
            let (n, manifest) = sent
                .await
                .map_err(|e| Status::unknown(format!("exporting cache to {store}: {e}")))?;
            tracing::debug!("cache to {store}: {n} blobs sent");
            response.insert("cache.manifest".to_string(), manifest.to_string());
        }
        Ok(Response::new(SolveResponse {
            exporter_response: response.into_iter().collect(),
        }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<Self::StatusStream>, Status> {
        let id = request.into_inner().r#ref;
        let job = self
            .jobs
            .get(&id, Duration::from_secs(6))
            .await
            .ok_or_else(|| Status::not_found(format!("no such job {id}")))?;
        let stream = UnboundedReceiverStream::new(job.status.subscribe()).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn session(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let out = tunnel::open(self.sessions.clone(), request).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn list_workers(
        &self,
        _request: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        Ok(Response::new(ListWorkersResponse {
            record: self.workers().await?,
        }))
    }

    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse {
            buildkit_version: Some(version()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use buildwit_exporter::cache::CacheTarget;

    use super::*;

    fn entry(kind: &str, attrs: &[(&str, &str)]) -> CacheOptionsEntry {
        CacheOptionsEntry {
            r#type: kind.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_local_cache_is_the_builds_own_directory_whatever_the_client_names() {
        let scratch = Path::new("/root/buildkit-outputs/abc/cache-to-0");
        let spec = cache_spec(&entry("local", &[("dest", "/etc")]), true, scratch).unwrap();
        assert_eq!(spec.target, CacheTarget::Local(scratch.into()));
    }

    #[test]
    fn a_cache_type_or_key_cannot_smuggle_in_another_type_or_path() {
        let scratch = Path::new("/root/buildkit-outputs/abc/cache-to-0");
        let smuggled = [
            entry("registry,type=local,dest=/tmp/pwned", &[]),
            entry("registry", &[("ref=x,type=local,dest=/tmp/pwned", "y")]),
            entry("registry", &[("ref", "x,type=local,dest=/tmp/pwned")]),
            entry(
                "registry",
                &[("ref", "x"), ("type", "local"), ("dest", "/tmp/pwned")],
            ),
        ];
        for e in smuggled {
            for export in [true, false] {
                match cache_spec(&e, export, scratch) {
                    Ok(spec) => assert!(
                        !matches!(spec.target, CacheTarget::Local(_)),
                        "{e:?} became {:?}",
                        spec.target
                    ),
                    Err(status) => assert_eq!(status.code(), tonic::Code::InvalidArgument),
                }
            }
        }
    }

    #[test]
    fn a_plan_writes_every_output_and_cache_under_the_builds_scratch() {
        let scratch = Path::new("/root/buildkit-outputs/abc");
        let attrs = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let req = SolveRequest {
            r#ref: "build-1".into(),
            frontend: "dockerfile.v0".into(),
            exporters: vec![
                Exporter {
                    r#type: "local".into(),
                    attrs: attrs(&[("dest", "/etc")]),
                },
                Exporter {
                    r#type: "oci".into(),
                    attrs: attrs(&[("dest", "/tmp/x.tar")]),
                },
            ],
            cache: Some(crate::proto::moby::buildkit::v1::CacheOptions {
                exports: vec![entry("local", &[("dest", "/var/cache")])],
                imports: vec![
                    entry("local", &[("src", "/var/cache"), ("digest", "sha256:ab")]),
                    entry("local", &[("src", "/var/other")]),
                ],
                ..Default::default()
            }),
            frontend_attrs: attrs(&[("attest:sbom", ""), ("attest:provenance", "mode=min")]),
            ..Default::default()
        };
        let plan = plan_solve(&req, scratch).unwrap();
        let dests: Vec<_> = plan.outputs.iter().map(|o| o.dest.clone()).collect();
        assert_eq!(
            dests,
            [
                Some(Destination::Path(scratch.join("0"))),
                Some(Destination::Path(scratch.join("1")))
            ]
        );
        assert_eq!(
            plan.cache_to[0].target,
            CacheTarget::Local(scratch.join("cache-to-0"))
        );
        // The import the client holds no manifest of is left out.
        assert_eq!(plan.cache_from.len(), 1);
        let import = &plan.cache_from[0];
        let layout = scratch.join("cache-from-0");
        assert_eq!(import.spec.target, CacheTarget::Local(layout.clone()));
        let client = import.client.as_ref().unwrap();
        assert_eq!(
            (client.digest.as_str(), &client.layout),
            ("sha256:ab", &layout)
        );
        assert_eq!(client.store, "local:/var/cache");
        assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    }
}
