//! What ties a build to its client, for the servers over the engine (buildwit's own API,
//! BuildKit's): how the build reaches the client's files and caches, whether the client went
//! away, whose registry credentials it uses; who a client is; where its directories are
//! mirrored under the root; and the relay of its forwarded SSH agents.

use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use buildwit_worker::LocalSync;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What ties a build to its client: how to fetch its files, and whether it went away.
#[derive(Clone, Debug, Default)]
pub struct ClientLink {
    /// The build context as the client names it (for the history).
    pub name: Option<String>,
    /// Syncs the client's directories (none in-process: they are the client's own).
    pub sync: Option<Arc<dyn LocalSync>>,
    /// The client's local cache directories, where its protocol mirrors them (buildwit's
    /// own; a BuildKit client sends a cache through its content store instead).
    pub cache_dirs: Option<Arc<dyn ClientCacheDirs>>,
    /// Set when the client disconnected or the daemon shuts down.
    pub cancelled: Arc<AtomicBool>,
    /// Whose registry credentials the build uses (a BuildKit client's `docker login`).
    pub registry: buildwit_registry::Access,
}

/// A remote client's local cache directories (`--cache-to`/`--cache-from type=local` of
/// buildwit's CLI through buildwitd).
pub trait ClientCacheDirs: Send + Sync + std::fmt::Debug {
    /// Run `f` on a mirror of the client's cache directory `path`, brought up to date from
    /// the client first; what `f` changed in it goes back to the client afterwards.
    fn cache_dir(&self, path: &Path, f: &mut dyn FnMut(&Path)) -> io::Result<()>;
}

/// Mirrors unused for this long are removed after a build.
pub const MIRROR_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Remove the mirrors under `sessions` that no sync used for `max_age` (their
/// `NAME.used` stamp is older), with their partial files.
pub fn prune_mirrors(sessions: &Path, max_age: std::time::Duration) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(sessions) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some() || !path.is_dir() {
            continue;
        }
        let stamp = path.with_extension("used");
        let age = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.is_some_and(|a| a < max_age) {
            continue;
        }
        // One that cannot go is left for the next prune; the others still go.
        if let Err(e) = fs::remove_dir_all(&path) {
            tracing::warn!("removing the client mirror {}: {e}", path.display());
            continue;
        }
        let _ = fs::remove_dir_all(path.with_extension("part"));
        let _ = fs::remove_file(&stamp);
        removed += 1;
    }
    Ok(removed)
}

/// The mirror of local `name` for a client's shared key.
pub fn mirror_dir(root: &Path, shared_key: &str, name: &str) -> PathBuf {
    let key = <sha2::Sha256 as sha2::Digest>::digest(format!("{shared_key}\0{name}").as_bytes());
    root.join("sessions").join(hex::encode(&key[..16]))
}

/// Who a client is, as far as the connection tells: the user of a unix socket peer, the
/// certificate of a TLS client, or else the address of a plain tcp one.
pub fn peer_identity<T>(request: &tonic::Request<T>) -> String {
    if let Some(info) = request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
    {
        return match info.peer_cred {
            Some(cred) => format!("uid:{}", cred.uid()),
            None => "unix".into(),
        };
    }
    if let Some(cert) = request.peer_certs().and_then(|c| c.first().cloned()) {
        let digest = <sha2::Sha256 as sha2::Digest>::digest(cert.as_ref());
        return format!("cert:{}", hex::encode(digest));
    }
    match request.remote_addr() {
        Some(addr) => format!("ip:{}", addr.ip()),
        None => String::new(),
    }
}

/// Relay a unix stream over messages, both ways (the daemon's and the client's end of an
/// agent connection): what the stream gives goes out through `send(data, close)`, ending
/// with a `close`; what `from_peer` brings is written to it, and `None` there closes the
/// stream's write side.
pub async fn relay_stream<F, Fut>(
    stream: tokio::net::UnixStream,
    mut from_peer: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    send: F,
) where
    F: Fn(Vec<u8>, bool) -> Fut,
    Fut: Future<Output = bool>,
{
    let (mut read, mut write) = stream.into_split();
    let out = async {
        let mut buf = vec![0; 32 << 10];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !send(buf[..n].to_vec(), false).await {
                        return;
                    }
                }
            }
        }
        send(Vec::new(), true).await;
    };
    let inbound = async {
        while let Some(Some(data)) = from_peer.recv().await {
            if write.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    };
    tokio::join!(out, inbound);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_unused_for_a_while_are_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let sessions = tmp.path();
        for name in ["fresh", "stale", "unstamped"] {
            fs::create_dir_all(sessions.join(name).join("sub")).unwrap();
            fs::create_dir_all(sessions.join(name).with_extension("part")).unwrap();
        }
        fs::write(sessions.join("fresh.used"), b"").unwrap();
        fs::write(sessions.join("stale.used"), b"").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(sessions.join("stale.used"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let removed = prune_mirrors(sessions, std::time::Duration::from_secs(60)).unwrap();
        assert_eq!(removed, 2);
        assert!(sessions.join("fresh").is_dir() && sessions.join("fresh.part").is_dir());
        for gone in [
            "stale",
            "stale.part",
            "stale.used",
            "unstamped",
            "unstamped.part",
        ] {
            assert!(!sessions.join(gone).exists(), "{gone}");
        }
    }
}
