//! Whose credentials a registry request carries. The daemon's own come from its Docker
//! config; a BuildKit client (buildctl, buildx) holds the user's `docker login` and hands
//! them out per registry host over its session (`moby.filesync.v1.Auth/Credentials`).
//!
//! Tokens and resolved images are held per credential (see `client::Principal`): what one
//! client's login unlocked is never served to a request made with other credentials, or
//! none.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use oci_client::secrets::RegistryAuth;

/// What [`ClientCredentials::credentials`] answers: a username and a secret, if any.
pub type CredentialsFuture<'a> =
    Pin<Box<dyn Future<Output = Option<(String, String)>> + Send + 'a>>;

/// A client that holds registry credentials.
pub trait ClientCredentials: Send + Sync {
    /// The username and secret for `host` (the host contacted: `registry-1.docker.io` for
    /// Docker Hub, the mirror's host for a mirror); `None` if it has none. An empty
    /// username with a secret is an identity token.
    fn credentials<'a>(&'a self, host: &'a str) -> CredentialsFuture<'a>;
}

/// The credentials a [`Registries`](crate::Registries) view uses: the daemon's alone
/// (the default), or a client's first and the daemon's where the client has none.
#[derive(Clone, Default)]
pub struct Access {
    client: Option<ClientAccess>,
}

#[derive(Clone)]
struct ClientAccess {
    credentials: Arc<dyn ClientCredentials>,
    /// What the client answered, by host (asked once per access).
    asked: Arc<Mutex<HashMap<String, Option<RegistryAuth>>>>,
}

impl Access {
    /// The daemon's own credentials.
    pub fn daemon() -> Self {
        Access::default()
    }

    /// A client's credentials, asked once per host for as long as this access (and its
    /// clones) lives: one build.
    pub fn client(credentials: Arc<dyn ClientCredentials>) -> Self {
        Access {
            client: Some(ClientAccess {
                credentials,
                asked: Arc::default(),
            }),
        }
    }

    /// Whether this is a client's access.
    pub(crate) fn has_client(&self) -> bool {
        self.client.is_some()
    }

    /// The client's credentials for `host` if it was asked already and had some.
    pub(crate) fn answered(&self, host: &str) -> Option<RegistryAuth> {
        let client = self.client.as_ref()?;
        let asked = client.asked.lock().unwrap_or_else(|e| e.into_inner());
        asked.get(host).cloned().flatten()
    }

    /// The client's credentials for `host`, if it is a client's access and it has some.
    pub(crate) async fn client_auth(&self, host: &str) -> Option<RegistryAuth> {
        let client = self.client.as_ref()?;
        if let Some(known) = client
            .asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
        {
            return known.clone();
        }
        let auth = match client.credentials.credentials(host).await {
            Some((user, secret)) if !user.is_empty() => Some(RegistryAuth::Basic(user, secret)),
            Some((_, secret)) if !secret.is_empty() => {
                tracing::warn!(
                    "the client has an identity token for {host}; identity tokens are not supported yet, using the daemon's credentials"
                );
                None
            }
            _ => None,
        };
        client
            .asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_string(), auth.clone());
        auth
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.client {
            None => "Access::daemon",
            Some(_) => "Access::client",
        })
    }
}
