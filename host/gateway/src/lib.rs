//! BuildKit's gateway API (`moby.buildkit.v1.frontend.LLBBridge`): the protocol a
//! frontend's build function speaks to the daemon, whether it runs in the client (buildctl
//! and buildx build so) or in a container started by the daemon (a `# syntax=` image).
//!
//! This crate holds the messages (shared with the BuildKit API server), both ends of the
//! stdio transport, [`FrontendGateway`], which serves a container frontend and answers
//! each call from the engine's [`buildwit_frontend::Bridge`] (as the Wasm frontends'
//! imports are answered), and [`client`], which runs a Wasm frontend inside a stock
//! BuildKit by answering its imports with calls to BuildKit.

pub mod client;
mod container;
pub mod wire;

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;

pub use container::{FrontendGateway, environment, worker_platforms};

/// The messages and services, by BuildKit's package names.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    pub mod moby {
        pub mod buildkit {
            pub mod v1 {
                pub mod types {
                    tonic::include_proto!("moby.buildkit.v1.types");
                }
                pub mod frontend {
                    tonic::include_proto!("moby.buildkit.v1.frontend");
                }
            }
        }
    }
    pub mod google {
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
    pub mod fsutil {
        pub mod types {
            tonic::include_proto!("fsutil.types");
        }
    }
}

use proto::moby::buildkit::v1::frontend::ApiCap;

/// The largest message either side sends (containerd's default, which BuildKit uses).
pub const MAX_MESSAGE: usize = 16 << 20;

/// The LLB caps of the definitions buildwitd builds: what buildwit's own Dockerfile
/// frontend emits (the worker sets a default PATH, hence `exec.meta.setsdefaultpath`), and
/// the exporter and GC features (with `exporter.image.attestations`, buildx asks for
/// provenance by default, as it does of BuildKit). The Go client refuses to send a definition that uses one
/// not listed.
pub const LLB_CAPS: &[&str] = &[
    "constraints",
    "diffop",
    "exec.meta.base",
    "exec.meta.cdi",
    "exec.meta.network",
    "exec.meta.proxyenv",
    "exec.meta.security",
    "exec.meta.setsdefaultpath",
    "exec.meta.ulimit",
    "exec.mount.bind",
    "exec.mount.cache",
    "exec.mount.cache.sharing",
    "exec.mount.secret",
    "exec.mount.selector",
    "exec.mount.ssh",
    "exec.mount.tmpfs",
    "exec.mount.tmpfs.size",
    "exec.secretenv",
    "exec.validexitcode",
    "exporter.image.annotations",
    "exporter.image.attestations",
    "exporter.multiple",
    "file.base",
    "file.copy.alwaysreplaceexistingdestpaths",
    "file.copy.includeexcludepatterns",
    "file.copy.modestring",
    "file.copy.requiredpaths",
    "file.rm.wildcard",
    "file.symlink.create",
    "gc.freespacefilter",
    "mergeop",
    "meta.description",
    "meta.exportcache",
    "meta.ignorecache",
    "platform",
    "source.git",
    "source.git.bundle",
    "source.git.checkoutbundle",
    "source.git.checksum",
    "source.git.fetchbycommit",
    "source.git.fullurl",
    "source.git.keepgitdir",
    "source.git.knownsshhosts",
    "source.git.mountsshsock",
    "source.git.mtime",
    "source.git.skipsubmodules",
    "source.http",
    "source.http.auth",
    "source.http.checksum",
    "source.http.header",
    "source.http.perm",
    "source.http.signatureverify",
    "source.image",
    "source.image.checksum",
    "source.image.layerlimit",
    "source.image.resolvemode",
    "source.local",
    "source.local.differ",
    "source.local.excludepatterns",
    "source.local.followpaths",
    "source.local.includepatterns",
    "source.local.metadatatransfer",
    "source.local.sessionid",
    "source.local.sharedkeyhint",
    "source.local.unique",
    "source.ocilayout",
];

/// A frontend process's stdin and stdout as one connection: the daemon reads what the
/// frontend writes and writes what it reads, and the frontend the other way round.
pub(crate) struct Pipes {
    read: pipe::Receiver,
    write: pipe::Sender,
}

impl tonic::transport::server::Connected for Pipes {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for Pipes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pipes {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}

/// Caps as the gateway lists them, all enabled.
pub fn caps(ids: &[&str]) -> Vec<ApiCap> {
    ids.iter()
        .map(|id| ApiCap {
            id: id.to_string(),
            enabled: true,
        })
        .collect()
}
