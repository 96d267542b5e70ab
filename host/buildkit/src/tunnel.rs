//! The session tunnel: `Control/Session` is a byte pipe in which the client serves gRPC
//! over HTTP/2 and buildwitd is the client (the roles are reversed). Each end is pumped
//! on its own, so a slow build never stalls the client's messages.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, watch};
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

use crate::proto::moby::buildkit::v1::BytesMessage;

/// One client's session: a gRPC channel to the services it serves.
pub struct ClientSession {
    /// Its id (`SolveRequest.Session` names it).
    pub id: String,
    /// Its key for reusing synced directories across builds (buildx: context and node).
    pub shared_key: String,
    /// Who the client is, as its connection tells (mirrors are never shared between two).
    pub peer: String,
    /// The methods it serves, lowercased.
    methods: HashSet<String>,
    /// The channel through the tunnel.
    pub channel: Channel,
    /// Turns true once the client closed the session.
    pub closed: watch::Receiver<bool>,
}

impl ClientSession {
    /// Whether the client serves `method` (`/package.Service/Method`).
    pub fn serves(&self, method: &str) -> bool {
        self.methods.contains(&method.to_ascii_lowercase())
    }
}

/// Values by id, for lookups that may come before the value: the CLIs open `Session`,
/// `Solve`, `Status` and the gateway calls at once, in no particular order.
pub struct Waitable<T> {
    map: Mutex<HashMap<String, Arc<T>>>,
    added: Notify,
}

impl<T> Default for Waitable<T> {
    fn default() -> Self {
        Waitable {
            map: Mutex::default(),
            added: Notify::new(),
        }
    }
}

impl<T> Waitable<T> {
    /// Add `value` under `id`.
    pub fn insert(&self, id: &str, value: Arc<T>) {
        self.lock().insert(id.to_string(), value);
        self.added.notify_waiters();
    }

    /// Add `value` under `id` unless something is there already: whether it was added.
    pub fn insert_new(&self, id: &str, value: Arc<T>) -> bool {
        let added = match self.lock().entry(id.to_string()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(value);
                true
            }
        };
        self.added.notify_waiters();
        added
    }

    /// Remove `id`.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The value of `id`, waiting up to `wait` for it to appear.
    pub async fn get(&self, id: &str, wait: Duration) -> Option<Arc<T>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if let Some(v) = self.lock().get(id) {
                return Some(v.clone());
            }
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                return None;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<T>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The metadata value of `key`, if it is text.
fn header(metadata: &tonic::metadata::MetadataMap, key: &str) -> Option<String> {
    metadata
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Open the tunnel of a `Control/Session` call: returns the session (registered in
/// `sessions` until the client closes it) and the stream of bytes back to the client.
pub async fn open(
    sessions: Arc<Waitable<ClientSession>>,
    request: tonic::Request<Streaming<BytesMessage>>,
) -> Result<mpsc::Receiver<Result<BytesMessage, Status>>, Status> {
    let peer = buildwit_engine::client::peer_identity(&request);
    let metadata = request.metadata();
    let id = header(metadata, "x-docker-expose-session-uuid")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            Status::invalid_argument("the session has no x-docker-expose-session-uuid")
        })?;
    let shared_key = header(metadata, "x-docker-expose-session-sharedkey").unwrap_or_default();
    let methods: HashSet<String> = metadata
        .get_all("x-docker-expose-session-grpc-method")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .collect();
    let mut inbound = request.into_inner();
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (mut from_client, mut to_client) = tokio::io::split(theirs);
    let (out_tx, out_rx) = mpsc::channel(16);
    let (closed_tx, closed) = watch::channel(false);
    let stop = Arc::new(Notify::new());
    // Client → daemon: the client's HTTP/2 frames, fed to the channel's connection.
    {
        let stop = stop.clone();
        let sessions = sessions.clone();
        let id = id.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if to_client.write_all(&m.data).await.is_err() {
                    break;
                }
            }
            let _ = to_client.shutdown().await;
            closed_tx.send_replace(true);
            sessions.remove(&id);
            stop.notify_one();
        });
    }
    // Daemon → client: the connection's frames, as messages of the response stream.
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            tokio::select! {
                read = from_client.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let msg = BytesMessage { data: buf[..n].to_vec() };
                        if out_tx.send(Ok(msg)).await.is_err() {
                            break;
                        }
                    }
                },
                _ = stop.notified() => break,
            }
        }
    });
    let io = Mutex::new(Some(ours));
    let channel = Endpoint::from_static("http://localhost")
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let io = io.lock().unwrap_or_else(|e| e.into_inner()).take();
            async move {
                io.map(hyper_util::rt::TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the session tunnel is already in use"))
            }
        }))
        .await
        .map_err(|e| {
            Status::unavailable(format!("session {id}: no HTTP/2 through the tunnel: {e}"))
        })?;
    sessions.insert(
        &id,
        Arc::new(ClientSession {
            id: id.clone(),
            shared_key,
            peer,
            methods,
            channel,
            closed: closed.clone(),
        }),
    );
    // The client may have closed it while the connection was made.
    if *closed.borrow() {
        sessions.remove(&id);
    }
    Ok(out_rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_value_under_an_id_in_use_is_refused_and_the_first_stays() {
        let map = Waitable::default();
        assert!(map.insert_new("build-1", Arc::new(1)));
        assert!(!map.insert_new("build-1", Arc::new(2)));
        assert_eq!(map.lock().get("build-1").map(|v| **v), Some(1));
        map.remove("build-1");
        assert!(map.insert_new("build-1", Arc::new(3)));
    }
}
