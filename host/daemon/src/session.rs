//! A remote client's side of a build in buildwitd: its local directories are mirrored
//! under the daemon's root, and synced lazily when the build reads one. The daemon sends
//! the filters of the source that reads it; the client lists the paths they select (no
//! content); the daemon compares the listing with its mirror and asks for the changed
//! files only. An unchanged context therefore costs one listing.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use buildwit_engine::ClientCacheDirs;
use buildwit_worker::fileops::remove;
use buildwit_worker::local::{Entry, Kind, LocalSource, list};
use buildwit_worker::{ContentStore, LocalSync};
use tokio::sync::mpsc::UnboundedSender;

use crate::grpc::proto::{self, build_server_message::Msg};

/// Which mirror directories a build holds. A build holds its mirrors from its first sync
/// to its end, so no other build's sync changes a directory while it is scanned, copied
/// or read (a file turned into a symlink half way through a scan, say). A build takes all
/// of its mirrors at once, so two builds never wait on each other.
#[derive(Default)]
pub struct Mirrors {
    held: Mutex<HashSet<PathBuf>>,
    freed: std::sync::Condvar,
    /// What each mirror holds since its last change, as the listings that found it so.
    synced: Mutex<std::collections::HashMap<PathBuf, MirrorState>>,
}

/// A mirror as the syncs since its last change left it: the directory (by device, inode
/// and birth time, so a mirror pruned and made again is another one) and the digest of
/// each listing (by its filters) that found nothing to change in it.
struct MirrorState {
    born: (u64, u64, i64, u32),
    listings: std::collections::HashMap<String, [u8; 32]>,
    /// Its content's version: new whenever a sync changes it.
    version: u64,
    /// When a sync last recorded or trusted it (a tick of [`NEXT_USE`]), to drop the
    /// least recently used first.
    used: u64,
}

/// Mirrors whose state [`Mirrors::record`] keeps at most. A mirror lives on disk for
/// [`buildwit_engine::client::MIRROR_MAX_AGE`] (a week) after its last use, and a client
/// that builds a context from a new directory each time (a fresh checkout in CI) makes a
/// new one with every build: kept for every mirror on disk, the map grew by about 1 KiB a
/// build. A mirror whose state was dropped is only compared with the client's listing in
/// full at its next sync, and its scan walked again.
const MAX_SYNCED: usize = 1024;

/// Ticks of mirror use, for [`MirrorState::used`].
static NEXT_USE: AtomicU64 = AtomicU64::new(0);

/// Versions of mirrors, unique in this process.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(0);

/// What tells this process's mirror versions from another's (a scan cache outlives the
/// daemon).
fn process_nonce() -> &'static str {
    static NONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NONCE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("{}-{}", std::process::id(), now.as_nanos())
    })
}

/// A directory's identity, if the filesystem keeps birth times.
fn identity(dir: &Path) -> Option<(u64, u64, i64, u32)> {
    use rustix::fs::{AtFlags, CWD, StatxFlags, statx};
    let st = statx(
        CWD,
        dir,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::INO | StatxFlags::BTIME,
    )
    .ok()?;
    (st.stx_mask & StatxFlags::BTIME.bits() != 0).then(|| {
        (
            rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            st.stx_ino,
            st.stx_btime.tv_sec,
            st.stx_btime.tv_nsec,
        )
    })
}

