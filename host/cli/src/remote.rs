//! The CLI as a client of buildwitd (`--addr`): each command is one call of buildwit's
//! gRPC API, and a build streams the local context on demand (only what the build reads,
//! and for an unchanged context only its listing).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use buildwit_daemon::grpc::proto::build_client_message::Msg as Out;
use buildwit_daemon::grpc::proto::build_server_message::Msg as In;
use buildwit_daemon::grpc::proto::buildwit_client::BuildwitClient;
use buildwit_daemon::grpc::{self, CHUNK, MAX_MESSAGE, proto};
use buildwit_daemon::history::HistoryRecord;
use buildwit_daemon::info::DaemonInfo;
use buildwit_daemon::{
    BuildOutcome, BuildRequest, EventSink, Exported, FrontendRecord, FrontendRef,
};
use buildwit_exporter::{Destination, OutputKind};
use buildwit_solver::{PruneReport, UsageRecord};
use buildwit_worker::local::{Kind, LocalSource};
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// TLS files for a `tcp://` daemon.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// CA that signed the daemon's certificate.
    pub ca: Option<PathBuf>,
    /// Client certificate.
    pub cert: Option<PathBuf>,
    /// Its key.
    pub key: Option<PathBuf>,
    /// Server name to verify (default: the host of the address).
    pub server_name: Option<String>,
}

/// What a build's flags said, as typed: the daemon parses them again, so both modes read
/// them alike.
#[derive(Clone, Debug, Default)]
pub struct RawSpecs {
    /// `--output`.
    pub outputs: Vec<String>,
    /// `-t`.
    pub tags: Vec<String>,
    /// `--push`.
    pub push: bool,
    /// `--export-cache`.
    pub cache_to: Vec<String>,
    /// `--import-cache`.
    pub cache_from: Vec<String>,
}

/// A connection to buildwitd.
pub struct Remote {
    rt: tokio::runtime::Runtime,
    client: BuildwitClient<Channel>,
    addr: String,
    /// Whether secrets may travel on it (a unix socket or TLS).
    private: bool,
}

/// An error status as the user should read it: a failed step as in-process.
fn status_error(what: &str, status: tonic::Status) -> anyhow::Error {
    if let Some(e) = grpc::step_failure(&status) {
        return e.into();
    }
    match status.code() {
        tonic::Code::Unavailable => {
            anyhow::anyhow!("{what}: buildwitd is unavailable: {}", status.message())
        }
        _ => anyhow::anyhow!("{}", status.message()),
    }
}

