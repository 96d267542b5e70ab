//! The CLI as a client of buildwitd (`--addr`): each command is one call of buildwit's
//! gRPC API, and a build streams the local context on demand (only what the build reads,
//! and for an unchanged context only its listing).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use buildwit_daemon::grpc::proto::build_client_message::Msg as Out;
use buildwit_daemon::grpc::proto::build_server_message::Msg as In;
use buildwit_daemon::grpc::proto::buildwit_client::BuildwitClient;
use buildwit_daemon::grpc::{self, CHUNK, MAX_MESSAGE, proto};
use buildwit_daemon::session::cache_local;
use buildwit_engine::history::HistoryRecord;
use buildwit_engine::info::DaemonInfo;
use buildwit_engine::{
    BuildOutcome, BuildRequest, EventSink, Exported, FrontendRecord, FrontendRef,
};
use buildwit_exporter::cache::CacheTarget;
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
    /// `--annotation`.
    pub annotations: Vec<String>,
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
        // Room for a failed step's output in the trailers.
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(10))
            .http2_max_header_list_size(64 << 10);
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
        if !request.secrets.is_empty() && !self.private {
            bail!(
                "--secret needs a private connection: use a unix:// address or TLS (--tlscacert) for {}",
                self.addr
            );
        }
        if !request.ssh.is_empty() && !self.private {
            bail!(
                "--ssh needs a private connection: use a unix:// address or TLS (--tlscacert) for {}",
                self.addr
            );
        }
        // The daemon lists a cache directory before it exports into it.
        for spec in &request.cache_to {
            if let CacheTarget::Local(dir) = &spec.target {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("--export-cache: creating {}", dir.display()))?;
            }
        }
        let offered = offered(&request);
        let start = start_message(&request, &offered, raw)?;
        let dests = file_destinations(&request);
        self.rt.block_on(run_build(
            self.client.clone(),
            start,
            Client {
                locals: offered,
                agents: request.ssh,
                writable: local_caches(&request.cache_to).collect(),
                cancelled: request.client.cancelled.clone(),
            },
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

/// This machine and user: with each directory's path, it names the daemon's mirror of
/// the directory, so the same directory sent again reuses one mirror.
fn shared_key() -> String {
    let host = std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .unwrap_or_default();
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    format!("{}:{uid}", host.trim())
}

/// The local cache directories of some cache specs, by local name.
fn local_caches(
    specs: &[buildwit_exporter::cache::CacheSpec],
) -> impl Iterator<Item = (String, PathBuf)> + '_ {
    specs.iter().filter_map(|spec| match &spec.target {
        CacheTarget::Local(dir) => Some((cache_local(dir), dir.clone())),
        _ => None,
    })
}

/// The directories the daemon may ask for: the build's locals, its OCI layouts and its
/// local cache directories.
fn offered(request: &BuildRequest) -> BTreeMap<String, PathBuf> {
    let layouts = request
        .oci_layouts
        .iter()
        .map(|(store, dir)| (buildwit_worker::Session::layout_local(store), dir.clone()));
    let caches = local_caches(&request.cache_to).chain(local_caches(&request.cache_from));
    request
        .locals
        .clone()
        .into_iter()
        .chain(layouts)
        .chain(caches)
        .collect()
}

fn start_message(
    request: &BuildRequest,
    offered: &BTreeMap<String, PathBuf>,
    raw: &RawSpecs,
) -> Result<proto::BuildStart> {
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
        locals: offered
            .iter()
            .map(|(name, p)| proto::LocalDir {
                name: name.clone(),
                key: p
                    .canonicalize()
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string(),
            })
            .collect(),
        shared_key: shared_key(),
        secrets: request
            .secrets
            .iter()
            .map(|(k, v)| proto::KeyBytes {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        ssh: request.ssh.keys().cloned().collect(),
        frontend_timeout_ms: request.frontend_timeout.map(|d| d.as_millis() as u64),
        allow: request.allow.clone(),
        solve: request.solve,
        outputs: raw.outputs.clone(),
        tags: raw.tags.clone(),
        push: raw.push,
        annotations: raw.annotations.clone(),
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
    // Hard links: every file of an inode after the first names the first.
    let mut first: std::collections::HashMap<u64, String> = Default::default();
    Ok(entries
        .into_iter()
        .map(|(path, e)| proto::FileStat {
            link: match e.kind == Kind::File && e.nlink > 1 {
                true => match first.get(&e.ino) {
                    Some(target) => target.clone(),
                    None => {
                        first.insert(e.ino, path.clone());
                        String::new()
                    }
                },
                false => String::new(),
            },
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

/// A listing sent to the daemon: its directory and the regular files in it, the only
/// files the daemon may then ask for.
pub struct Listed {
    dir: PathBuf,
    files: std::collections::HashSet<String>,
}

/// Fail unless `rel` is a plain relative path whose parents in `dir` are directories, not
/// symlinks: what the daemon names must stay inside `dir`.
fn inside(dir: &Path, rel: &str) -> Result<()> {
    parents(dir, rel, false)
}

/// As [`inside`], making the parents that are missing.
fn make_parents(dir: &Path, rel: &str) -> Result<()> {
    parents(dir, rel, true)
}

fn parents(dir: &Path, rel: &str, create: bool) -> Result<()> {
    let p = Path::new(rel);
    if rel.is_empty()
        || !p
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        bail!(
            "buildwitd named {rel:?}, which is not a path inside {}",
            dir.display()
        );
    }
    let mut at = dir.to_path_buf();
    for part in p.parent().into_iter().flat_map(Path::components) {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => bail!("{rel}: {} is not a directory", at.display()),
            Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at).with_context(|| format!("creating {}", at.display()))?
            }
            Err(e) => return Err(e).with_context(|| format!("{}", at.display())),
        }
    }
    Ok(())
}

/// Send the files the daemon asked for, in chunks, then the end marker. Only files of the
/// listing it asks about are sent: never a path outside it, nor one through a symlink.
pub async fn send_files(
    tx: &mpsc::Sender<proto::BuildClientMessage>,
    listed: &Listed,
    request: &proto::FileRequest,
) -> Result<()> {
    let send = |msg: Out| async move {
        tx.send(proto::BuildClientMessage { msg: Some(msg) })
            .await
            .map_err(|_| anyhow::anyhow!("buildwitd closed the build"))
    };
    for rel in &request.paths {
        if !listed.files.contains(rel) {
            bail!("buildwitd asked for {rel:?}, which is not a file of the listing it asked for");
        }
        let path = listed.dir.join(rel);
        inside(&listed.dir, rel)?;
        let mut file = std::fs::File::options()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .with_context(|| format!("sending {}", path.display()))?;
        loop {
            let mut data = Vec::with_capacity(CHUNK.min(1 << 16));
            (&mut file)
                .take(CHUNK as u64)
                .read_to_end(&mut data)
                .with_context(|| format!("reading {}", path.display()))?;
            let last = data.len() < CHUNK;
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
    /// Outputs whose first chunk came (their directory was made then).
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
        if self.started.insert(chunk.output) && !chunk.path.is_empty() {
            std::fs::create_dir_all(&root)
                .with_context(|| format!("creating {}", root.display()))?;
        }
        let path = if chunk.path.is_empty() {
            root.clone()
        } else {
            // A symlink the output made earlier must not carry later entries out of it.
            inside(&root, &chunk.path)?;
            root.join(&chunk.path)
        };
        // A file or symlink already at the path goes first: writing through a symlink that
        // was there would write outside the destination.
        let clear = |path: &Path| -> Result<bool> {
            match std::fs::symlink_metadata(path) {
                Ok(md) if md.is_dir() => Ok(true),
                Ok(_) if !chunk.path.is_empty() => {
                    std::fs::remove_file(path)
                        .with_context(|| format!("replacing {}", path.display()))?;
                    Ok(false)
                }
                _ => Ok(false),
            }
        };
        match proto::FileKind::try_from(chunk.kind) {
            Ok(proto::FileKind::Dir) => {
                if !clear(&path)? {
                    std::fs::create_dir_all(&path)?;
                }
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(chunk.mode))?;
            }
            Ok(proto::FileKind::Symlink) => {
                if clear(&path)? {
                    bail!("{}: a directory is in the way of a symlink", path.display());
                }
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
                    if clear(&path)? {
                        bail!("{}: a directory is in the way of a file", path.display());
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

/// Writes what the daemon exported into the client's `--export-cache` directories: each
/// file to a temporary name, moved into place when whole, with the daemon's mtime (so the
/// next sync finds it unchanged). A directory's export lock is held from the daemon's
/// listing of it to its `done`, as an in-process export holds it.
pub struct CacheWriter {
    /// The directories the daemon may write, by local name.
    dirs: BTreeMap<String, PathBuf>,
    locks: HashMap<String, std::fs::File>,
    /// The file being written: its local, path, temporary path and handle.
    open: Option<(String, String, PathBuf, std::fs::File)>,
}

impl CacheWriter {
    /// A writer for these directories.
    pub fn new(dirs: BTreeMap<String, PathBuf>) -> Self {
        CacheWriter {
            dirs,
            locks: HashMap::new(),
            open: None,
        }
    }

    /// Take the lock of local `name` if it is one of the directories (waiting off the
    /// runtime for another exporter to finish).
    pub async fn lock(&mut self, name: &str) -> Result<()> {
        let Some(dir) = self.dirs.get(name).cloned() else {
            return Ok(());
        };
        if !self.locks.contains_key(name) {
            let lock =
                tokio::task::spawn_blocking(move || buildwit_exporter::cache::lock_cache_dir(&dir))
                    .await??;
            self.locks.insert(name.to_string(), lock);
        }
        Ok(())
    }

    /// Apply one write.
    pub fn write(&mut self, w: proto::LocalWrite) -> Result<()> {
        if w.done {
            self.locks.remove(&w.name);
            return Ok(());
        }
        let dir = self.dirs.get(&w.name).with_context(|| {
            format!(
                "buildwitd wrote to local {:?}, which is not an --export-cache directory of this build",
                w.name
            )
        })?;
        if !self.locks.contains_key(&w.name) {
            bail!("buildwitd wrote to {} before listing it", dir.display());
        }
        make_parents(dir, &w.path)?;
        let path = dir.join(&w.path);
        if w.remove {
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
            return Ok(());
        }
        let same = self
            .open
            .as_ref()
            .is_some_and(|(n, p, _, _)| *n == w.name && *p == w.path);
        if !same {
            let parent = path.parent().context("a cache file has no directory")?;
            let file_name = path.file_name().context("a cache file has no name")?;
            let tmp = parent.join(format!(".{}.partial", file_name.to_string_lossy()));
            let _ = std::fs::remove_file(&tmp);
            let file = std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            self.open = Some((w.name.clone(), w.path.clone(), tmp, file));
        }
        let Some((_, _, tmp, file)) = self.open.as_mut() else {
            unreachable!("a file was just opened")
        };
        file.write_all(&w.data)
            .with_context(|| format!("writing {}", tmp.display()))?;
        if w.last {
            let Some((_, _, tmp, file)) = self.open.take() else {
                unreachable!("a file is open")
            };
            // Cache files are data: no special bits, whatever the daemon says.
            file.set_permissions(std::fs::Permissions::from_mode(w.mode & 0o777))?;
            drop(file);
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            buildwit_worker::fileops::set_mtime(&path, w.mtime_ns)?;
        }
        Ok(())
    }
}

impl Drop for CacheWriter {
    /// A file the build did not finish is not left behind.
    fn drop(&mut self) {
        if let Some((_, _, tmp, _)) = self.open.take() {
            let _ = std::fs::remove_file(tmp);
        }
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
            build_id: r.build_id,
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

/// What a build may reach on this machine: its directories and SSH agents, by name, and
/// the directories the daemon may write (`--export-cache type=local`).
struct Client {
    locals: BTreeMap<String, PathBuf>,
    agents: BTreeMap<String, PathBuf>,
    writable: BTreeMap<String, PathBuf>,
    /// Set on Ctrl-C: the stream is closed, and the daemon cancels the build.
    cancelled: Arc<std::sync::atomic::AtomicBool>,
}

/// Relay agent connection `conn` between the daemon and the agent at `socket`: what the
/// daemon sends arrives on `from_daemon` (`None`: its side closed).
async fn relay_agent(
    conn: u64,
    socket: PathBuf,
    from_daemon: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    tx: mpsc::Sender<proto::BuildClientMessage>,
) {
    let send = |data: Vec<u8>, close: bool| {
        let tx = tx.clone();
        async move {
            tx.send(proto::BuildClientMessage {
                msg: Some(Out::Ssh(proto::SshData { conn, data, close })),
            })
            .await
            .is_ok()
        }
    };
    let stream = buildwit_worker::agent::connect(&socket).and_then(|s| {
        s.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(s)
    });
    match stream {
        Ok(stream) => buildwit_engine::client::relay_stream(stream, from_daemon, send).await,
        Err(e) => {
            eprintln!("warning: ssh agent {}: {e}", socket.display());
            send(Vec::new(), true).await;
        }
    }
}

/// One build's stream: the start message, then answers to what the daemon asks for
/// while its events are shown, until the result.
async fn run_build(
    mut client: BuildwitClient<Channel>,
    start: proto::BuildStart,
    here: Client,
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
    let mut caches = CacheWriter::new(here.writable.clone());
    // What each open sync request listed.
    let mut requests: HashMap<u64, Listed> = HashMap::new();
    // Open agent connections: where the daemon's bytes for each go.
    let mut agents: HashMap<u64, mpsc::UnboundedSender<Option<Vec<u8>>>> = HashMap::new();
    let flag = here.cancelled.clone();
    let cancelled = async move {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::pin!(cancelled);
    loop {
        let next = tokio::select! {
            next = stream.message() => next,
            () = &mut cancelled => bail!("the build was cancelled"),
        };
        let msg = match next {
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
                // A cache directory the daemon will write is locked before it is listed.
                caches.lock(&request.name).await?;
                let id = request.id;
                let answer = match here.locals.get(&request.name) {
                    Some(dir) => match listing(dir, &request) {
                        Ok(entries) => {
                            let files = entries
                                .iter()
                                .filter(|e| e.kind == proto::FileKind::File as i32)
                                .map(|e| e.path.clone())
                                .collect();
                            requests.insert(
                                id,
                                Listed {
                                    dir: dir.clone(),
                                    files,
                                },
                            );
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
                    Some(listed) => send_files(&tx, listed, &request).await,
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
            Some(In::Write(w)) => caches.write(w)?,
            Some(In::SshOpen(open)) => {
                let Some(socket) = here.agents.get(&open.id) else {
                    bail!(
                        "buildwitd opened SSH agent {:?}, which was not forwarded",
                        open.id
                    );
                };
                let (to_agent, from_daemon) = mpsc::unbounded_channel();
                agents.insert(open.conn, to_agent);
                tokio::spawn(relay_agent(
                    open.conn,
                    socket.clone(),
                    from_daemon,
                    tx.clone(),
                ));
            }
            Some(In::Ssh(data)) => {
                if let Some(to_agent) = agents.get(&data.conn) {
                    if !data.data.is_empty() {
                        let _ = to_agent.send(Some(data.data));
                    }
                    if data.close {
                        let _ = to_agent.send(None);
                        agents.remove(&data.conn);
                    }
                }
            }
            Some(In::Result(r)) => return outcome(r),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_listed_files_inside_the_directory_are_sent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ctx");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a"), "a").unwrap();
        std::fs::write(tmp.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), dir.join("link")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), dir.join("up")).unwrap();
        let listed = Listed {
            dir: dir.clone(),
            files: ["sub/a", "link", "up/secret"].map(String::from).into(),
        };
        let (tx, mut rx) = mpsc::channel(16);
        let ask = |path: &str| proto::FileRequest {
            id: 1,
            paths: vec![path.to_string()],
        };
        send_files(&tx, &listed, &ask("sub/a")).await.unwrap();
        let first = rx.recv().await.unwrap();
        assert!(matches!(first.msg, Some(Out::File(c)) if c.data == b"a"));
        // Not listed, outside, or through a symlink: refused, nothing sent.
        for path in ["../secret", "/etc/passwd", "sub", "link", "up/secret"] {
            while rx.try_recv().is_ok() {}
            let e = send_files(&tx, &listed, &ask(path)).await.unwrap_err();
            eprintln!("{path}: {e:#}");
            assert!(
                !matches!(rx.try_recv(), Ok(proto::BuildClientMessage { msg: Some(Out::File(c)) }) if !c.data.is_empty()),
                "{path} was sent"
            );
        }
    }

    #[tokio::test]
    async fn the_daemon_writes_only_export_cache_directories_it_listed() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = CacheWriter::new(BTreeMap::from([("cache:x".to_string(), dir.clone())]));
        let write = |name: &str, path: &str, mode: u32| proto::LocalWrite {
            name: name.into(),
            path: path.into(),
            mode,
            mtime_ns: 1_000_000_000,
            data: b"blob".to_vec(),
            last: true,
            ..Default::default()
        };
        // Not listed yet, or not an export directory at all: refused.
        assert!(w.write(write("cache:x", "blobs/sha256/ab", 0o644)).is_err());
        w.lock("cache:x").await.unwrap();
        let e = w.write(write("cache:other", "f", 0o644)).unwrap_err();
        assert!(format!("{e:#}").contains("not an --export-cache"), "{e:#}");
        // Written whole, without special mode bits, with the daemon's mtime.
        w.write(write("cache:x", "blobs/sha256/ab", 0o4755))
            .unwrap();
        let md = std::fs::metadata(dir.join("blobs/sha256/ab")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o755);
        assert_eq!(md.mtime(), 1);
        assert!(w.write(write("cache:x", "../escape", 0o644)).is_err());
        // `done` lets the directory go.
        w.write(proto::LocalWrite {
            name: "cache:x".into(),
            done: true,
            ..Default::default()
        })
        .unwrap();
        assert!(w.write(write("cache:x", "late", 0o644)).is_err());
    }

    #[test]
    fn outputs_cannot_be_written_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let mut w = OutputWriter::new(HashMap::from([(0, Dest::Path(dest.clone()))]));
        let chunk = |path: &str, kind: proto::FileKind, target: &str| proto::OutputChunk {
            output: 0,
            path: path.into(),
            kind: kind as i32,
            mode: 0o755,
            data: b"x".to_vec(),
            target: target.into(),
        };
        w.write(chunk(
            "link",
            proto::FileKind::Symlink,
            outside.to_str().unwrap(),
        ))
        .unwrap();
        let e = w
            .write(chunk("link/escaped", proto::FileKind::File, ""))
            .unwrap_err();
        assert!(format!("{e:#}").contains("not a directory"), "{e:#}");
        assert!(!outside.join("escaped").exists());
        // A symlink already in the destination is replaced, not written through.
        std::os::unix::fs::symlink(outside.join("victim"), dest.join("file")).unwrap();
        w.write(chunk("file", proto::FileKind::File, "")).unwrap();
        assert!(!outside.join("victim").exists());
        assert_eq!(std::fs::read(dest.join("file")).unwrap(), b"x");
        let e = w
            .write(chunk("../up", proto::FileKind::File, ""))
            .unwrap_err();
        assert!(format!("{e:#}").contains("not a path inside"), "{e:#}");
    }
}
