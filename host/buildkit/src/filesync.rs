//! Files through a BuildKit session, in fsutil's `DiffCopy` protocol: the client's
//! directories into mirrors under the daemon's root (only changed files travel when a
//! mirror is reused), and outputs back to the client.
//!
//! The walk is one STAT per entry (depth first, names in byte order), then a STAT
//! without a stat; the receiver asks for file contents by the entry's position (REQ),
//! the sender answers with DATA chunks ending in an empty one, and FIN closes.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use buildwit_worker::LocalSync;
use buildwit_worker::fileops::remove;
use buildwit_worker::local::LocalSource;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::proto::fsutil::types::{Packet, PacketType, Stat};
use crate::proto::moby::filesync::v1::BytesMessage;
use crate::proto::moby::filesync::v1::file_send_client::FileSendClient;
use crate::tunnel::ClientSession;

const FILE_SYNC: &str = "/moby.filesync.v1.FileSync/DiffCopy";
const FILE_SEND: &str = "/moby.filesync.v1.FileSend/DiffCopy";
/// File data per message: well under the client's 4 MiB limit.
const CHUNK: usize = 1 << 20;

// Go's os.FileMode bits, which fsutil sends instead of st_mode.
const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_DEVICE: u32 = 1 << 26;
const GO_PIPE: u32 = 1 << 25;
const GO_SOCKET: u32 = 1 << 24;
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_CHAR: u32 = 1 << 21;
const GO_STICKY: u32 = 1 << 20;
const GO_IRREGULAR: u32 = 1 << 19;

/// Unix permission bits (with setuid, setgid, sticky) of a Go file mode.
fn unix_perm(go: u32) -> u32 {
    let mut m = go & 0o777;
    if go & GO_SETUID != 0 {
        m |= 0o4000;
    }
    if go & GO_SETGID != 0 {
        m |= 0o2000;
    }
    if go & GO_STICKY != 0 {
        m |= 0o1000;
    }
    m
}

/// The Go file mode of a file's metadata.
fn go_mode(md: &fs::Metadata) -> u32 {
    let mode = md.mode();
    let mut m = mode & 0o777;
    if mode & 0o4000 != 0 {
        m |= GO_SETUID;
    }
    if mode & 0o2000 != 0 {
        m |= GO_SETGID;
    }
    if mode & 0o1000 != 0 {
        m |= GO_STICKY;
    }
    let t = md.file_type();
    if t.is_dir() {
        m |= GO_DIR;
    } else if t.is_symlink() {
        m |= GO_SYMLINK;
    }
    m
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn status_error(e: tonic::Status) -> io::Error {
    io::Error::other(e.message().to_string())
}

/// A path as fsutil may name one: relative, clean, no `..`.
fn checked(path: &str) -> io::Result<&str> {
    // Component by component: `Path::components` would quietly drop a `.`.
    let plain = !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if plain {
        Ok(path)
    } else {
        Err(bad(format!(
            "the client sent {path:?}, which is not a clean relative path"
        )))
    }
}

/// Metadata values for a list: percent-escaped (and flagged `<key>-encoded`) when any is
/// not ASCII, as BuildKit sends them.
fn put_list(md: &mut MetadataMap, key: &'static str, values: &[String]) -> io::Result<()> {
    let encode = values
        .iter()
        .any(|v| !v.is_ascii() || v.bytes().any(|b| b < 0x20));
    for v in values {
        let text = if encode { percent(v) } else { v.clone() };
        let value =
            MetadataValue::try_from(text.as_str()).map_err(|e| bad(format!("{key} {v:?}: {e}")))?;
        md.append(key, value);
    }
    if encode {
        let flag: &'static str = match key {
            "include-patterns" => "include-patterns-encoded",
            "exclude-patterns" => "exclude-patterns-encoded",
            _ => "followpaths-encoded",
        };
        md.insert(flag, MetadataValue::from_static("1"));
    }
    Ok(())
}

