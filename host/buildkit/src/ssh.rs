//! SSH agents a client forwards (`--ssh`): for each id a step mounts, buildwitd listens on
//! a socket of the build's own and relays each connection to the client's agent through
//! the session.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;

use crate::proto::moby::sshforward::v1::ssh_client::SshClient;
use crate::proto::moby::sshforward::v1::{BytesMessage, CheckAgentRequest};
use crate::tunnel::ClientSession;

/// One build's forwarded agents; they stop when dropped.
pub struct Agents {
    dir: PathBuf,
    /// The socket of each forwarded id, for the worker.
    pub sockets: BTreeMap<String, PathBuf>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Agents {
    /// Listen in `dir` for each of `ids` the client forwards (one it does not is left out:
    /// the step that needs it says so, unless it is optional).
    pub async fn start(
        session: Arc<ClientSession>,
        dir: PathBuf,
        ids: &[String],
    ) -> io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let mut agents = Agents {
            dir,
            sockets: BTreeMap::new(),
            tasks: Vec::new(),
        };
        if !session.serves("/moby.sshforward.v1.SSH/ForwardAgent") {
            return Ok(agents);
        }
        let client = SshClient::new(session.channel.clone());
        for (n, id) in ids.iter().enumerate() {
            let check = client
                .clone()
                .check_agent(CheckAgentRequest { id: id.clone() })
                .await;
            if let Err(e) = check {
                tracing::debug!("ssh {id:?} not forwarded: {}", e.message());
                continue;
            }
            let path = agents.dir.join(format!("{n}.sock"));
            // Bound through its directory: the path may be longer than a socket address.
            let listener = buildwit_worker::agent::bind(&path)?;
            listener.set_nonblocking(true)?;
            let listener = tokio::net::UnixListener::from_std(listener)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            agents.sockets.insert(id.clone(), path);
            let (client, id) = (client.clone(), id.clone());
            let accept = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(relay(client.clone(), id.clone(), stream));
                }
            });
            agents.tasks.push(accept.abort_handle());
        }
        Ok(agents)
    }
}

/// One connection of a step, to the client's agent and back.
async fn relay(
    mut client: SshClient<tonic::transport::Channel>,
    id: String,
    stream: tokio::net::UnixStream,
) {
    let (tx, rx) = mpsc::channel(16);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let Ok(value) = MetadataValue::try_from(id.as_str()) else {
        return;
    };
    request.metadata_mut().insert("buildkit.ssh.id", value);
    let (back_tx, back_rx) = mpsc::unbounded_channel();
    let sender = Arc::new(Mutex::new(Some(tx)));
    let reply = async {
        let Ok(response) = client.forward_agent(request).await else {
            let _ = back_tx.send(None);
            return;
        };
        let mut inbound = response.into_inner();
        while let Ok(Some(m)) = inbound.message().await {
            if back_tx.send(Some(m.data)).is_err() {
                break;
            }
        }
        let _ = back_tx.send(None);
    };
    let relay = buildwit_engine::client::relay_stream(stream, back_rx, |data, close| {
        let tx = sender.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let sender = sender.clone();
        async move {
            if close {
                // The step closed its side: so does the stream to the client.
                sender.lock().unwrap_or_else(|e| e.into_inner()).take();
                return true;
            }
            match tx {
                Some(tx) => tx.send(BytesMessage { data }).await.is_ok(),
                None => false,
            }
        }
    });
    tokio::join!(reply, relay);
}
