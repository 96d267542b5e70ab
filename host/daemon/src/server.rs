//! The gRPC service buildwitd serves: every client shares one [`Engine`]. Engine calls are
//! synchronous, so each runs on a blocking thread.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use buildwit_exporter::{Destination, OutputKind};
use buildwit_frontend::Event;
use buildwit_solver::ProgressEvent;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::grpc::proto::build_client_message::Msg as In;
use crate::grpc::proto::build_server_message::Msg as Out;
use crate::grpc::proto::buildwit_server::Buildwit;
use crate::grpc::{self, CHUNK, proto};
use crate::session::{ClientSync, Mirrors, Outbox, Reply, cache_local, is_cache_local};
use crate::ssh::SshForward;
use buildwit_engine::client::{mirror_dir, peer_identity};
use buildwit_engine::{
    BuildApi, BuildRequest, ClientLink, DaemonError, Engine, EventSink, FrontendRef,
};

/// The builds running now, so shutdown can cancel them.
#[derive(Default)]
pub struct Running {
    next: AtomicU64,
    builds: Mutex<BTreeMap<u64, Arc<AtomicBool>>>,
}

impl Running {
    fn add(&self, flag: Arc<AtomicBool>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, flag);
        id
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<AtomicBool>>> {
        self.builds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cancel every running build; returns how many there were.
    pub fn cancel_all(&self) -> usize {
        let builds = self.lock();
        for flag in builds.values() {
            flag.store(true, Ordering::Relaxed);
        }
        builds.len()
    }

    /// How many builds are running.
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

/// The service over one engine. Clone it per listener: `secure` says whether that
/// listener may receive secrets (a unix socket, or TLS).
#[derive(Clone)]
pub struct Service {
    engine: Arc<Engine>,
    mirrors: Arc<Mirrors>,
    running: Arc<Running>,
    secure: bool,
}

impl Service {
    /// A service over `engine`.
    pub fn new(engine: Arc<Engine>, running: Arc<Running>) -> Self {
        Service {
            engine,
            mirrors: Arc::default(),
            running,
            secure: true,
        }
    }

    /// The same service for a listener that is (or is not) private or encrypted.
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    fn root(&self) -> &Path {
        self.engine.root()
    }

    /// Run an engine call on a blocking thread; its error becomes a status (and a log line).
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Engine) -> Result<T, DaemonError> + Send + 'static,
    ) -> Result<T, Status> {
        let engine = self.engine.clone();
        let result = tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| Status::internal(format!("{what}: {e}")))?;
        result.map_err(|e| {
            tracing::warn!("{what}: {e}");
            grpc::error_to_status(&e)
        })
    }

    /// Store an uploaded component under the root, named by its digest.
    fn upload(&self, component: &proto::Component) -> Result<PathBuf, Status> {
        // Not even stored when the policy would refuse to run it.
        self.engine
            .check_frontend_file()
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        self.store_upload(component)
    }

    /// Keep an uploaded component under the root, by digest.
    fn store_upload(&self, component: &proto::Component) -> Result<PathBuf, Status> {
        if component.data.is_empty() {
            return Err(invalid(format!(
                "the component {:?} is empty",
                component.path
            )));
        }
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&component.data));
        let dir = self.root().join("frontends").join("uploads");
        let path = dir.join(format!("{digest}.wasm"));
        if !path.exists() {
            // One temporary name per upload: two builds may upload the same component.
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!("{digest}.{}-{n}.tmp", std::process::id()));
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&tmp, &component.data))
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| Status::internal(format!("storing the component: {e}")))?;
        }
        Ok(path)
    }
}

fn invalid(message: String) -> Status {
    tracing::warn!("rejected a request: {message}");
    Status::invalid_argument(message)
}

/// Sends events and progress of a build to its client.
struct StreamSink(Arc<Outbox>);

