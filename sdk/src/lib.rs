//! Write buildwit frontends in Rust.
//!
//! A frontend turns a build definition into an LLB graph. With this crate you:
//!
//! - build graphs with [`llb`], an LLB builder in the spirit of BuildKit's Go `llb` package;
//! - talk to the host through a [`Client`]: options, named inputs, `solve`, image lookups,
//!   warnings and logs;
//! - export your frontend with one line, [`export_frontend!`];
//! - unit-test it natively, without a daemon, with [`testing::MemoryGateway`].
//!
//! ```ignore
//! struct Hello;
//! impl buildwit_sdk::Frontend for Hello {
//!     fn info() -> buildwit_sdk::FrontendInfo { buildwit_sdk::FrontendInfo::new("hello", "0.1.0", "stable") }
//!     fn build(client: &dyn buildwit_sdk::Client) -> Result<buildwit_sdk::BuildResult, buildwit_sdk::Error> {
//!         let def = buildwit_sdk::llb::scratch().file(buildwit_sdk::llb::FileAction::mkfile("/hello", 0o644, "hi")).marshal();
//!         Ok(buildwit_sdk::BuildResult::from_ref(client.solve_definition(def)?))
//!     }
//! }
//! buildwit_sdk::export_frontend!(Hello);
//! ```
//!
//! Build it with `cargo build --target wasm32-unknown-unknown --release` and turn the module
//! into a component (buildwit's build does this with `wit-component`); the result imports
//! nothing but `buildwit:frontend/gateway`.

pub mod client;
mod export;
pub mod image;
pub mod llb;
pub mod reference;
pub mod testing;

/// The raw bindings of the WIT world `buildwit:frontend/frontend`. Prefer the typed API.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "frontend",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "buildwit_sdk::bindings",
        export_macro_name: "export_raw",
    });
}

pub use bindings::buildwit::frontend::gateway::{
    Error, ErrorKind, FileRange, LogLevel, ResolveImageRequest, ResolveMode, ResolvedImage,
    SourceLocation, Stat, Warning,
};
pub use bindings::exports::buildwit::frontend::builder::FrontendInfo;
pub use client::{BuildResult, Client, Reference, SolveRequest};
#[doc(hidden)]
pub use export::Adapter as __Adapter;
pub use export::{DESCRIBE, Frontend, Subrequest, Subrequests};

/// The version of the WIT package this SDK implements.
pub const WIT_VERSION: &str = "0.1.0";

impl Error {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            location: None,
        }
    }

    /// A bad request or definition, such as a syntax error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// Something named does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Not supported here.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// Anything else.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Point the error at lines of a file (1-based, inclusive).
    pub fn at(mut self, filename: impl Into<String>, start_line: u32, end_line: u32) -> Self {
        self.location = Some(SourceLocation {
            filename: filename.into(),
            ranges: vec![llb::line_range(start_line, end_line)],
        });
        self
    }
}

impl FrontendInfo {
    /// Name, semver and channel (`stable`, `labs`, ...).
    pub fn new(name: &str, version: &str, channel: &str) -> Self {
        FrontendInfo {
            name: name.into(),
            version: version.into(),
            channel: channel.into(),
        }
    }
}