/// The digest of a client's listing: every field the sync compares.
fn listing_digest(theirs: &BTreeMap<String, (Kind, proto::FileStat)>) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for (rel, (_, e)) in theirs {
        h.update(rel.as_bytes());
        h.update([0]);
        h.update(e.kind.to_le_bytes());
        h.update(e.mode.to_le_bytes());
        h.update(e.size.to_le_bytes());
        h.update(e.mtime_ns.to_le_bytes());
        h.update(e.target.as_bytes());
        h.update([0]);
        h.update(e.link.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

impl Mirrors {
    /// Wait until none of `dirs` is held, then hold them all; fails once `cancelled`.
    fn hold(
        self: &Arc<Self>,
        dirs: Vec<PathBuf>,
        cancelled: &AtomicBool,
    ) -> io::Result<MirrorLease> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while dirs.iter().any(|d| held.contains(d)) {
            if cancelled.load(Ordering::Relaxed) {
                return Err(io::Error::other("the build was cancelled"));
            }
            held = self
                .freed
                .wait_timeout(held, std::time::Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        held.extend(dirs.iter().cloned());
        Ok(MirrorLease {
            mirrors: self.clone(),
            dirs,
        })
    }

    /// Whether `dir` is as it was when a listing with this digest found nothing to change.
    fn unchanged(&self, dir: &Path, filters: &str, digest: &[u8; 32]) -> bool {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        synced.get_mut(dir).is_some_and(|m| {
            let trusted = m.listings.get(filters) == Some(digest) && identity(dir) == Some(m.born);
            if trusted {
                m.used = NEXT_USE.fetch_add(1, Ordering::Relaxed);
            }
            trusted
        })
    }

    /// A sync of `dir` is about to change it, or may have (it failed half way).
    fn forget(&self, dir: &Path) {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        synced.remove(dir);
    }

    /// A sync of `dir` with a listing of this digest ended; `changed`: it changed the mirror
    /// (what other listings found no longer holds).
    fn record(&self, dir: &Path, filters: String, digest: [u8; 32], changed: bool) {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let Some(born) = identity(dir) else {
            synced.remove(dir);
            return;
        };
        // Full: drop what no longer exists on disk (mirrors are pruned by age and made
        // again), then, if that was not enough, all but the most recently used half, so
        // that the map stays small however many mirrors the disk holds.
        if !synced.contains_key(dir) && synced.len() >= MAX_SYNCED {
            synced.retain(|d, m| identity(d) == Some(m.born));
            let keep = MAX_SYNCED / 2;
            if synced.len() > keep {
                let mut used: Vec<u64> = synced.values().map(|m| m.used).collect();
                let cut = used.len() - keep;
                let oldest_kept = *used.select_nth_unstable(cut).1;
                synced.retain(|_, m| m.used >= oldest_kept);
            }
        }
        let state = synced
            .entry(dir.to_path_buf())
            .or_insert_with(|| MirrorState {
                born,
                listings: Default::default(),
                version: NEXT_VERSION.fetch_add(1, Ordering::Relaxed),
                used: 0,
            });
        state.used = NEXT_USE.fetch_add(1, Ordering::Relaxed);
        if changed || state.born != born {
            state.born = born;
            state.listings.clear();
            state.version = NEXT_VERSION.fetch_add(1, Ordering::Relaxed);
        }
        state.listings.insert(filters, digest);
    }

    /// The version of what `dir` holds, while a sync vouches for it.
    fn version(&self, dir: &Path) -> Option<String> {
        let synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let state = synced.get(dir)?;
        (identity(dir) == Some(state.born))
            .then(|| format!("{}-{}", process_nonce(), state.version))
    }
}

/// A build's hold on its mirror directories; dropping it frees them.
struct MirrorLease {
    mirrors: Arc<Mirrors>,
    dirs: Vec<PathBuf>,
}

impl Drop for MirrorLease {
    fn drop(&mut self) {
        let mut held = self.mirrors.held.lock().unwrap_or_else(|e| e.into_inner());
        for d in &self.dirs {
            held.remove(d);
        }
        self.mirrors.freed.notify_all();
    }
}

/// The local name under which a client offers the cache directory at `path`: the same
/// for an import and an export of one directory, so both use one mirror.
pub fn cache_local(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(path.as_os_str().as_bytes());
    format!("cache:{}", hex::encode(&digest[..8]))
}

/// Whether a local name is one of [`cache_local`]'s.
pub fn is_cache_local(name: &str) -> bool {
    name.starts_with("cache:")
}

/// What the client sends back while a sync waits.
pub enum Reply {
    /// The listing for a request.
    Listing(proto::LocalListing),
    /// Part of a requested file.
    File(proto::FileChunk),
    /// The client could not answer.
    Failure(proto::SyncFailure),
}

/// Where a build's messages to its client go; closed once the build has answered.
pub struct Outbox {
    tx: Mutex<Option<UnboundedSender<Result<proto::BuildServerMessage, tonic::Status>>>>,
    /// Set when the client is gone.
    pub cancelled: Arc<AtomicBool>,
    /// Output bytes queued but not yet taken by the response stream.
    pub queued: Arc<Queued>,
}

/// Output bytes on their way to a client: a sender waits while too many are, so a slow
/// client does not make the daemon hold a whole image in memory.
#[derive(Default)]
pub struct Queued {
    bytes: Mutex<u64>,
    taken: std::sync::Condvar,
}

impl Queued {
    /// At most this many output bytes wait for a client.
    const LIMIT: u64 = 16 << 20;

    /// The response stream took a chunk of `n` bytes.
    pub fn taken(&self, n: u64) {
        let mut bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        *bytes = bytes.saturating_sub(n);
        self.taken.notify_all();
    }
}

impl Outbox {
    /// An outbox over a response stream.
    pub fn new(
        tx: UnboundedSender<Result<proto::BuildServerMessage, tonic::Status>>,
        cancelled: Arc<AtomicBool>,
    ) -> Self {
        Outbox {
            tx: Mutex::new(Some(tx)),
            cancelled,
            queued: Arc::default(),
        }
    }

    /// Send a chunk of an output once the client has taken enough of the earlier ones
    /// (blocking: call it off the async runtime). False when the client is gone.
    pub fn send_output(&self, chunk: proto::OutputChunk) -> bool {
        let n = chunk.data.len() as u64;
        self.send_queued(Msg::Output(chunk), n)
    }

    /// Send a message carrying `n` bytes of file data, waiting while too many are queued.
    fn send_queued(&self, msg: Msg, n: u64) -> bool {
        let mut bytes = self.queued.bytes.lock().unwrap_or_else(|e| e.into_inner());
        while *bytes > 0 && *bytes + n > Queued::LIMIT {
            if self.cancelled.load(Ordering::Relaxed) {
                return false;
            }
            bytes = self
                .queued
                .taken
                .wait_timeout(bytes, std::time::Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *bytes += n;
        drop(bytes);
        self.send(msg)
    }

    /// Send a message; false (and the build cancelled) when the client is gone.
    pub fn send(&self, msg: Msg) -> bool {
        self.send_raw(Ok(proto::BuildServerMessage { msg: Some(msg) }))
    }

    /// Send a message or the final error status.
    pub fn send_raw(&self, item: Result<proto::BuildServerMessage, tonic::Status>) -> bool {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let sent = tx.as_ref().is_some_and(|tx| tx.send(item).is_ok());
        if !sent {
            self.cancelled.store(true, Ordering::Relaxed);
        }
        sent
    }

    /// End the response stream.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The client's answers, as the connection reads them. Bounded: a client sending files
/// faster than the daemon writes them waits (HTTP/2 flow control) rather than filling the
/// daemon's memory.
pub type Replies = tokio::sync::mpsc::Receiver<Reply>;

/// Answers read ahead of the sync at most (file chunks are at most 1 MiB each).
pub const REPLIES_AHEAD: usize = 64;

/// A local name and the follow, include and exclude filters it was synced with.
type Synced = (String, Vec<String>, Vec<String>, Vec<String>);

/// The daemon's side of one build's file sync.
pub struct ClientSync {
    outbox: Arc<Outbox>,
    /// The daemon's blobs: a cache directory's blob found here is not sent again.
    content: Option<ContentStore>,
    replies: Mutex<Replies>,
    /// Mirror directory by local name (only the names the client offered).
    dirs: BTreeMap<String, PathBuf>,
    mirrors: Arc<Mirrors>,
    /// This build's hold on all of its mirrors, from its first sync until it ends.
    lease: Mutex<Option<MirrorLease>>,
    /// Set when the client went away.
    cancelled: Arc<AtomicBool>,
    /// Filters already synced in this build: the client's files do not change under it.
    done: Mutex<HashSet<Synced>>,
    next: AtomicU64,
    /// Bytes and files received, for the log.
    received: AtomicU64,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the client went away")
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A relative path a client may name: plain components only.
fn checked(path: &str) -> io::Result<&str> {
    let p = Path::new(path);
    let plain = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(path)
    } else {
        Err(bad(format!(
            "the client listed {path:?}, which is not a relative path inside the directory"
        )))
    }
}

/// Fail if a parent of `rel` in `dir` is a symlink, so a write cannot leave the mirror.
fn parents_are_dirs(dir: &Path, rel: &str) -> io::Result<()> {
    let mut p = dir.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        p.push(part);
        // Named relative to the directory: the daemon's paths are not the client's business.
        let parent = parts[..=i].join("/");
        let md = fs::symlink_metadata(&p).map_err(|e| bad(format!("{parent}: {e}")))?;
        if !md.is_dir() {
            return Err(bad(format!(
                "{rel}: {parent} is not a directory in the client's listing"
            )));
        }
    }
    Ok(())
}

impl std::fmt::Debug for ClientSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSync")
            .field("dirs", &self.dirs)
            .finish_non_exhaustive()
    }
}

/// Move a received file into the mirror with the client's mode and mtime.
fn place(tmp: &Path, path: &Path, stat: &proto::FileStat) -> io::Result<()> {
    fs::set_permissions(tmp, fs::Permissions::from_mode(stat.mode))?;
    fs::rename(tmp, path)?;
    buildwit_worker::fileops::set_mtime(path, stat.mtime_ns)
}

impl ClientSync {
    /// A sync for the locals in `dirs`, talking through `outbox` and reading `replies`;
    /// `content` is the daemon's content store, if it has one open.
    pub fn new(
        outbox: Arc<Outbox>,
        replies: Replies,
        dirs: BTreeMap<String, PathBuf>,
        mirrors: Arc<Mirrors>,
        content: Option<ContentStore>,
        cancelled: Arc<AtomicBool>,
    ) -> Self {
        ClientSync {
            outbox,
            content,
            replies: Mutex::new(replies),
            dirs,
            mirrors,
            lease: Mutex::new(None),
            cancelled,
            done: Mutex::new(HashSet::new()),
            next: AtomicU64::new(1),
            received: AtomicU64::new(0),
        }
    }

    /// Hold this build's mirrors (all of them, the first time), so that no other build
    /// changes them until [`ClientSync::release`].
    fn hold_mirrors(&self) -> io::Result<()> {
        let mut lease = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        if lease.is_none() {
            let dirs = self.dirs.values().cloned().collect();
            *lease = Some(self.mirrors.hold(dirs, &self.cancelled)?);
        }
        Ok(())
    }

    /// The build is over: other builds may sync its mirrors now.
    pub fn release(&self) {
        self.lease.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Bytes of file content received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn reply(replies: &mut Replies, id: u64) -> io::Result<Reply> {
        let reply = replies.blocking_recv().ok_or_else(gone)?;
        let got = match &reply {
            Reply::Listing(l) => l.id,
            Reply::File(f) => f.id,
            Reply::Failure(f) => f.id,
        };
        if let Reply::Failure(f) = &reply {
            return Err(io::Error::other(format!("the client: {}", f.message)));
        }
        if got != id {
            return Err(bad(format!(
                "the client answered request {got} while request {id} was open"
            )));
        }
        Ok(reply)
    }

    fn exchange(
        &self,
        name: &str,
        dir: &Path,
        source: &LocalSource,
        replies: &mut Replies,
    ) -> io::Result<()> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let request = proto::LocalRequest {
            id,
            name: name.to_string(),
            follow_paths: source.follow.clone(),
            include_patterns: source.include.clone(),
            exclude_patterns: source.exclude.clone(),
        };
        if !self.outbox.send(Msg::Local(request)) {
            return Err(gone());
        }
        let Reply::Listing(listing) = Self::reply(replies, id)? else {
            return Err(bad(format!(
                "the client sent file content before listing local {name:?}"
            )));
        };
        // The daemon itself writes into cache directories and reads layouts by path: a
        // symlink there would take it outside the mirror.
        let plain_files =
            is_cache_local(name) || buildwit_worker::Session::layout_store(name).is_some();
        let mut theirs = BTreeMap::new();
        for e in listing.entries {
            let kind = match proto::FileKind::try_from(e.kind) {
                Ok(proto::FileKind::Dir) => Kind::Dir,
                Ok(proto::FileKind::File) => Kind::File,
                Ok(proto::FileKind::Symlink) if plain_files => {
                    return Err(bad(format!(
                        "{}: a cache directory or OCI layout sent to buildwitd may not hold symlinks",
                        e.path
                    )));
                }
                Ok(proto::FileKind::Symlink) => Kind::Symlink,
                Err(_) => return Err(bad(format!("{}: unknown file kind {}", e.path, e.kind))),
            };
            checked(&e.path)?;
            theirs.insert(e.path.clone(), (kind, e));
        }
        // The listing that last found this mirror as it is: nothing to compare on disk.
        let filters = format!("{:?}", (&source.follow, &source.include, &source.exclude));
        let digest = listing_digest(&theirs);
        if self.mirrors.unchanged(dir, &filters, &digest) {
            tracing::debug!(
                local = name,
                listed = theirs.len(),
                "a local directory is unchanged"
            );
            return Ok(());
        }
        match self.update_mirror(id, name, dir, source, &theirs, replies) {
            Ok(changed) => {
                self.mirrors.record(dir, filters, digest, changed);
                Ok(())
            }
            Err(e) => {
                // It may have changed the mirror half way.
                self.mirrors.forget(dir);
                Err(e)
            }
        }
    }

    /// Make the mirror `dir` hold what the client listed (`theirs`), fetching the files it
    /// lacks; whether anything in it changed.
    fn update_mirror(
        &self,
        id: u64,
        name: &str,
        dir: &Path,
        source: &LocalSource,
        theirs: &BTreeMap<String, (Kind, proto::FileStat)>,
        replies: &mut Replies,
    ) -> io::Result<bool> {
        let mut changed = false;
        let ours = list(source).map_err(|e| {
            io::Error::new(e.kind(), format!("the mirror of {name:?}: {}", e.kind()))
        })?;
        // Gone, or of another kind: removed (deepest first, so directories go last).
        for (rel, mine) in ours.iter().rev() {
            if theirs.get(rel).is_none_or(|(k, _)| *k != mine.kind) {
                remove(&dir.join(rel))?;
                changed = true;
            }
        }
        let mut wanted = Vec::new();
        let mut links = Vec::new();
        for (rel, (kind, e)) in theirs {
            parents_are_dirs(dir, rel)?;
            let path = dir.join(rel);
            let mine: Option<&Entry> = ours.get(rel).filter(|m| m.kind == *kind);
            match kind {
                Kind::Dir => {
                    // What is there decides, not `ours`: a listing under other filters may
                    // have left a symlink here, and chmod must never follow one.
                    let real_dir = match fs::symlink_metadata(&path) {
                        Ok(md) if md.is_dir() => true,
                        Ok(_) => {
                            remove(&path)?;
                            false
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                        Err(e) => return Err(e),
                    };
                    if !real_dir {
                        fs::create_dir(&path)?;
                    }
                    if !real_dir || mine.is_none_or(|m| m.mode != e.mode) {
                        fs::set_permissions(&path, fs::Permissions::from_mode(e.mode))?;
                        changed = true;
                    }
                }
                Kind::Symlink => {
                    if mine.is_none_or(|m| m.hash != e.target) {
                        remove(&path)?;
                        symlink(&e.target, &path)?;
                        changed = true;
                    }
                }
                // A hard link is made once its target is there.
                Kind::File if !e.link.is_empty() => {
                    let target = checked(&e.link)?;
                    if theirs
                        .get(target)
                        .is_none_or(|(k, t)| *k != Kind::File || !t.link.is_empty())
                    {
                        return Err(bad(format!(
                            "{rel}: a hard link of {target:?}, which the listing has no file at"
                        )));
                    }
                    links.push((rel.clone(), target.to_string()));
                }
                Kind::File => match mine {
                    // `ours` saw a regular file here (it does not follow symlinks).
                    Some(m) if m.size == e.size && m.mtime == e.mtime_ns => {
                        if m.mode != e.mode {
                            fs::set_permissions(&path, fs::Permissions::from_mode(e.mode))?;
                            changed = true;
                        }
                    }
                    _ if self.copy_from_store(name, dir, rel, e)? => changed = true,
                    _ => wanted.push(rel.clone()),
                },
            }
        }
        if !wanted.is_empty() {
            self.fetch(id, dir, &wanted, theirs, replies)?;
            changed = true;
        }
        for (rel, target) in links {
            use std::os::unix::fs::MetadataExt;
            let (path, target) = (dir.join(&rel), dir.join(&target));
            let linked = match (path.symlink_metadata(), target.symlink_metadata()) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !linked {
                remove(&path)?;
                fs::hard_link(&target, &path)?;
                changed = true;
            }
        }
        // Directory times last: writing their children changed them.
        let mut times_set = false;
        for (rel, (kind, e)) in theirs.iter().rev() {
            let same = ours
                .get(rel)
                .is_some_and(|m| m.kind == Kind::Dir && m.mtime == e.mtime_ns);
            if *kind == Kind::Dir && (changed || !same) {
                buildwit_worker::fileops::set_mtime(&dir.join(rel), e.mtime_ns)?;
                times_set = true;
            }
        }
        tracing::debug!(
            local = name,
            listed = theirs.len(),
            fetched = wanted.len(),
            changed = changed || times_set,
            "synced a local directory"
        );
        Ok(changed || times_set)
    }

    fn fetch(
        &self,
        id: u64,
        dir: &Path,
        wanted: &[String],
        theirs: &BTreeMap<String, (Kind, proto::FileStat)>,
        replies: &mut Replies,
    ) -> io::Result<()> {
        let request = proto::FileRequest {
            id,
            paths: wanted.to_vec(),
        };
        if !self.outbox.send(Msg::Files(request)) {
            return Err(gone());
        }
        let wanted: HashSet<&str> = wanted.iter().map(String::as_str).collect();
        // Partial files live beside the mirror, never in it, so a scan cannot see them.
        let parts = dir.with_extension("part");
        fs::create_dir_all(&parts)?;
        let mut open: Option<(String, PathBuf, fs::File)> = None;
        let mut finished = 0;
        loop {
            let Reply::File(chunk) = Self::reply(replies, id)? else {
                return Err(bad("the client sent a listing while sending files".into()));
            };
            if chunk.path.is_empty() {
                break;
            }
            match &open {
                Some((rel, _, _)) if *rel == chunk.path => {}
                Some((rel, _, _)) => {
                    return Err(bad(format!(
                        "the client sent {:?} before finishing {rel:?}",
                        chunk.path
                    )));
                }
                None if !wanted.contains(chunk.path.as_str()) => {
                    return Err(bad(format!(
                        "the client sent {:?}, which was not asked for",
                        chunk.path
                    )));
                }
                None => {
                    let tmp = parts.join(format!("{id}-{finished}"));
                    let file = fs::File::create(&tmp)?;
                    open = Some((chunk.path.clone(), tmp, file));
                }
            }
            let Some((_, _, file)) = open.as_mut() else {
                unreachable!("a file was just opened")
            };
            file.write_all(&chunk.data)?;
            self.received
                .fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
            if chunk.last {
                let Some((rel, tmp, file)) = open.take() else {
                    unreachable!("a file is open")
                };
                drop(file);
                place(&tmp, &dir.join(&rel), &theirs[rel.as_str()].1)?;
                finished += 1;
            }
        }
        if finished != wanted.len() {
            return Err(bad(format!(
                "the client sent {finished} of the {} files asked for",
                wanted.len()
            )));
        }
        Ok(())
    }
}

impl ClientSync {
    /// A cache directory names its blobs by digest: one the daemon's content store holds
    /// is copied from there rather than sent. True when it was.
    fn copy_from_store(
        &self,
        name: &str,
        dir: &Path,
        rel: &str,
        stat: &proto::FileStat,
    ) -> io::Result<bool> {
        let (Some(content), true) = (&self.content, is_cache_local(name)) else {
            return Ok(false);
        };
        let Some(hex) = rel.strip_prefix("blobs/sha256/") else {
            return Ok(false);
        };
        let digest = format!("sha256:{hex}");
        if buildwit_worker::content::digest_hex(&digest).is_err() || !content.has(&digest) {
            return Ok(false);
        }
        let src = content.path(&digest)?;
        if fs::metadata(&src)?.len() != stat.size {
            return Ok(false);
        }
        let parts = dir.with_extension("part");
        fs::create_dir_all(&parts)?;
        let tmp = parts.join(format!("store-{hex}"));
        fs::copy(&src, &tmp)?;
        place(&tmp, &dir.join(rel), stat)?;
        Ok(true)
    }

    fn write_back(
        &self,
        name: &str,
        dir: &Path,
        before: &BTreeMap<String, Entry>,
        after: &BTreeMap<String, Entry>,
    ) -> io::Result<()> {
        let mut changed: Vec<(&String, &Entry)> = after
            .iter()
            .filter(|(rel, e)| {
                e.kind == Kind::File
                    && *rel != buildwit_exporter::cache::LOCK_FILE
                    && before
                        .get(*rel)
                        .is_none_or(|b| b.kind != e.kind || b.size != e.size || b.mtime != e.mtime)
            })
            .collect();
        // What names blobs goes after them: the client's directory is whole at any moment.
        changed.sort_by_key(|(rel, _)| *rel == "index.json");
        for (rel, e) in changed {
            let mut file = fs::File::open(dir.join(rel))?;
            loop {
                let mut data = Vec::with_capacity(crate::grpc::CHUNK.min(e.size as usize));
                io::Read::read_to_end(
                    &mut io::Read::take(&mut file, crate::grpc::CHUNK as u64),
                    &mut data,
                )?;
                let last = data.len() < crate::grpc::CHUNK;
                let n = data.len() as u64;
                let write = proto::LocalWrite {
                    name: name.to_string(),
                    path: rel.clone(),
                    mode: e.mode,
                    mtime_ns: e.mtime,
                    data,
                    last,
                    ..Default::default()
                };
                if !self.outbox.send_queued(Msg::Write(write), n) {
                    return Err(gone());
                }
                if last {
                    break;
                }
            }
        }
        for (rel, e) in before {
            if e.kind == Kind::File && !after.contains_key(rel) {
                let write = proto::LocalWrite {
                    name: name.to_string(),
                    path: rel.clone(),
                    remove: true,
                    ..Default::default()
                };
                if !self.outbox.send(Msg::Write(write)) {
                    return Err(gone());
                }
            }
        }
        Ok(())
    }
}

/// Note that the mirror `dir` is in use (for `prune_mirrors`; stamped before it is made,
/// so a prune never takes a mirror being made), and make it.
fn stamp(dir: &Path) -> io::Result<()> {
    if let Some(sessions) = dir.parent() {
        fs::create_dir_all(sessions)?;
    }
    fs::write(dir.with_extension("used"), b"")?;
    fs::create_dir_all(dir)
}

impl ClientCacheDirs for ClientSync {
    /// The client's directory is synced into the mirror whole first, and what `f` changed
    /// in it is written back to the client afterwards (new and changed files with their
    /// mtimes, the blobs before `index.json`, then removals).
    fn cache_dir(&self, path: &Path, f: &mut dyn FnMut(&Path)) -> io::Result<()> {
        let name = cache_local(path);
        let dir = self.dirs.get(&name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("the client does not offer {}", path.display()),
            )
        })?;
        let mut replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        self.hold_mirrors()?;
        stamp(dir)?;
        let whole = LocalSource {
            dir: dir.to_path_buf(),
            follow: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
        };
        self.exchange(&name, dir, &whole, &mut replies)?;
        let before = list(&whole)?;
        self.mirrors.forget(dir);
        f(dir);
        let after = list(&whole)?;
        self.write_back(&name, dir, &before, &after)?;
        let done = proto::LocalWrite {
            name: name.clone(),
            done: true,
            ..Default::default()
        };
        if !self.outbox.send(Msg::Write(done)) {
            return Err(gone());
        }
        Ok(())
    }
}

impl LocalSync for ClientSync {
    fn version(&self, name: &str) -> Option<String> {
        self.mirrors.version(self.dirs.get(name)?)
    }

    fn sync(
        &self,
        name: &str,
        follow: &[String],
        include: &[String],
        exclude: &[String],
    ) -> io::Result<()> {
        let dir = self.dirs.get(name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("the client sent no local directory named {name:?}"),
            )
        })?;
        let key = (
            name.to_string(),
            follow.to_vec(),
            include.to_vec(),
            exclude.to_vec(),
        );
        // One exchange at a time on this build's stream.
        let mut replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        if self
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return Ok(());
        }
        self.hold_mirrors()?;
        stamp(dir)?;
        let source = LocalSource {
            dir: dir.clone(),
            follow: follow.to_vec(),
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        };
        self.exchange(name, dir, &source, &mut replies)?;
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_is_held_by_one_build_until_it_ends() {
        let mirrors = Arc::new(Mirrors::default());
        let never = AtomicBool::new(false);
        let (a, b, c) = (
            PathBuf::from("/m/a"),
            PathBuf::from("/m/b"),
            PathBuf::from("/m/c"),
        );
        let first = mirrors.hold(vec![a.clone(), b.clone()], &never).unwrap();
        // Another build with no mirror in common goes ahead.
        drop(mirrors.hold(vec![c.clone()], &never).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = {
            let mirrors = mirrors.clone();
            std::thread::spawn(move || {
                let never = AtomicBool::new(false);
                let lease = mirrors.hold(vec![c, b], &never).unwrap();
                tx.send(()).unwrap();
                drop(lease);
            })
        };
        // One mirror in common: it waits for the first build to end.
        let waited = rx.recv_timeout(std::time::Duration::from_millis(300));
        assert!(waited.is_err(), "the second build did not wait");
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiting.join().unwrap();
        // A cancelled build stops waiting.
        let _held = mirrors.hold(vec![a.clone()], &never).unwrap();
        let cancelled = AtomicBool::new(true);
        assert!(mirrors.hold(vec![a], &cancelled).is_err());
    }
    #[test]
    fn a_listing_is_trusted_only_on_the_mirror_it_found_unchanged() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mirror");
        fs::create_dir(&dir).unwrap();
        if identity(&dir).is_none() {
            eprintln!("skipped: this filesystem keeps no birth times");
            return;
        }
        let mirrors = Mirrors::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        mirrors.record(&dir, "all".into(), a, false);
        assert!(mirrors.unchanged(&dir, "all", &a));
        assert!(!mirrors.unchanged(&dir, "all", &b));
        assert!(!mirrors.unchanged(&dir, "some", &a));
        // A second listing that changed nothing joins the first; one that changed the
        // mirror replaces both.
        let version = mirrors.version(&dir);
        assert!(version.is_some());
        mirrors.record(&dir, "some".into(), b, false);
        assert!(mirrors.unchanged(&dir, "all", &a) && mirrors.unchanged(&dir, "some", &b));
        assert_eq!(mirrors.version(&dir), version);
        mirrors.record(&dir, "some".into(), b, true);
        assert!(!mirrors.unchanged(&dir, "all", &a) && mirrors.unchanged(&dir, "some", &b));
        assert_ne!(mirrors.version(&dir), version);
        // A sync that starts changing it, or a mirror made again, trusts nothing.
        mirrors.forget(&dir);
        assert!(!mirrors.unchanged(&dir, "some", &b));
        assert_eq!(mirrors.version(&dir), None);
        mirrors.record(&dir, "all".into(), a, false);
        // Made while the first still exists: another inode, whatever the clock says.
        let again = root.path().join("again");
        fs::create_dir(&again).unwrap();
        fs::remove_dir(&dir).unwrap();
        fs::rename(&again, &dir).unwrap();
        assert!(!mirrors.unchanged(&dir, "all", &a));
        assert_eq!(mirrors.version(&dir), None);
    }

    #[test]
    fn the_state_of_mirrors_is_bounded_and_the_ones_in_use_stay() {
        let root = tempfile::tempdir().unwrap();
        let hot = root.path().join("hot");
        fs::create_dir(&hot).unwrap();
        if identity(&hot).is_none() {
            eprintln!("skipped: this filesystem keeps no birth times");
            return;
        }
        let mirrors = Mirrors::default();
        let d = [7u8; 32];
        mirrors.record(&hot, "all".into(), d, false);
        let version = mirrors.version(&hot);
        // A new mirror for every build (a context in a new directory each time), all of
        // them still on disk; one context is built again and again in between.
        for i in 0..3 * MAX_SYNCED {
            let dir = root.path().join(i.to_string());
            fs::create_dir(&dir).unwrap();
            mirrors.record(&dir, "all".into(), d, true);
            assert!(mirrors.unchanged(&hot, "all", &d), "after {i} new mirrors");
            let len = mirrors.synced.lock().unwrap().len();
            assert!(len <= MAX_SYNCED, "{len} mirrors kept");
        }
        assert_eq!(mirrors.version(&hot), version);
        // The newest stay too; what was dropped is only synced in full again.
        let newest = root.path().join((3 * MAX_SYNCED - 1).to_string());
        assert!(mirrors.unchanged(&newest, "all", &d));
        assert!(!mirrors.unchanged(&root.path().join("0"), "all", &d));
    }
}