impl EventSink for StreamSink {
    fn event(&self, event: Event) {
        self.0.send(Out::Event(grpc::event_to_proto(&event)));
    }

    fn progress(&self, event: ProgressEvent) {
        self.0.send(Out::Vertex(grpc::progress_to_proto(&event)));
    }
}

/// A file output the daemon writes to a scratch path and then streams to the client.
struct Redirected {
    index: usize,
    scratch: PathBuf,
    /// Where the client wants it, as the export record names it.
    dest: String,
}

/// A start message as the engine takes it: the request, the mirror of each directory the
/// client offered (by local name), the client's path of an uploaded component, and the
/// redirected file outputs.
type Prepared = (
    BuildRequest,
    BTreeMap<String, PathBuf>,
    Option<String>,
    Vec<Redirected>,
);

/// A message of the client, for the sync waiting on it.
fn route(msg: In) -> Option<Reply> {
    match msg {
        In::Listing(l) => Some(Reply::Listing(l)),
        In::File(f) => Some(Reply::File(f)),
        In::Failure(f) => Some(Reply::Failure(f)),
        In::Start(_) | In::Ssh(_) => None,
    }
}

impl Service {
    /// Turn the client's start message into an engine request: mirrors for its locals,
    /// file outputs redirected to scratch paths under `scratch`.
    fn request(
        &self,
        start: proto::BuildStart,
        peer: &str,
        scratch: &Path,
    ) -> Result<Prepared, Status> {
        use proto::build_start::Frontend;
        let (frontend, component_path) = match start.frontend {
            Some(Frontend::Name(n)) if !n.is_empty() => (FrontendRef::Named(n), None),
            Some(Frontend::Image(r)) if !r.is_empty() => (FrontendRef::Image(r), None),
            Some(Frontend::Component(c)) => {
                (FrontendRef::File(self.upload(&c)?), Some(c.path.clone()))
            }
            _ => return Err(invalid("the build names no frontend".into())),
        };
        if !self.secure && !start.secrets.is_empty() {
            return Err(Status::failed_precondition(
                "secrets are only accepted over a unix socket or TLS",
            ));
        }
        if !self.secure && !start.ssh.is_empty() {
            return Err(Status::failed_precondition(
                "SSH agents are only forwarded over a unix socket or TLS",
            ));
        }
        if start.shared_key.is_empty() && !start.locals.is_empty() {
            return Err(invalid(
                "the build sends local directories but no shared key".into(),
            ));
        }
        let mut mirrors = BTreeMap::new();
        for local in &start.locals {
            let name = &local.name;
            if name.is_empty() || name.contains('/') {
                return Err(invalid(format!("invalid local directory name {name:?}")));
            }
            // The client chooses its keys; who it is decides whose mirrors it can reach.
            let key = format!("{peer}\0{}\0{}", start.shared_key, local.key);
            mirrors.insert(name.clone(), mirror_dir(self.root(), &key, name));
        }
        let mut outputs = buildwit_engine::outputs::combine(
            &start.outputs,
            &start.tags,
            start.push,
            &start.annotations,
        )
        .map_err(|e| invalid(format!("--output: {e}")))?;
        let mut redirected = Vec::new();
        for (index, o) in outputs.iter_mut().enumerate() {
            if o.kind == OutputKind::Image {
                continue;
            }
            let dest = match &o.dest {
                Some(Destination::Path(p)) => p.display().to_string(),
                Some(Destination::Stdout) | None => "stdout".into(),
            };
            std::fs::create_dir_all(scratch)
                .map_err(|e| Status::internal(format!("{}: {e}", scratch.display())))?;
            let path = scratch.join(index.to_string());
            o.dest = Some(Destination::Path(path.clone()));
            redirected.push(Redirected {
                index,
                scratch: path,
                dest,
            });
        }
        let cache = |specs: &[String], export: bool| {
            specs
                .iter()
                .map(|s| {
                    use buildwit_exporter::cache::CacheTarget;
                    let spec = buildwit_exporter::cache::parse_cache_spec(s, export)
                        .map_err(|e| invalid(format!("cache spec {s:?}: {e}")))?;
                    // A local cache directory is the client's: the daemon works on its
                    // mirror (see `ClientSync::cache_dir`).
                    if let CacheTarget::Local(path) = &spec.target
                        && !mirrors.contains_key(&cache_local(path))
                    {
                        return Err(invalid(format!(
                            "cache spec {s:?}: the client does not offer {}",
                            path.display()
                        )));
                    }
                    Ok(spec)
                })
                .collect::<Result<Vec<_>, Status>>()
        };
        // OCI layouts and cache directories come as locals too; the rest are the
        // frontend's directories.
        let mut locals = BTreeMap::new();
        let mut oci_layouts = BTreeMap::new();
        for (name, dir) in &mirrors {
            if let Some(store) = buildwit_worker::Session::layout_store(name) {
                oci_layouts.insert(store.to_string(), dir.clone());
            } else if !is_cache_local(name) {
                locals.insert(name.clone(), dir.clone());
            }
        }
        let request = BuildRequest {
            frontend,
            options: start
                .options
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect(),
            locals,
            secrets: start
                .secrets
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect(),
            ssh: BTreeMap::new(),
            oci_layouts,
            allow: start.allow,
            solve: start.solve,
            outputs,
            cache_to: cache(&start.cache_to, true)?,
            cache_from: cache(&start.cache_from, false)?,
            client: ClientLink {
                name: (!start.context_name.is_empty()).then_some(start.context_name),
                ..Default::default()
            },
            // The daemon's limit is also the most a client may ask for.
            frontend_timeout: start.frontend_timeout_ms.map(|ms| {
                std::time::Duration::from_millis(ms).min(self.engine.frontend_deadline())
            }),
            prepared: None,
        };
        Ok((request, mirrors, component_path, redirected))
    }
}