impl Remote {
    /// Connect to `unix:///PATH` or `tcp://HOST:PORT`.
    pub fn connect(addr: &str, tls: &TlsFiles) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the client runtime")?;
        let (endpoint, private) = if let Some(path) = addr.strip_prefix("unix://") {
            if path.is_empty() {
                bail!("--addr {addr:?} names no socket path");
            }
            if tls.cert.is_some() || tls.ca.is_some() {
                bail!("--tlscacert/--tlscert are for tcp:// addresses, not {addr}");
            }
            (Endpoint::try_from(addr.to_string())?, true)
        } else if let Some(host) = addr.strip_prefix("tcp://") {
            let (name, _port) = host
                .rsplit_once(':')
                .with_context(|| format!("--addr {addr:?} needs a port (tcp://HOST:PORT)"))?;
            let secure = tls.ca.is_some() || tls.cert.is_some();
            let scheme = if secure { "https" } else { "http" };
            let mut endpoint = Endpoint::try_from(format!("{scheme}://{host}"))
                .with_context(|| format!("--addr {addr:?}"))?;
            if secure {
                let read = |p: &Path, flag: &str| {
                    std::fs::read(p).with_context(|| format!("{flag} {}", p.display()))
                };
                let mut config = ClientTlsConfig::new().domain_name(
                    tls.server_name
                        .clone()
                        .unwrap_or_else(|| name.trim_matches(['[', ']']).to_string()),
                );
                if let Some(ca) = &tls.ca {
                    config = config.ca_certificate(Certificate::from_pem(read(ca, "--tlscacert")?));
                }
                match (&tls.cert, &tls.key) {
                    (Some(cert), Some(key)) => {
                        config = config.identity(Identity::from_pem(
                            read(cert, "--tlscert")?,
                            read(key, "--tlskey")?,
                        ));
                    }
                    (None, None) => {}
                    _ => bail!("--tlscert and --tlskey go together"),
                }
                endpoint = endpoint.tls_config(config).context("TLS settings")?;
            }
            (endpoint, secure)
        } else {
            bail!("--addr {addr:?}: use unix:///PATH or tcp://HOST:PORT");
        };
        let endpoint = endpoint.connect_timeout(Duration::from_secs(10));
        let channel = rt.block_on(endpoint.connect()).map_err(|e| {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg = format!("{msg}: {s}");
                source = s.source();
            }
            anyhow::anyhow!("cannot reach buildwitd at {addr}: {msg}")
        })?;
        let client = BuildwitClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Remote {
            rt,
            client,
            addr: addr.to_string(),
            private,
        })
    }

    fn call<T>(
        &self,
        what: &str,
        f: impl AsyncFnOnce(BuildwitClient<Channel>) -> Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T> {
        let client = self.client.clone();
        self.rt
            .block_on(f(client))
            .map(tonic::Response::into_inner)
            .map_err(|s| status_error(what, s))
    }

    /// The daemon's description.
    pub fn info(&self) -> Result<DaemonInfo> {
        let r = self.call("info", async |mut c| c.info(proto::InfoRequest {}).await)?;
        Ok(r.into())
    }

    /// `du`.
    pub fn disk_usage(&self, filters: &[String]) -> Result<Vec<UsageRecord>> {
        let filters = filters.to_vec();
        let r = self.call("du", async |mut c| {
            c.disk_usage(proto::DiskUsageRequest { filters }).await
        })?;
        Ok(r.records.into_iter().map(Into::into).collect())
    }

    /// `prune`.
    pub fn prune(&self, rule: &buildwit_config::PruneRule) -> Result<PruneReport> {
        let rule = Some(rule.into());
        let r = self.call("prune", async |mut c| {
            c.prune(proto::PruneRequest { rule }).await
        })?;
        Ok(PruneReport {
            records: r.records.into_iter().map(Into::into).collect(),
            freed: r.freed,
        })
    }

    /// `history ls`.
    pub fn history(&self) -> Result<Vec<HistoryRecord>> {
        let r = self.call("history", async |mut c| {
            c.list_history(proto::ListHistoryRequest {}).await
        })?;
        Ok(r.records.into_iter().map(Into::into).collect())
    }

    /// `history inspect`.
    pub fn history_get(&self, id: &str) -> Result<HistoryRecord> {
        let id = id.to_string();
        let r = self.call("history", async |mut c| {
            c.inspect_history(proto::InspectHistoryRequest { id }).await
        })?;
        Ok(r.into())
    }

    /// `frontend inspect` / `pull`: the record, imports, exports and size.
    pub fn inspect_frontend(
        &self,
        frontend: &FrontendRef,
    ) -> Result<(FrontendRecord, Vec<String>, Vec<String>, usize)> {
        use proto::inspect_frontend_request::Frontend;
        let frontend = match frontend {
            FrontendRef::File(path) => Frontend::Component(component(path)?),
            FrontendRef::Image(r) | FrontendRef::Named(r) => Frontend::Image(r.clone()),
        };
        let r = self.call("frontend inspect", async |mut c| {
            c.inspect_frontend(proto::InspectFrontendRequest {
                frontend: Some(frontend),
            })
            .await
        })?;
        let record = r.record.context("buildwitd answered without a record")?;
        Ok((record.into(), r.imports, r.exports, r.size as usize))
    }

    /// `frontend push`.
    pub fn push_frontend(&self, file: &Path, reference: &str) -> Result<(String, usize)> {
        let request = proto::PushFrontendRequest {
            component: Some(component(file)?),
            reference: reference.to_string(),
        };
        let r = self.call("frontend push", async |mut c| {
            c.push_frontend(request).await
        })?;
        Ok((r.digest, r.uploaded as usize))
    }

    /// `frontend ls`.
    pub fn list_frontends(&self) -> Result<Vec<proto::FrontendImage>> {
        let r = self.call("frontend ls", async |mut c| {
            c.list_frontends(proto::ListFrontendsRequest {}).await
        })?;
        Ok(r.images)
    }

    /// `frontend rm`.
    pub fn remove_frontend(&self, what: &str) -> Result<Vec<String>> {
        let reference = what.to_string();
        let r = self.call("frontend rm", async |mut c| {
            c.remove_frontend(proto::RemoveFrontendRequest { reference })
                .await
        })?;
        Ok(r.deleted)
    }

    /// Run a build on the daemon; returns the outcome and the layers of the result.
    pub fn build(
        &self,
        request: BuildRequest,
        raw: &RawSpecs,
        events: Arc<dyn EventSink>,
    ) -> Result<(BuildOutcome, usize)> {
        if !request.ssh.is_empty() {
            bail!(
                "--ssh is not supported with --addr yet: buildwitd cannot reach the client's agent"
            );
        }
        if !request.oci_layouts.is_empty() {
            bail!(
                "--oci-layout is not supported with --addr yet: the layout is not sent to buildwitd"
            );
        }
        if !request.secrets.is_empty() && !self.private {
            bail!(
                "--secret needs a private connection: use a unix:// address or TLS (--tlscacert) for {}",
                self.addr
            );
        }
        let start = start_message(&request, raw)?;
        let dests = file_destinations(&request);
        self.rt.block_on(run_build(
            self.client.clone(),
            start,
            request.locals,
            dests,
            events,
        ))
    }
}