/// Go's `url.QueryEscape`.
fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Orders paths as fsutil does: component by component, bytewise.
fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// A BuildKit client's directories, synced into mirrors under the daemon's root when the
/// build reads them. A mirror is kept for the client's next build (keyed by who the client
/// is and its session's shared key), so an unchanged context costs one listing; a build
/// that finds its mirror in use by another takes a private one for itself instead of
/// waiting.
pub struct SessionSync {
    session: Arc<ClientSession>,
    /// The daemon's state directory.
    root: PathBuf,
    /// The runtime the transfers run on (the caller is a build thread).
    rt: tokio::runtime::Handle,
    /// Shared mirrors some build holds (all builds of the daemon).
    held: Arc<Mutex<HashSet<PathBuf>>>,
    /// The mirror of each local this build reads, and whether it is shared.
    chosen: Mutex<HashMap<String, (PathBuf, bool)>>,
    /// Syncs done in this build, by name and filters: the client's files do not change.
    done: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for SessionSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSync")
            .field("session", &self.session.id)
            .finish_non_exhaustive()
    }
}

impl SessionSync {
    /// Mirrors of `session`'s directories under `root` (the daemon's state directory);
    /// `held` lists the shared mirrors in use.
    pub fn new(
        session: Arc<ClientSession>,
        root: &Path,
        rt: tokio::runtime::Handle,
        held: Arc<Mutex<HashSet<PathBuf>>>,
    ) -> Self {
        SessionSync {
            session,
            root: root.to_path_buf(),
            rt,
            held,
            chosen: Mutex::default(),
            done: Mutex::default(),
        }
    }

    /// The mirror of local `name` for this build: the client's shared one if no other
    /// build holds it, else a private one.
    fn mirror(&self, name: &str) -> PathBuf {
        let mut chosen = self.chosen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((dir, _)) = chosen.get(name) {
            return dir.clone();
        }
        let s = &self.session;
        let shared_key = format!("buildkit\0{}\0{}", s.peer, s.shared_key);
        let shared = buildwit_engine::client::mirror_dir(&self.root, &shared_key, name);
        let free = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(shared.clone());
        let dir = if free {
            shared
        } else {
            let private_key = format!("buildkit-session\0{}", s.id);
            buildwit_engine::client::mirror_dir(&self.root, &private_key, name)
        };
        chosen.insert(name.to_string(), (dir.clone(), free));
        dir
    }
}

impl Drop for SessionSync {
    fn drop(&mut self) {
        let chosen = self.chosen.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for (dir, shared) in chosen.values() {
            if *shared {
                held.remove(dir);
            } else {
                let _ = fs::remove_dir_all(dir);
                let _ = fs::remove_dir_all(dir.with_extension("part"));
                let _ = fs::remove_file(dir.with_extension("used"));
            }
        }
    }
}

impl LocalSync for SessionSync {
    fn sync(
        &self,
        name: &str,
        follow: &[String],
        include: &[String],
        exclude: &[String],
    ) -> io::Result<()> {
        let key = format!("{name}\0{follow:?}\0{include:?}\0{exclude:?}");
        if self
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return Ok(());
        }
        if !self.session.serves(FILE_SYNC) {
            return Err(io::Error::other(format!(
                "no local sources enabled: the client offers no directories (local {name:?})"
            )));
        }
        let dir = self.mirror(name);
        let partial = dir.with_extension("part");
        fs::create_dir_all(&dir)?;
        // The daemon's prune keeps mirrors a sync used lately.
        fs::write(dir.with_extension("used"), b"")?;
        let mut md = MetadataMap::new();
        md.insert(
            "dir-name",
            MetadataValue::try_from(name).map_err(|e| bad(format!("local {name:?}: {e}")))?,
        );
        put_list(&mut md, "include-patterns", include)?;
        put_list(&mut md, "exclude-patterns", exclude)?;
        put_list(&mut md, "followpaths", follow)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let channel = self.session.channel.clone();
        let filters = LocalSource {
            dir: dir.clone(),
            follow: follow.to_vec(),
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        };
        let p = partial.clone();
        self.rt.spawn(async move {
            let _ = tx.send(receive(channel, md, filters, &p).await);
        });
        let started = std::time::Instant::now();
        let result = rx
            .recv()
            .map_err(|_| io::Error::other("the session went away"))?;
        if result.as_ref().is_ok_and(|(_, sent)| *sent > 0) || result.is_err() {
            let _ = fs::remove_dir_all(&partial);
        }
        let (listed, sent) =
            result.map_err(|e| io::Error::new(e.kind(), format!("local {name:?}: {e}")))?;
        tracing::debug!(
            "local {name:?} of session {}: {listed} entries listed, {sent} files sent, in {:?}",
            self.session.id,
            started.elapsed()
        );
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
        Ok(())
    }

    fn dir(&self, name: &str) -> Option<PathBuf> {
        let dir = self.mirror(name);
        fs::create_dir_all(&dir).ok()?;
        Some(dir)
    }
}