/// Stream a scratch output (a file, or a directory's tree) to the client.
fn send_output(outbox: &Outbox, r: &Redirected) -> std::io::Result<()> {
    let md = std::fs::symlink_metadata(&r.scratch)?;
    if !md.is_dir() {
        return send_file(outbox, r.index, "", &r.scratch);
    }
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = r.scratch.join(&rel);
        let mut names: Vec<_> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let path = r.scratch.join(&child);
            let md = std::fs::symlink_metadata(&path)?;
            use std::os::unix::fs::PermissionsExt;
            let mode = md.permissions().mode() & 0o7777;
            if md.is_dir() {
                outbox.send_output(proto::OutputChunk {
                    output: r.index as u32,
                    path: child.clone(),
                    kind: proto::FileKind::Dir as i32,
                    mode,
                    ..Default::default()
                });
                stack.push(child);
            } else if md.file_type().is_symlink() {
                outbox.send_output(proto::OutputChunk {
                    output: r.index as u32,
                    path: child,
                    kind: proto::FileKind::Symlink as i32,
                    target: std::fs::read_link(&path)?.to_string_lossy().into_owned(),
                    ..Default::default()
                });
            } else if md.is_file() {
                send_file(outbox, r.index, &child, &path)?;
            }
        }
    }
    Ok(())
}

/// A file in chunks; an empty file is one empty chunk, so the client still creates it.
fn send_file(outbox: &Outbox, index: usize, rel: &str, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut file = std::fs::File::open(path)?;
    let mode = file.metadata()?.permissions().mode() & 0o7777;
    let mut first = true;
    loop {
        let mut data = Vec::with_capacity(CHUNK);
        (&mut file).take(CHUNK as u64).read_to_end(&mut data)?;
        if data.is_empty() && !first {
            return Ok(());
        }
        first = false;
        let sent = outbox.send_output(proto::OutputChunk {
            output: index as u32,
            path: rel.to_string(),
            kind: proto::FileKind::File as i32,
            mode,
            data,
            target: String::new(),
        });
        if !sent {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client went away",
            ));
        }
    }
}

