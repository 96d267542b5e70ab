//! BuildKit's API over buildwit's engine, so that the real `buildctl` and `docker buildx`
//! drive buildwitd unchanged.
//!
//! A build of either CLI is four streams on one connection: `Control/Session` carries a
//! tunnel in which the *client* serves gRPC (its directories, secrets, output targets);
//! `Control/Solve` names the build and its exporters; `Control/Status` streams progress;
//! and the client runs the build function itself through `LLBBridge` (the client-side
//! gateway), asking for a frontend's result and returning the final one. buildwitd runs
//! the frontend, builds what is returned, exports it, and sends file outputs back
//! through the session.

mod auth;
mod bridge;
mod content;
mod control;
mod filesync;
mod jobs;
mod progress;
mod ssh;
mod tunnel;

pub use control::Buildkit;
#[doc(hidden)]
pub use control::{CacheImport, ClientCache, SolvePlan, plan_solve};
#[doc(hidden)]
pub use filesync::receive_packets;

/// The messages and services, by BuildKit's package names.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    pub mod moby {
        pub mod buildkit {
            pub mod v1 {
                tonic::include_proto!("moby.buildkit.v1");
                pub use buildwit_gateway::proto::moby::buildkit::v1::{frontend, types};
            }
            pub mod secrets {
                pub mod v1 {
                    tonic::include_proto!("moby.buildkit.secrets.v1");
                }
            }
        }
        pub mod sshforward {
            pub mod v1 {
                tonic::include_proto!("moby.sshforward.v1");
            }
        }
        pub mod filesync {
            pub mod v1 {
                tonic::include_proto!("moby.filesync.v1");
            }
        }
    }
    pub mod containerd {
        pub mod services {
            pub mod content {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.content.v1");
                }
            }
        }
    }
    pub use buildwit_gateway::proto::{fsutil, google};
}

pub use buildwit_gateway::MAX_MESSAGE;

/// A timestamp of now.
fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::now())
}

/// A `sha256:` id for something that is not an op (BuildKit names synthetic vertices so).
fn synthetic_digest(what: &str) -> String {
    buildwit_llb::digest_of(what.as_bytes()).to_string()
}