/// A component file to send.
fn component(path: &Path) -> Result<proto::Component> {
    Ok(proto::Component {
        path: path.display().to_string(),
        data: std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    })
}

/// Names the daemon's mirror of this client's directory: the same directory from the
/// same machine and user reuses one mirror.
fn shared_key(locals: &BTreeMap<String, PathBuf>) -> String {
    let host = std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .unwrap_or_default();
    let dirs: Vec<String> = locals
        .iter()
        .map(|(n, p)| {
            let p = p.canonicalize().unwrap_or_else(|_| p.clone());
            format!("{n}={}", p.display())
        })
        .collect();
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    format!("{}:{uid}:{}", host.trim(), dirs.join(","))
}

fn start_message(request: &BuildRequest, raw: &RawSpecs) -> Result<proto::BuildStart> {
    use proto::build_start::Frontend;
    let frontend = match &request.frontend {
        FrontendRef::Named(n) => Frontend::Name(n.clone()),
        FrontendRef::Image(r) => Frontend::Image(r.clone()),
        FrontendRef::File(p) => Frontend::Component(component(p)?),
    };
    Ok(proto::BuildStart {
        frontend: Some(frontend),
        options: request
            .options
            .iter()
            .map(|(k, v)| proto::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        locals: request.locals.keys().cloned().collect(),
        shared_key: shared_key(&request.locals),
        secrets: request
            .secrets
            .iter()
            .map(|(k, v)| proto::KeyBytes {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        allow: request.allow.clone(),
        solve: request.solve,
        outputs: raw.outputs.clone(),
        tags: raw.tags.clone(),
        push: raw.push,
        cache_to: raw.cache_to.clone(),
        cache_from: raw.cache_from.clone(),
        context_name: request
            .locals
            .get("context")
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    })
}

/// Stat the paths of a local directory that the daemon's filters select.
pub fn listing(dir: &Path, request: &proto::LocalRequest) -> Result<Vec<proto::FileStat>> {
    let source = LocalSource {
        dir: dir.to_path_buf(),
        follow: request.follow_paths.clone(),
        include: request.include_patterns.clone(),
        exclude: request.exclude_patterns.clone(),
    };
    let entries = buildwit_worker::local::list(&source)?;
    Ok(entries
        .into_iter()
        .map(|(path, e)| proto::FileStat {
            path,
            kind: match e.kind {
                Kind::Dir => proto::FileKind::Dir,
                Kind::File => proto::FileKind::File,
                Kind::Symlink => proto::FileKind::Symlink,
            } as i32,
            mode: e.mode,
            size: e.size,
            mtime_ns: e.mtime,
            target: if e.kind == Kind::Symlink {
                e.hash
            } else {
                String::new()
            },
        })
        .collect())
}

/// Send the files the daemon asked for, in chunks, then the end marker.
pub async fn send_files(
    tx: &mpsc::Sender<proto::BuildClientMessage>,
    dir: &Path,
    request: &proto::FileRequest,
) -> Result<()> {
    let send = |msg: Out| async move {
        tx.send(proto::BuildClientMessage { msg: Some(msg) })
            .await
            .map_err(|_| anyhow::anyhow!("buildwitd closed the build"))
    };
    for rel in &request.paths {
        let path = dir.join(rel);
        let mut file =
            std::fs::File::open(&path).with_context(|| format!("sending {}", path.display()))?;
        let mut first = true;
        loop {
            let mut data = Vec::with_capacity(CHUNK.min(1 << 16));
            (&mut file)
                .take(CHUNK as u64)
                .read_to_end(&mut data)
                .with_context(|| format!("reading {}", path.display()))?;
            let last = data.len() < CHUNK;
            if data.is_empty() && !first && !last {
                break;
            }
            first = false;
            send(Out::File(proto::FileChunk {
                id: request.id,
                path: rel.clone(),
                data,
                last,
            }))
            .await?;
            if last {
                break;
            }
        }
    }
    send(Out::File(proto::FileChunk {
        id: request.id,
        ..Default::default()
    }))
    .await
}

/// Where a file output goes on this machine.
#[derive(Clone, Debug)]
pub enum Dest {
    /// A file (or a directory for `type=local` and layouts).
    Path(PathBuf),
    /// Standard output.
    Stdout,
}

/// Writes the file outputs the daemon streams back.
#[derive(Default)]
pub struct OutputWriter {
    dests: HashMap<u32, Dest>,
    /// The file being written, per output.
    open: HashMap<u32, (String, std::fs::File)>,
    /// Outputs that were cleared before their first chunk.
    started: std::collections::HashSet<u32>,
}

impl OutputWriter {
    /// A writer for these destinations by output index.
    pub fn new(dests: HashMap<u32, Dest>) -> Self {
        OutputWriter {
            dests,
            ..Default::default()
        }
    }

    /// Write one chunk.
    pub fn write(&mut self, chunk: proto::OutputChunk) -> Result<()> {
        let dest = self
            .dests
            .get(&chunk.output)
            .with_context(|| {
                format!(
                    "buildwitd sent output {}, which is not a file output",
                    chunk.output
                )
            })?
            .clone();
        let root = match dest {
            Dest::Stdout => {
                if !chunk.path.is_empty() {
                    bail!("buildwitd sent a directory for an output to standard output");
                }
                std::io::stdout().lock().write_all(&chunk.data)?;
                return Ok(());
            }
            Dest::Path(p) => p,
        };
        if !chunk.path.is_empty()
            && !Path::new(&chunk.path)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            bail!("buildwitd sent the output path {:?}", chunk.path);
        }
        if self.started.insert(chunk.output) && !chunk.path.is_empty() {
            std::fs::create_dir_all(&root)
                .with_context(|| format!("creating {}", root.display()))?;
        }
        let path = if chunk.path.is_empty() {
            root.clone()
        } else {
            root.join(&chunk.path)
        };
        match proto::FileKind::try_from(chunk.kind) {
            Ok(proto::FileKind::Dir) => {
                std::fs::create_dir_all(&path)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(chunk.mode))?;
            }
            Ok(proto::FileKind::Symlink) => {
                let _ = std::fs::remove_file(&path);
                std::os::unix::fs::symlink(&chunk.target, &path)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(proto::FileKind::File) => {
                let same = self
                    .open
                    .get(&chunk.output)
                    .is_some_and(|(p, _)| *p == chunk.path);
                if !same {
                    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir)?;
                    }
                    let file = std::fs::File::create(&path)
                        .with_context(|| format!("writing {}", path.display()))?;
                    file.set_permissions(std::fs::Permissions::from_mode(chunk.mode))?;
                    self.open.insert(chunk.output, (chunk.path.clone(), file));
                }
                let (_, file) = self
                    .open
                    .get_mut(&chunk.output)
                    .context("no open output file")?;
                file.write_all(&chunk.data)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Err(_) => bail!("buildwitd sent an output of unknown kind {}", chunk.kind),
        }
        Ok(())
    }
}

/// The outcome a result message describes.
pub fn outcome(r: proto::BuildResult) -> Result<(BuildOutcome, usize)> {
    let decode = |b: &[u8]| {
        buildwit_llb::decode_definition(b)
            .context("buildwitd sent a definition that does not decode")
    };
    Ok((
        BuildOutcome {
            frontend: r
                .frontend
                .context("buildwitd's result names no frontend")?
                .into(),
            definition: r.definition.as_deref().map(decode).transpose()?,
            platforms: r
                .platforms
                .into_iter()
                .map(|kv| Ok((kv.key, decode(&kv.value)?)))
                .collect::<Result<_>>()?,
            metadata: r
                .metadata
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect(),
            frontend_time: Duration::from_nanos(r.frontend_time_ns),
            result: None,
            solve_time: Duration::from_nanos(r.solve_time_ns),
            exported: r.exported.into_iter().map(Exported::from).collect(),
        },
        r.layers as usize,
    ))
}

/// Where each file output of a request goes, by index.
pub fn file_destinations(request: &BuildRequest) -> HashMap<u32, Dest> {
    request
        .outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| o.kind != OutputKind::Image)
        .map(|(i, o)| {
            let dest = match &o.dest {
                Some(Destination::Path(p)) => Dest::Path(p.clone()),
                Some(Destination::Stdout) | None => Dest::Stdout,
            };
            (i as u32, dest)
        })
        .collect()
}

