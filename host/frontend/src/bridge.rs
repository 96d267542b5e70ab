//! The host side of the gateway: what a running frontend's imports are answered with.
//!
//! These types do not depend on a WIT version; each supported version of the contract is
//! mapped onto them, so the daemon implements [`Bridge`] once.

use std::sync::Arc;

use buildwit_llb::pb;

/// Why a gateway call failed; the same classes as the WIT `error-kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bad request or definition.
    InvalidArgument,
    /// Something named does not exist.
    NotFound,
    /// Refused by policy or entitlements.
    PermissionDenied,
    /// Not supported by this host or frontend.
    Unsupported,
    /// A build step failed.
    Failed,
    /// Anything else.
    Internal,
}

/// A line/column range in a source file (1-based lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineRange {
    /// First line.
    pub start_line: u32,
    /// Column on the first line (0 = whole line).
    pub start_column: u32,
    /// Last line.
    pub end_line: u32,
    /// Column on the last line.
    pub end_column: u32,
}

/// Where in a source file an error points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLocation {
    /// The file, such as `Dockerfile`.
    pub filename: String,
    /// The ranges in it.
    pub ranges: Vec<LineRange>,
}

/// An error answered to, or returned by, a frontend.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    /// Its class.
    pub kind: ErrorKind,
    /// What went wrong, for people.
    pub message: String,
    /// Where, if it is about a source file.
    pub location: Option<SourceLocation>,
}

impl GatewayError {
    /// An error without location.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError {
            kind,
            message: message.into(),
            location: None,
        }
    }
}

/// File metadata (fsutil `Stat`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// Path relative to the directory listed, or the path asked for.
    pub path: String,
    /// Unix mode with type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: i64,
    /// Modification time, Unix nanoseconds.
    pub mod_time: i64,
    /// Symlink target.
    pub linkname: String,
    /// Device major number.
    pub devmajor: u64,
    /// Device minor number.
    pub devminor: u64,
}

/// How an image lookup may use local copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolveMode {
    /// Local copy if any, else the registry.
    Default,
    /// Always the registry.
    Pull,
    /// Only local copies.
    Local,
}

/// An image lookup from a frontend.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRequest {
    /// The reference as the frontend gave it.
    pub reference: String,
    /// The platform wanted, if any.
    pub platform: Option<pb::Platform>,
    /// Registry or local.
    pub resolve_mode: ResolveMode,
    /// Progress name.
    pub log_name: String,
}

/// The answer to an image lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The normalised reference.
    pub reference: String,
    /// Manifest digest.
    pub digest: String,
    /// Raw image config JSON.
    pub config: Vec<u8>,
}

/// Severity of a frontend log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Debugging detail.
    Debug,
    /// Normal output.
    Info,
    /// Something to look at.
    Warn,
    /// Something failed.
    Error,
}

/// A warning from a frontend (a lint finding, a deprecation).
#[derive(Clone, Debug, PartialEq)]
pub struct Warning {
    /// 1 for lint warnings.
    pub level: u32,
    /// One line.
    pub short: String,
    /// More lines.
    pub detail: Vec<String>,
    /// Where to read more.
    pub url: String,
    /// The file it is about, and where in it.
    pub location: Option<SourceLocation>,
}

/// What a running frontend reports besides its result.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A log line.
    Log {
        /// Which frontend.
        frontend: String,
        /// Severity.
        level: LogLevel,
        /// The line.
        message: String,
    },
    /// A warning.
    Warning {
        /// Which frontend.
        frontend: String,
        /// The warning.
        warning: Warning,
    },
    /// Progress of a named task.
    Progress {
        /// Which frontend.
        frontend: String,
        /// Groups updates of one task.
        id: String,
        /// Shown to people.
        name: String,
        /// Done so far.
        current: u64,
        /// Out of.
        total: u64,
        /// Finished.
        completed: bool,
    },
}

/// A solved (lazily: built when read) result: a validated LLB definition.
#[derive(Clone, Debug)]
pub struct SolvedRef {
    /// The definition whose result this is. Never empty: scratch has no reference.
    pub definition: Arc<pb::Definition>,
}

/// What a frontend returned.
#[derive(Clone, Debug, Default)]
pub struct FrontendOutput {
    /// The single result (`None` = scratch, when `refs` is empty too).
    pub reference: Option<SolvedRef>,
    /// Per-platform results.
    pub refs: Vec<(String, SolvedRef)>,
    /// `containerimage.config`, `result.json`, ...
    pub metadata: Vec<(String, Vec<u8>)>,
}

impl FrontendOutput {
    /// A metadata value.
    pub fn metadata(&self, key: &str) -> Option<&[u8]> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// The host services behind the gateway imports. Implemented by the daemon: files come
/// from the client's local directories or the solver, images from registries, forwarded
/// requests from other frontends (with policy applied at every level).
pub trait Bridge: Send + Sync {
    /// Read a regular file of a result.
    fn read_file(
        &self,
        r: &SolvedRef,
        path: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<u8>, GatewayError>;

    /// List a directory of a result.
    fn read_dir(
        &self,
        r: &SolvedRef,
        path: &str,
        include_pattern: Option<&str>,
    ) -> Result<Vec<Stat>, GatewayError>;

    /// Stat a path of a result.
    fn stat_file(&self, r: &SolvedRef, path: &str) -> Result<Stat, GatewayError>;

    /// Build a result now.
    fn evaluate(&self, r: &SolvedRef) -> Result<(), GatewayError>;

    /// Look up an image.
    fn resolve_image_config(&self, request: &ImageRequest) -> Result<ResolvedImage, GatewayError>;

    /// The platforms the worker builds for, its own first.
    fn worker_platforms(&self) -> Vec<pb::Platform>;

    /// Run another frontend (`dockerfile.v0`, `gateway.v0`, ...).
    fn forward(
        &self,
        frontend: &str,
        options: Vec<(String, String)>,
        inputs: Vec<(String, pb::Definition)>,
    ) -> Result<FrontendOutput, GatewayError>;

    /// A log line, warning or progress update.
    fn event(&self, event: Event);
}
