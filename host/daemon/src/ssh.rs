//! A remote client's SSH agents (`buildwit --addr … --ssh`): for each id the client
//! forwards, the daemon listens on a socket of the build's own, and relays each connection
//! a step makes to it over the build's stream, where the client connects it to its agent.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::grpc::proto::{self, build_server_message::Msg};
use crate::session::Outbox;

/// Bytes for a step's connection from the client; `None` closes its write side.
type Inbound = mpsc::UnboundedSender<Option<Vec<u8>>>;

/// One build's forwarded agents; they stop listening when it is closed or dropped.
pub struct SshForward {
    dir: PathBuf,
    /// The socket of each forwarded id, for the worker.
    pub sockets: BTreeMap<String, PathBuf>,
    conns: Arc<Mutex<HashMap<u64, Inbound>>>,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl SshForward {
    /// Listen for `ids` in `dir` (made private to the daemon). Call it on the runtime.
    pub fn start(dir: PathBuf, ids: &[String], outbox: Arc<Outbox>) -> io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let mut forward = SshForward {
            dir,
            sockets: BTreeMap::new(),
            conns: Arc::default(),
            tasks: Arc::default(),
        };
        let next = Arc::new(AtomicU64::new(1));
        for (n, id) in ids.iter().enumerate() {
            let path = forward.dir.join(format!("{n}.sock"));
            let listener = buildwit_worker::agent::bind(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            listener.set_nonblocking(true)?;
            let listener = tokio::net::UnixListener::from_std(listener)?;
            forward.sockets.insert(id.clone(), path);
            let (id, outbox, conns, tasks, next) = (
                id.clone(),
                outbox.clone(),
                forward.conns.clone(),
                forward.tasks.clone(),
                next.clone(),
            );
            let accept = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let conn = next.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = mpsc::unbounded_channel();
                    lock(&conns).insert(conn, tx);
                    if !outbox.send(Msg::SshOpen(proto::SshOpen {
                        conn,
                        id: id.clone(),
                    })) {
                        break;
                    }
                    let pump = tokio::spawn(pump(stream, conn, rx, outbox.clone(), conns.clone()));
                    lock(&tasks).push(pump.abort_handle());
                }
            });
            lock(&forward.tasks).push(accept.abort_handle());
        }
        Ok(forward)
    }

    /// Bytes (or the end) of a connection, from the client.
    pub fn deliver(&self, data: proto::SshData) {
        let conns = lock(&self.conns);
        let Some(tx) = conns.get(&data.conn) else {
            return;
        };
        if !data.data.is_empty() {
            let _ = tx.send(Some(data.data));
        }
        if data.close {
            let _ = tx.send(None);
        }
    }

    /// Stop listening, drop every connection and remove the sockets.
    pub fn close(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        lock(&self.conns).clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for SshForward {
    fn drop(&mut self) {
        self.close();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Relay one connection: what the step writes goes to the client, what the client sends
/// is written to the step.
async fn pump(
    stream: tokio::net::UnixStream,
    conn: u64,
    rx: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    outbox: Arc<Outbox>,
    conns: Arc<Mutex<HashMap<u64, Inbound>>>,
) {
    buildwit_engine::client::relay_stream(stream, rx, |data, close| {
        let sent = outbox.send(Msg::Ssh(proto::SshData { conn, data, close }));
        async move { sent }
    })
    .await;
    lock(&conns).remove(&conn);
}
