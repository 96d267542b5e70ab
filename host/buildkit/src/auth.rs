//! The client's registry credentials (`moby.filesync.v1.Auth/Credentials`): the pulls and
//! pushes of a build ask its session for the `docker login` of each registry host they
//! reach, as buildkitd does, and use the daemon's own where the client has none.

use std::sync::Arc;

use buildwit_registry::{Access, ClientCredentials, CredentialsFuture};

use crate::proto::moby::filesync::v1::CredentialsRequest;
use crate::proto::moby::filesync::v1::auth_client::AuthClient;
use crate::tunnel::ClientSession;

const CREDENTIALS: &str = "/moby.filesync.v1.Auth/Credentials";

/// The registry access of a build of `session`'s client. Credentials travel only over a
/// private connection (a unix socket or TLS), as secrets do; elsewhere the daemon's own
/// are used.
pub(crate) fn access(session: &Arc<ClientSession>, secure: bool) -> Access {
    if !secure || !session.serves(CREDENTIALS) {
        return Access::daemon();
    }
    let asker = SessionCredentials {
        session: session.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    Access::client(Arc::new(asker))
}

struct SessionCredentials {
    session: Arc<ClientSession>,
    /// The server's runtime, where the session's channel lives (pulls run on the engine's).
    runtime: tokio::runtime::Handle,
}

impl ClientCredentials for SessionCredentials {
    fn credentials<'a>(&'a self, host: &'a str) -> CredentialsFuture<'a> {
        let mut client = AuthClient::new(self.session.channel.clone());
        let request = CredentialsRequest {
            host: host.to_string(),
        };
        let asked = self
            .runtime
            .spawn(async move { client.credentials(request).await });
        Box::pin(async move {
            match asked.await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    (!r.username.is_empty() || !r.secret.is_empty())
                        .then_some((r.username, r.secret))
                }
                Ok(Err(e)) => {
                    tracing::debug!("the client gave no credentials for {host}: {}", e.message());
                    None
                }
                Err(e) => {
                    tracing::warn!("asking the client for credentials for {host}: {e}");
                    None
                }
            }
        })
    }
}