/// A file being received.
struct Incoming {
    file: fs::File,
    tmp: PathBuf,
    path: String,
    stat: Stat,
}

/// The receiving side of one DiffCopy into the directory of `filters`.
struct Receiver {
    /// The sync's filters, over the mirror.
    filters: LocalSource,
    /// Where files are staged, made when a first one comes.
    partial: PathBuf,
    listed: HashSet<String>,
    dirs: HashSet<String>,
    last: Option<String>,
    pending: HashMap<u32, Incoming>,
    links: Vec<(String, String)>,
    dir_stats: Vec<(String, Stat)>,
}

impl Receiver {
    fn new(filters: LocalSource, partial: PathBuf) -> Self {
        Receiver {
            filters,
            partial,
            listed: HashSet::new(),
            dirs: HashSet::new(),
            last: None,
            pending: HashMap::new(),
            links: Vec::new(),
            dir_stats: Vec::new(),
        }
    }

    /// One entry of the walk; `Some(id)` when its content is wanted.
    fn stat(&mut self, id: u32, stat: Stat) -> io::Result<Option<u32>> {
        let path = checked(&stat.path)?.to_string();
        if let Some(last) = &self.last
            && path_order(last, &path) != std::cmp::Ordering::Less
        {
            return Err(bad(format!(
                "changes out of order: {path:?} after {last:?}"
            )));
        }
        self.last = Some(path.clone());
        if let Some((parent, _)) = path.rsplit_once('/')
            && !self.dirs.contains(parent)
        {
            return Err(bad(format!(
                "{path:?}: its parent is not a directory of the walk"
            )));
        }
        self.listed.insert(path.clone());
        let target = self.filters.dir.join(&path);
        let mode = stat.mode;
        if mode & GO_DIR != 0 {
            if !fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                remove(&target)?;
                fs::create_dir(&target)?;
            }
            self.dirs.insert(path.clone());
            self.dir_stats.push((path, stat));
            return Ok(None);
        }
        if mode & GO_SYMLINK != 0 {
            let same = fs::read_link(&target).is_ok_and(|t| t == Path::new(&stat.linkname));
            if !same {
                remove(&target)?;
                symlink(&stat.linkname, &target)?;
            }
            return Ok(None);
        }
        if mode & (GO_DEVICE | GO_PIPE | GO_SOCKET | GO_CHAR | GO_IRREGULAR) != 0 {
            // Devices and pipes in a build context are not copied into images.
            self.listed.remove(&path);
            return Ok(None);
        }
        if !stat.linkname.is_empty() {
            let source = checked(&stat.linkname)?.to_string();
            if !self.listed.contains(&source) {
                return Err(bad(format!(
                    "invalid link {path:?} to unknown path {source:?}"
                )));
            }
            self.links.push((source, path));
            return Ok(None);
        }
        let unchanged = fs::symlink_metadata(&target).is_ok_and(|m| {
            m.is_file()
                && m.len() as i64 == stat.size
                && m.mtime() * 1_000_000_000 + m.mtime_nsec() == stat.mod_time
                && m.mode() & 0o7777 == unix_perm(mode)
        });
        if unchanged {
            return Ok(None);
        }
        if self.pending.is_empty() {
            fs::create_dir_all(&self.partial)?;
        }
        let tmp = self.partial.join(id.to_string());
        let file = fs::File::create(&tmp)?;
        self.pending.insert(
            id,
            Incoming {
                file,
                tmp,
                path,
                stat,
            },
        );
        Ok(Some(id))
    }

    /// A chunk of a requested file; the empty chunk ends it.
    fn data(&mut self, id: u32, data: &[u8]) -> io::Result<()> {
        let Some(incoming) = self.pending.get_mut(&id) else {
            return Err(bad(format!("invalid file request {id}")));
        };
        if !data.is_empty() {
            return incoming.file.write_all(data);
        }
        let done = self.pending.remove(&id).expect("looked up");
        drop(done.file);
        let target = self.filters.dir.join(&done.path);
        fs::set_permissions(
            &done.tmp,
            fs::Permissions::from_mode(unix_perm(done.stat.mode)),
        )?;
        if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&target)?;
        }
        fs::rename(&done.tmp, &target)?;
        buildwit_worker::fileops::set_mtime(&target, done.stat.mod_time)
    }

    /// After the walk: hard links, what the client no longer has, directory times.
    fn finish(mut self) -> io::Result<()> {
        for (source, path) in &self.links {
            let target = self.filters.dir.join(path);
            remove(&target)?;
            fs::hard_link(self.filters.dir.join(source), &target)?;
            self.listed.insert(path.clone());
        }
        // What the mirror has under the same filters but the client no longer does
        // (deepest first). Files of other filters stay for the syncs that use them.
        let ours = buildwit_worker::local::list(&self.filters)?;
        for rel in ours.keys().rev() {
            if !self.listed.contains(rel) {
                remove(&self.filters.dir.join(rel))?;
            }
        }
        // Deepest first: setting a directory's time must come after its contents change.
        self.dir_stats.sort_by(|a, b| path_order(&b.0, &a.0));
        for (path, stat) in &self.dir_stats {
            let target = self.filters.dir.join(path);
            fs::set_permissions(&target, fs::Permissions::from_mode(unix_perm(stat.mode)))?;
            buildwit_worker::fileops::set_mtime(&target, stat.mod_time)?;
        }
        Ok(())
    }
}