type BuildStream = Pin<Box<dyn Stream<Item = Result<proto::BuildServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Buildwit for Service {
    type BuildStream = BuildStream;

    async fn build(
        &self,
        request: Request<Streaming<proto::BuildClientMessage>>,
    ) -> Result<Response<BuildStream>, Status> {
        let peer = peer_identity(&request);
        let mut inbound = request.into_inner();
        let start = match inbound.message().await? {
            Some(proto::BuildClientMessage {
                msg: Some(In::Start(start)),
            }) => start,
            Some(_) => {
                return Err(invalid(
                    "a build must begin with its `start` message".into(),
                ));
            }
            None => return Err(invalid("the client sent no build request".into())),
        };
        let cancelled = Arc::new(AtomicBool::new(false));
        let id = self.running.add(cancelled.clone());
        let scratch = self
            .root()
            .join("exports")
            .join(format!("{}-{id}", std::process::id()));
        let ssh_ids = start.ssh.clone();
        let (mut request, dirs, component_path, redirected) =
            match self.request(start, &peer, &scratch) {
                Ok(r) => r,
                Err(e) => {
                    self.running.remove(id);
                    let _ = std::fs::remove_dir_all(&scratch);
                    return Err(e);
                }
            };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let outbox = Arc::new(Outbox::new(tx, cancelled.clone()));
        // Output chunks leave the queue as the response stream takes them.
        let queued = outbox.queued.clone();
        let (replies_tx, replies) = tokio::sync::mpsc::channel(crate::session::REPLIES_AHEAD);
        let ssh = if ssh_ids.is_empty() {
            None
        } else {
            match SshForward::start(scratch.join("ssh"), &ssh_ids, outbox.clone()) {
                Ok(forward) => {
                    request.ssh = forward.sockets.clone();
                    Some(Arc::new(forward))
                }
                Err(e) => {
                    self.running.remove(id);
                    let _ = std::fs::remove_dir_all(&scratch);
                    tracing::warn!("forwarding the client's SSH agents: {e}");
                    return Err(Status::internal(format!(
                        "forwarding the client's SSH agents: {e}"
                    )));
                }
            }
        };
        // Cache directories take blobs from the content store rather than the client.
        let content = if dirs.keys().any(|n| is_cache_local(n)) {
            let engine = self.engine.clone();
            tokio::task::spawn_blocking(move || engine.solver())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|s| s.worker().content.clone())
        } else {
            None
        };
        let sync = Arc::new(ClientSync::new(
            outbox.clone(),
            replies,
            dirs,
            self.mirrors.clone(),
            content,
            cancelled.clone(),
        ));
        request.client.sync = Some(sync.clone());
        request.client.cache_dirs = Some(sync.clone());
        request.client.cancelled = cancelled.clone();
        // The client's messages go to the sync waiting for them; the end of its stream
        // (or an error on it) before the build answered means it went away.
        let reader_flag = cancelled.clone();
        let reader_ssh = ssh.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(proto::BuildClientMessage {
                        msg: Some(In::Ssh(data)),
                    })) => {
                        if let Some(ssh) = &reader_ssh {
                            ssh.deliver(data);
                        }
                    }
                    Ok(Some(proto::BuildClientMessage { msg: Some(msg) })) => {
                        if let Some(reply) = route(msg)
                            && replies_tx.send(reply).await.is_err()
                        {
                            break;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        reader_flag.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
        });
        let engine = self.engine.clone();
        let running = self.running.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let result = engine.build(request, Arc::new(StreamSink(outbox.clone())));
            sync.release();
            let answer = match result {
                Ok(mut outcome) => {
                    if let Some(path) = component_path {
                        outcome.frontend.source = path;
                    }
                    let mut failed = None;
                    for r in &redirected {
                        if let Some(e) = outcome.exported.get_mut(r.index) {
                            e.dest = r.dest.clone();
                        }
                        if let Err(e) = send_output(&outbox, r) {
                            failed = Some(Status::aborted(format!(
                                "sending output {} to the client: {e}",
                                r.dest
                            )));
                            break;
                        }
                    }
                    match failed {
                        Some(status) => Err(status),
                        None => Ok(proto::BuildServerMessage {
                            msg: Some(Out::Result(proto::BuildResult {
                                frontend: Some((&outcome.frontend).into()),
                                definition: outcome
                                    .definition
                                    .as_ref()
                                    .map(prost::Message::encode_to_vec),
                                platforms: outcome
                                    .platforms
                                    .iter()
                                    .map(|(k, d)| proto::KeyBytes {
                                        key: k.clone(),
                                        value: prost::Message::encode_to_vec(d),
                                    })
                                    .collect(),
                                metadata: outcome
                                    .metadata
                                    .iter()
                                    .map(|(k, v)| proto::KeyBytes {
                                        key: k.clone(),
                                        value: v.clone(),
                                    })
                                    .collect(),
                                frontend_time_ns: outcome.frontend_time.as_nanos() as u64,
                                solve_time_ns: outcome.solve_time.as_nanos() as u64,
                                layers: outcome.result.as_ref().map_or(0, |s| s.layers.len())
                                    as u32,
                                exported: outcome.exported.iter().map(Into::into).collect(),
                                build_id: outcome.build_id.clone(),
                            })),
                        }),
                    }
                }
                Err(e) => {
                    tracing::warn!("build failed: {e}");
                    Err(grpc::error_to_status(&e))
                }
            };
            let ok = answer.is_ok();
            if let Some(ssh) = &ssh {
                ssh.close();
            }
            let _ = std::fs::remove_dir_all(&scratch);
            // Logged before the client hears the answer: whoever reads the log after it
            // finds this build's line.
            tracing::info!(
                peer = %peer,
                ok,
                cancelled = outbox.cancelled.load(Ordering::Relaxed),
                received = sync.received(),
                seconds = started.elapsed().as_secs_f64(),
                "build finished"
            );
            running.remove(id);
            outbox.send_raw(answer);
            outbox.close();
        });
        let stream = UnboundedReceiverStream::new(rx).map(move |item| {
            match &item {
                Ok(proto::BuildServerMessage {
                    msg: Some(Out::Output(proto::OutputChunk { data, .. })),
                })
                | Ok(proto::BuildServerMessage {
                    msg: Some(Out::Write(proto::LocalWrite { data, .. })),
                }) => queued.taken(data.len() as u64),
                _ => {}
            }
            item
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn info(
        &self,
        _request: Request<proto::InfoRequest>,
    ) -> Result<Response<proto::InfoResponse>, Status> {
        let info = self.blocking("info", |e| e.info()).await?;
        Ok(Response::new((&info).into()))
    }

    async fn disk_usage(
        &self,
        request: Request<proto::DiskUsageRequest>,
    ) -> Result<Response<proto::DiskUsageResponse>, Status> {
        let filters = request.into_inner().filters;
        let records = self.blocking("du", move |e| e.disk_usage(&filters)).await?;
        Ok(Response::new(proto::DiskUsageResponse {
            records: records.iter().map(Into::into).collect(),
        }))
    }

    async fn prune(
        &self,
        request: Request<proto::PruneRequest>,
    ) -> Result<Response<proto::PruneResponse>, Status> {
        let rule = request
            .into_inner()
            .rule
            .ok_or_else(|| invalid("prune needs a rule".into()))?;
        let rule = rule.into();
        let report = self.blocking("prune", move |e| e.prune(&rule)).await?;
        Ok(Response::new(proto::PruneResponse {
            records: report.records.iter().map(Into::into).collect(),
            freed: report.freed,
        }))
    }

    async fn list_history(
        &self,
        _request: Request<proto::ListHistoryRequest>,
    ) -> Result<Response<proto::ListHistoryResponse>, Status> {
        let records = self.blocking("history", |e| Ok(e.history().list())).await?;
        Ok(Response::new(proto::ListHistoryResponse {
            records: records.iter().map(Into::into).collect(),
        }))
    }

    async fn inspect_history(
        &self,
        request: Request<proto::InspectHistoryRequest>,
    ) -> Result<Response<proto::HistoryRecord>, Status> {
        let id = request.into_inner().id;
        let wanted = id.clone();
        let record = self
            .blocking("history", move |e| Ok(e.history().get(&wanted)))
            .await?;
        match record {
            Some(r) => Ok(Response::new((&r).into())),
            None => Err(Status::not_found(format!(
                "no build {id:?} in the history (see buildwit history ls; ids may be shortened while unique)"
            ))),
        }
    }

    async fn inspect_frontend(
        &self,
        request: Request<proto::InspectFrontendRequest>,
    ) -> Result<Response<proto::InspectFrontendResponse>, Status> {
        use proto::inspect_frontend_request::Frontend;
        let (frontend, shown) = match request.into_inner().frontend {
            Some(Frontend::Image(r)) if !r.is_empty() => (FrontendRef::Image(r), None),
            Some(Frontend::Component(c)) => (FrontendRef::File(self.upload(&c)?), Some(c.path)),
            _ => return Err(invalid("inspect names no frontend".into())),
        };
        let (mut record, (imports, exports, size)) = self
            .blocking("frontend inspect", move |e| {
                Ok((
                    e.inspect_frontend(&frontend)?,
                    buildwit_engine::frontend_interfaces(e, &frontend)?,
                ))
            })
            .await?;
        if let Some(path) = shown {
            record.source = path;
        }
        Ok(Response::new(proto::InspectFrontendResponse {
            record: Some((&record).into()),
            imports,
            exports,
            size: size as u64,
        }))
    }

    async fn push_frontend(
        &self,
        request: Request<proto::PushFrontendRequest>,
    ) -> Result<Response<proto::PushFrontendResponse>, Status> {
        let request = request.into_inner();
        let component = request
            .component
            .ok_or_else(|| invalid("push sends no component".into()))?;
        if request.reference.is_empty() {
            return Err(invalid("push names no reference".into()));
        }
        // Publishing runs nothing: no frontend policy applies.
        let path = self.store_upload(&component)?;
        let (digest, uploaded) = self
            .blocking("frontend push", move |e| {
                e.push_frontend(&path, &request.reference)
            })
            .await?;
        Ok(Response::new(proto::PushFrontendResponse {
            digest,
            uploaded: uploaded as u64,
        }))
    }

    async fn list_frontends(
        &self,
        _request: Request<proto::ListFrontendsRequest>,
    ) -> Result<Response<proto::ListFrontendsResponse>, Status> {
        let images = self
            .blocking("frontend ls", |e| Ok(e.list_frontends()))
            .await?;
        Ok(Response::new(proto::ListFrontendsResponse {
            images: images
                .into_iter()
                .map(|(reference, digest, r)| proto::FrontendImage {
                    reference,
                    digest,
                    name: r.name,
                    version: r.version,
                    channel: r.channel,
                    size: r.size,
                })
                .collect(),
        }))
    }

    async fn remove_frontend(
        &self,
        request: Request<proto::RemoveFrontendRequest>,
    ) -> Result<Response<proto::RemoveFrontendResponse>, Status> {
        let what = request.into_inner().reference;
        let deleted = self
            .blocking("frontend rm", move |e| e.remove_frontend(&what))
            .await?;
        Ok(Response::new(proto::RemoveFrontendResponse { deleted }))
    }
}
