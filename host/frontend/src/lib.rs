//! buildwit's frontend host: runs frontends as sandboxed WebAssembly components.
//!
//! A frontend is a component of the WIT world `buildwit:frontend/frontend` (see `wit/`).
//! [`Runtime`] checks a component against the contract before compiling it, caches the
//! compiled artifact on disk by digest, and runs each build in a fresh store with a wall-time
//! deadline, a memory cap, a stack cap and an output budget. The frontend's gateway imports
//! are answered by a [`Bridge`] (the daemon); its result comes back as protobuf LLB.

pub mod bridge;
pub mod convert;
pub mod engine;
mod error;
mod host;
mod runtime;
mod wasi;
mod wrap;

pub use bridge::{Bridge, Event, FrontendOutput, GatewayError, SolvedRef};
pub use error::{FrontendError, Limit};
pub use runtime::{FrontendInfo, Limits, LoadedFrontend, Runtime, SUPPORTED_WIT};
pub use wrap::component_of;

/// Where the build put the workspace's frontend components (`toml-spec.wasm`, ...).
pub const BUILT_FRONTENDS_DIR: &str = env!("BUILDWIT_FRONTENDS_DIR");

/// The built-in Dockerfile frontend components, embedded in the binary.
pub mod builtin {
    /// The stable channel (`docker/dockerfile:1`).
    pub const DOCKERFILE: &[u8] =
        include_bytes!(concat!(env!("BUILDWIT_FRONTENDS_DIR"), "/dockerfile.wasm"));
    /// The labs channel (`docker/dockerfile:1-labs`).
    pub const DOCKERFILE_LABS: &[u8] = include_bytes!(concat!(
        env!("BUILDWIT_FRONTENDS_DIR"),
        "/dockerfile-labs.wasm"
    ));
    /// [`DOCKERFILE`] compiled for this machine when buildwit was built.
    pub const DOCKERFILE_COMPILED: &[u8] =
        include_bytes!(concat!(env!("BUILDWIT_FRONTENDS_DIR"), "/dockerfile.cwasm"));
    /// [`DOCKERFILE_LABS`] compiled for this machine when buildwit was built.
    pub const DOCKERFILE_LABS_COMPILED: &[u8] = include_bytes!(concat!(
        env!("BUILDWIT_FRONTENDS_DIR"),
        "/dockerfile-labs.cwasm"
    ));
    /// `sha256:` of [`DOCKERFILE`], computed when it was built.
    pub const DOCKERFILE_DIGEST: &str = env!("BUILDWIT_DIGEST_DOCKERFILE");
    /// `sha256:` of [`DOCKERFILE_LABS`].
    pub const DOCKERFILE_LABS_DIGEST: &str = env!("BUILDWIT_DIGEST_DOCKERFILE_LABS");
}