fn packet(kind: PacketType, id: u32, data: Vec<u8>) -> Packet {
    Packet {
        r#type: kind as i32,
        stat: None,
        id,
        data,
    }
}

/// Open a `DiffCopy` of fsutil packets (Go's stubs say `BytesMessage`; the stream carries
/// packets, so the codec is ours).
async fn diff_copy(
    channel: tonic::transport::Channel,
    method: &'static str,
    request: tonic::Request<ReceiverStream<Packet>>,
) -> io::Result<tonic::Streaming<Packet>> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(crate::MAX_MESSAGE)
        .max_encoding_message_size(4 << 20);
    grpc.ready()
        .await
        .map_err(|e| io::Error::other(format!("the session: {e}")))?;
    let codec = tonic_prost::ProstCodec::<Packet, Packet>::default();
    Ok(grpc
        .streaming(request, PathAndQuery::from_static(method), codec)
        .await
        .map_err(status_error)?
        .into_inner())
}

/// Receive one directory from the client into `dir`, staging files in `partial`; how
/// many entries the client listed, and how many files it sent.
async fn receive(
    channel: tonic::transport::Channel,
    metadata: MetadataMap,
    filters: LocalSource,
    partial: &Path,
) -> io::Result<(u32, u32)> {
    let (tx, rx) = mpsc::channel::<Packet>(64);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    *request.metadata_mut() = metadata;
    let mut inbound = diff_copy(channel, FILE_SYNC, request).await?;
    let mut transfer = Transfer::new(Receiver::new(filters, partial.to_path_buf()));
    let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the client went away");
    let mut done = false;
    while let Some(p) = inbound.message().await.map_err(status_error)? {
        let reply = match transfer.packet(p)? {
            Next::More => continue,
            Next::Request(id) => packet(PacketType::PacketReq, id, Vec::new()),
            Next::Done => packet(PacketType::PacketFin, 0, Vec::new()),
        };
        done = reply.r#type == PacketType::PacketFin as i32;
        tx.send(reply).await.map_err(|_| gone())?;
        if done {
            break;
        }
    }
    if !done {
        return Err(bad("the client ended the transfer early".into()));
    }
    // Everything is here: the client's own FIN and the end of the call need no waiting.
    tokio::spawn(async move {
        drop(tx);
        while let Ok(Some(_)) = inbound.message().await {}
    });
    let (listed, requested) = (transfer.next_id, transfer.requested);
    transfer.receiver.finish()?;
    Ok((listed, requested))
}