/// One build's stream: the start message, then answers to what the daemon asks for
/// while its events are shown, until the result.
async fn run_build(
    mut client: BuildwitClient<Channel>,
    start: proto::BuildStart,
    locals: BTreeMap<String, PathBuf>,
    dests: HashMap<u32, Dest>,
    events: Arc<dyn EventSink>,
) -> Result<(BuildOutcome, usize)> {
    let (tx, rx) = mpsc::channel(16);
    let message = |msg: Out| proto::BuildClientMessage { msg: Some(msg) };
    tx.send(message(Out::Start(start)))
        .await
        .map_err(|_| anyhow::anyhow!("the build stream closed"))?;
    let mut stream = client
        .build(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| status_error("build", s))?
        .into_inner();
    let mut writer = OutputWriter::new(dests);
    // The directory each open sync request is about.
    let mut requests: HashMap<u64, PathBuf> = HashMap::new();
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m.msg,
            Ok(None) => bail!("buildwitd ended the build without a result"),
            Err(status) => return Err(status_error("build", status)),
        };
        match msg {
            Some(In::Event(e)) => {
                if let Some(e) = grpc::event_from_proto(e) {
                    events.event(e);
                }
            }
            Some(In::Vertex(v)) => {
                if let Some(p) = grpc::progress_from_proto(v) {
                    events.progress(p);
                }
            }
            Some(In::Local(request)) => {
                let id = request.id;
                let answer = match locals.get(&request.name) {
                    Some(dir) => match listing(dir, &request) {
                        Ok(entries) => {
                            requests.insert(id, dir.clone());
                            Out::Listing(proto::LocalListing { id, entries })
                        }
                        Err(e) => Out::Failure(proto::SyncFailure {
                            id,
                            message: format!("listing {}: {e:#}", dir.display()),
                        }),
                    },
                    None => Out::Failure(proto::SyncFailure {
                        id,
                        message: format!("no local directory named {:?}", request.name),
                    }),
                };
                tx.send(message(answer))
                    .await
                    .map_err(|_| anyhow::anyhow!("buildwitd closed the build"))?;
            }
            Some(In::Files(request)) => {
                let sent = match requests.get(&request.id) {
                    Some(dir) => send_files(&tx, dir, &request).await,
                    None => Err(anyhow::anyhow!(
                        "buildwitd asked for files of unknown request {}",
                        request.id
                    )),
                };
                if let Err(e) = sent {
                    tx.send(message(Out::Failure(proto::SyncFailure {
                        id: request.id,
                        message: format!("{e:#}"),
                    })))
                    .await
                    .map_err(|_| anyhow::anyhow!("buildwitd closed the build"))?;
                }
            }
            Some(In::Output(chunk)) => writer.write(chunk)?,
            Some(In::Result(r)) => return outcome(r),
            None => {}
        }
    }
}