/// What the receiving side does after a packet of the client.
enum Next {
    /// Wait for more.
    More,
    /// Ask for the content of this entry.
    Request(u32),
    /// All entries and files are here: send FIN.
    Done,
}

/// The receiving side's state across the packets of one DiffCopy.
struct Transfer {
    receiver: Receiver,
    /// The id of the next STAT (its position in the walk).
    next_id: u32,
    walked: bool,
    requested: u32,
}

impl Transfer {
    fn new(receiver: Receiver) -> Self {
        Transfer {
            receiver,
            next_id: 0,
            walked: false,
            requested: 0,
        }
    }

    fn packet(&mut self, p: Packet) -> io::Result<Next> {
        match PacketType::try_from(p.r#type) {
            Ok(PacketType::PacketStat) => match p.stat {
                Some(stat) => {
                    if self.walked {
                        return Err(bad("the client sent entries after its walk".into()));
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    if let Some(id) = self.receiver.stat(id, stat)? {
                        self.requested += 1;
                        return Ok(Next::Request(id));
                    }
                }
                None => self.walked = true,
            },
            Ok(PacketType::PacketData) => self.receiver.data(p.id, &p.data)?,
            Ok(PacketType::PacketFin) => {
                return Err(bad("the client ended the transfer early".into()));
            }
            Ok(PacketType::PacketErr) => {
                return Err(io::Error::other(format!(
                    "the client: {}",
                    String::from_utf8_lossy(&p.data)
                )));
            }
            _ => return Err(bad(format!("unexpected packet type {}", p.r#type))),
        }
        Ok(match self.walked && self.receiver.pending.is_empty() {
            true => Next::Done,
            false => Next::More,
        })
    }
}

/// A client's DiffCopy packets into the mirror `dir` (files staged in `partial`), as a sync
/// receives them, without the session: for the fuzz target, which checks that nothing is
/// written outside `dir` and `partial`, whatever the packets say.
#[doc(hidden)]
pub fn receive_packets(
    dir: &Path,
    partial: &Path,
    packets: impl IntoIterator<Item = Packet>,
) -> io::Result<()> {
    let filters = LocalSource {
        dir: dir.to_path_buf(),
        follow: Vec::new(),
        include: Vec::new(),
        exclude: Vec::new(),
    };
    let mut transfer = Transfer::new(Receiver::new(filters, partial.to_path_buf()));
    for p in packets {
        if let Next::Done = transfer.packet(p)? {
            return transfer.receiver.finish();
        }
    }
    Err(bad("the client ended the transfer early".into()))
}

/// An entry of a directory being sent.
struct Outgoing {
    stat: Stat,
    /// The file to read, for regular files.
    file: Option<PathBuf>,
}

/// Walk `dir` in fsutil's order: depth first, names in byte order.
fn walk(dir: &Path) -> io::Result<Vec<Outgoing>> {
    let mut out = Vec::new();
    fn visit(dir: &Path, rel: &str, out: &mut Vec<Outgoing>) -> io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir.join(rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for name in names {
            let name = name.to_string_lossy();
            let child = if rel.is_empty() {
                name.into_owned()
            } else {
                format!("{rel}/{name}")
            };
            let path = dir.join(&child);
            let md = fs::symlink_metadata(&path)?;
            let t = md.file_type();
            let linkname = if t.is_symlink() {
                fs::read_link(&path)?.to_string_lossy().into_owned()
            } else {
                String::new()
            };
            if !(t.is_dir() || t.is_symlink() || t.is_file()) {
                continue;
            }
            out.push(Outgoing {
                stat: Stat {
                    path: child.clone(),
                    mode: go_mode(&md),
                    uid: md.uid(),
                    gid: md.gid(),
                    size: if t.is_dir() { 0 } else { md.len() as i64 },
                    mod_time: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                    linkname,
                    ..Default::default()
                },
                file: t.is_file().then(|| path.clone()),
            });
            if t.is_dir() {
                visit(dir, &child, out)?;
            }
        }
        Ok(())
    }
    visit(dir, "", &mut out)?;
    Ok(out)
}

/// Send directory `dir` to the client's output target `exporter` (a `local` output).
pub async fn send_dir(session: &ClientSession, exporter: usize, dir: &Path) -> io::Result<()> {
    if !session.serves(FILE_SEND) {
        return Err(io::Error::other(
            "the client takes no outputs (it serves no FileSend)",
        ));
    }
    let entries = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || walk(&dir))
            .await
            .map_err(io::Error::other)??
    };
    let (tx, rx) = mpsc::channel::<Packet>(64);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "buildkit-attachable-exporter-id",
        MetadataValue::from(exporter as u64),
    );
    let stats: Vec<Stat> = entries.iter().map(|e| e.stat.clone()).collect();
    let walker = tx.clone();
    tokio::spawn(async move {
        for stat in stats {
            let p = Packet {
                r#type: PacketType::PacketStat as i32,
                stat: Some(stat),
                id: 0,
                data: Vec::new(),
            };
            if walker.send(p).await.is_err() {
                return;
            }
        }
        let _ = walker
            .send(packet(PacketType::PacketStat, 0, Vec::new()))
            .await;
    });
    let mut inbound = diff_copy(session.channel.clone(), FILE_SEND, request).await?;
    let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the client went away");
    while let Some(p) = inbound.message().await.map_err(status_error)? {
        match PacketType::try_from(p.r#type) {
            Ok(PacketType::PacketReq) => {
                let Some(path) = entries.get(p.id as usize).and_then(|e| e.file.clone()) else {
                    return Err(bad(format!(
                        "the client asked for entry {}, not a file",
                        p.id
                    )));
                };
                let tx = tx.clone();
                let id = p.id;
                // Read off the runtime; chunks go out as the client takes them.
                tokio::task::spawn_blocking(move || -> io::Result<()> {
                    let mut file = fs::File::open(&path)?;
                    loop {
                        let mut data = vec![0; CHUNK];
                        let n = file.read(&mut data)?;
                        data.truncate(n);
                        tx.blocking_send(packet(PacketType::PacketData, id, data))
                            .map_err(|_| gone())?;
                        if n == 0 {
                            return Ok(());
                        }
                    }
                })
                .await
                .map_err(io::Error::other)??;
            }
            Ok(PacketType::PacketFin) => {
                tx.send(packet(PacketType::PacketFin, 0, Vec::new()))
                    .await
                    .map_err(|_| gone())?;
                break;
            }
            Ok(PacketType::PacketErr) => {
                return Err(io::Error::other(format!(
                    "the client: {}",
                    String::from_utf8_lossy(&p.data)
                )));
            }
            _ => return Err(bad(format!("unexpected packet type {}", p.r#type))),
        }
    }
    drop(tx);
    while inbound.message().await.map_err(status_error)?.is_some() {}
    Ok(())
}

/// Send file `path` to the client's output target `exporter` (a `tar`, `oci` or `docker`
/// output), with the exporter's response as `exporter-md-` metadata.
pub async fn send_file(
    session: &ClientSession,
    exporter: usize,
    path: &Path,
    response: &[(String, String)],
) -> io::Result<()> {
    if !session.serves(FILE_SEND) {
        return Err(io::Error::other(
            "the client takes no outputs (it serves no FileSend)",
        ));
    }
    let (tx, rx) = mpsc::channel::<BytesMessage>(4);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let md = request.metadata_mut();
    md.insert(
        "buildkit-attachable-exporter-id",
        MetadataValue::from(exporter as u64),
    );
    for (k, v) in response {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(format!("exporter-md-{k}").as_bytes()),
            MetadataValue::try_from(v.as_str()),
        ) {
            md.insert(key, value);
        }
    }
    let path = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || -> io::Result<()> {
        let mut file = fs::File::open(&path)?;
        loop {
            let mut data = vec![0; CHUNK];
            let n = file.read(&mut data)?;
            if n == 0 {
                return Ok(());
            }
            data.truncate(n);
            if tx.blocking_send(BytesMessage { data }).is_err() {
                return Ok(());
            }
        }
    });
    let mut client = FileSendClient::new(session.channel.clone())
        .max_decoding_message_size(crate::MAX_MESSAGE)
        .max_encoding_message_size(4 << 20);
    let result = async {
        let mut inbound = client.diff_copy(request).await?.into_inner();
        while inbound.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    }
    .await;
    reader.await.map_err(io::Error::other)??;
    match result {
        // The client's target refused (it exists): BuildKit counts that as done.
        Err(e) if e.code() == tonic::Code::AlreadyExists => Ok(()),
        r => r.map_err(status_error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(path: &str, mode: u32, size: i64, linkname: &str) -> Stat {
        Stat {
            path: path.into(),
            mode,
            size,
            mod_time: 1_700_000_000_000_000_000,
            linkname: linkname.into(),
            ..Default::default()
        }
    }

    fn receiver(dir: &Path, partial: &Path) -> Receiver {
        let filters = LocalSource {
            dir: dir.to_path_buf(),
            follow: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
        };
        Receiver::new(filters, partial.to_path_buf())
    }

    /// One walk: entries, then the data of each requested file; the requested ids.
    fn sync(dir: &Path, walk: &[(Stat, &[u8])]) -> io::Result<Vec<u32>> {
        let partial = dir.with_extension("part");
        fs::create_dir_all(&partial)?;
        let mut r = receiver(dir, &partial);
        let mut wanted = Vec::new();
        for (i, (s, _)) in walk.iter().enumerate() {
            if let Some(id) = r.stat(i as u32, s.clone())? {
                wanted.push(id);
            }
        }
        for id in &wanted {
            r.data(*id, walk[*id as usize].1)?;
            r.data(*id, b"")?;
        }
        r.finish()?;
        Ok(wanted)
    }

    fn stat_packet(s: Option<Stat>) -> Packet {
        Packet {
            r#type: PacketType::PacketStat as i32,
            stat: s,
            id: 0,
            data: Vec::new(),
        }
    }

    #[test]
    fn packets_as_a_client_sends_them_fill_the_mirror_and_a_cut_transfer_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, partial) = (tmp.path().join("m"), tmp.path().join("part"));
        fs::create_dir(&dir).unwrap();
        let walk = || {
            vec![
                stat_packet(Some(stat("a.txt", 0o644, 2, ""))),
                stat_packet(None),
                packet(PacketType::PacketData, 0, b"hi".to_vec()),
                packet(PacketType::PacketData, 0, Vec::new()),
            ]
        };
        receive_packets(&dir, &partial, walk()).unwrap();
        assert_eq!(fs::read(dir.join("a.txt")).unwrap(), b"hi");
        // Into a new mirror, where the file is wanted: its data never ends.
        let fresh = tmp.path().join("m2");
        fs::create_dir(&fresh).unwrap();
        let mut cut = walk();
        cut.truncate(3);
        let err = receive_packets(&fresh, &partial, cut).unwrap_err();
        assert!(
            err.to_string().contains("ended the transfer early"),
            "{err}"
        );
        let mut fin = walk();
        fin.insert(1, packet(PacketType::PacketFin, 0, Vec::new()));
        assert!(receive_packets(&fresh, &partial, fin).is_err());
    }

    #[test]
    fn a_mirror_gets_the_walk_and_later_only_what_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        fs::create_dir(&dir).unwrap();
        let walk: Vec<(Stat, &[u8])> = vec![
            (stat("a.txt", 0o644, 5, ""), b"hello"),
            (stat("bin", GO_DIR | 0o755, 0, ""), b""),
            (stat("bin/run", 0o755 | GO_SETUID, 2, ""), b"#!"),
            (stat("bin/same", 0o644, 0, "a.txt"), b""),
            (stat("link", GO_SYMLINK | 0o777, 5, "a.txt"), b""),
            (stat("old", 0o644, 3, ""), b"old"),
        ];
        assert_eq!(sync(&dir, &walk).unwrap(), vec![0, 2, 5]);
        assert_eq!(fs::read(dir.join("bin/same")).unwrap(), b"hello");
        assert_eq!(
            fs::metadata(dir.join("bin/same")).unwrap().ino(),
            fs::metadata(dir.join("a.txt")).unwrap().ino()
        );
        assert_eq!(
            fs::metadata(dir.join("bin/run")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert_eq!(fs::read_link(dir.join("link")).unwrap(), Path::new("a.txt"));
        // Unchanged files are not asked for again; a file the client no longer has goes.
        let again: Vec<_> = walk[..5].to_vec();
        assert_eq!(sync(&dir, &again).unwrap(), Vec::<u32>::new());
        assert!(!dir.join("old").exists());
        assert_eq!(fs::read(dir.join("a.txt")).unwrap(), b"hello");
    }

    #[test]
    fn a_walk_that_would_leave_the_mirror_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        fs::create_dir(&dir).unwrap();
        let refused = |walk: Vec<(Stat, &[u8])>, why: &str| {
            let e = sync(&dir, &walk).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        };
        refused(
            vec![(stat("../x", 0o644, 1, ""), b"x")],
            "clean relative path",
        );
        refused(
            vec![(stat("/etc/x", 0o644, 1, ""), b"x")],
            "clean relative path",
        );
        refused(
            vec![(stat("a/./b", 0o644, 1, ""), b"x")],
            "clean relative path",
        );
        // A file under a symlink that points out of the mirror.
        refused(
            vec![
                (stat("out", GO_SYMLINK | 0o777, 4, "/tmp"), b""),
                (stat("out/x", 0o644, 1, ""), b"x"),
            ],
            "parent is not a directory",
        );
        refused(
            vec![
                (stat("b", 0o644, 1, ""), b"x"),
                (stat("a", 0o644, 1, ""), b"x"),
            ],
            "out of order",
        );
        refused(vec![(stat("l", 0o644, 0, "nowhere"), b"")], "unknown path");
        assert!(!tmp.path().join("x").exists());
        // Data for a file nobody asked for.
        let partial = tmp.path().join("p");
        fs::create_dir_all(&partial).unwrap();
        let mut r = receiver(&dir, &partial);
        assert!(
            r.data(7, b"x")
                .unwrap_err()
                .to_string()
                .contains("invalid file request")
        );
    }

    #[test]
    fn go_modes_and_paths_order_as_fsutil_does() {
        assert_eq!(unix_perm(GO_SETUID | GO_SETGID | GO_STICKY | 0o755), 0o7755);
        assert_eq!(path_order("a/b", "a-b"), std::cmp::Ordering::Less);
        assert_eq!(path_order("a", "a/b"), std::cmp::Ordering::Less);
        assert_eq!(percent("ü b"), "%C3%BC+b");
    }
}
