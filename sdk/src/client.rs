//! The gateway as a Rust API: what a frontend can ask of the host.

use std::any::Any;

use crate::bindings::buildwit::frontend::gateway as wit;
use crate::llb::{Definition, Platform};
use crate::{Error, FileRange, LogLevel, ResolveImageRequest, ResolvedImage, Stat, Warning};

pub use wit::SolveRequest;

/// What a frontend can ask of the host. In a component it is backed by the WIT imports; in
/// tests by [`crate::testing::MemoryGateway`].
pub trait Client {
    /// All frontend options, as BuildKit's clients send them:
    ///
    /// - `filename`: the file to read from the `dockerfile` local. `buildwit build` and
    ///   `docker buildx build` always send it (`Dockerfile`, or the name `-f` gives);
    ///   `buildctl` only with `--opt filename=`, so default to your own file name.
    /// - `target`, `build-arg:NAME`, `label:NAME`, `no-cache`, `platform` (comma-separated
    ///   `os/arch[/variant]`; absent means the worker's platform).
    /// - `context:NAME` and named inputs ([`Client::inputs`]) for `--build-context`.
    /// - `requestid` for `--call` (see [`crate::Frontend::subrequests`]).
    /// - Under `# syntax=`: everything the Dockerfile frontend was given, plus `source`
    ///   (the image reference on that line) and `cmdline` (what follows it).
    fn options(&self) -> Vec<(String, String)>;

    /// Named inputs given by the caller.
    fn inputs(&self) -> Vec<(String, Definition)>;

    /// The platforms the worker builds for, its own first: the platform to build for when
    /// the `platform` option is absent (what BuildKit's frontends default to).
    fn worker_platforms(&self) -> Vec<Platform>;

    /// The platform to build for when the options name none: the worker's own
    /// (`linux/amd64` if the host tells none).
    fn default_platform(&self) -> Platform {
        self.worker_platforms()
            .into_iter()
            .next()
            .unwrap_or_else(Platform::linux_amd64)
    }

    /// Solve a definition or forward to another frontend.
    fn solve(&self, request: SolveRequest) -> Result<BuildResult, Error>;

    /// Look up an image's digest and config.
    fn resolve_image_config(&self, request: ResolveImageRequest) -> Result<ResolvedImage, Error>;

    /// Report a warning.
    fn warn(&self, warning: Warning);

    /// A log line for the build output.
    fn log(&self, level: LogLevel, message: &str);

    /// Progress of a task of the frontend itself.
    fn progress(&self, id: &str, name: &str, current: u64, total: u64, completed: bool);

    /// One option by key.
    fn option(&self, key: &str) -> Option<String> {
        self.options()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Solve a definition and return its reference (`None` for an empty, scratch result).
    fn solve_definition(&self, definition: Definition) -> Result<Option<Reference>, Error> {
        let result = self.solve(SolveRequest {
            definition: Some(definition),
            frontend: None,
            frontend_opts: Vec::new(),
            frontend_inputs: Vec::new(),
            evaluate: false,
        })?;
        Ok(result.reference)
    }
}

/// The operations behind a [`Reference`].
pub trait ReferenceBackend: Any {
    /// Read a regular file, optionally a byte range.
    fn read_file(&self, path: &str, range: Option<FileRange>) -> Result<Vec<u8>, Error>;
    /// List a directory, optionally filtered by a glob.
    fn read_dir(&self, path: &str, include_pattern: Option<&str>) -> Result<Vec<Stat>, Error>;
    /// Stat one path.
    fn stat_file(&self, path: &str) -> Result<Stat, Error>;
    /// Build now and report the error, if any.
    fn evaluate(&self) -> Result<(), Error>;
    /// For the export glue: recover the concrete type.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

/// A solved result: a filesystem you can read. Reading forces it to be built.
pub struct Reference(Box<dyn ReferenceBackend>);

impl Reference {
    /// Wrap a backend.
    pub fn new(backend: impl ReferenceBackend) -> Self {
        Reference(Box::new(backend))
    }

    /// Read a whole regular file.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, Error> {
        self.0.read_file(path, None)
    }

    /// Read `length` bytes from `offset`.
    pub fn read_file_range(&self, path: &str, offset: u64, length: u64) -> Result<Vec<u8>, Error> {
        self.0.read_file(path, Some(FileRange { offset, length }))
    }

    /// List a directory.
    pub fn read_dir(&self, path: &str, include_pattern: Option<&str>) -> Result<Vec<Stat>, Error> {
        self.0.read_dir(path, include_pattern)
    }

    /// Stat one path.
    pub fn stat_file(&self, path: &str) -> Result<Stat, Error> {
        self.0.stat_file(path)
    }

    /// Build now.
    pub fn evaluate(&self) -> Result<(), Error> {
        self.0.evaluate()
    }

    /// The backend, for the export glue and the test harness.
    pub fn into_backend<T: 'static>(self) -> Option<T> {
        self.0.into_any().downcast::<T>().ok().map(|b| *b)
    }
}

impl std::fmt::Debug for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reference")
    }
}

/// The result of a build or of a solve: references and metadata.
#[derive(Debug, Default)]
pub struct BuildResult {
    /// The single result (`None` = scratch when `refs` is empty too).
    pub reference: Option<Reference>,
    /// One result per platform, keyed by platform id such as `linux/amd64`.
    pub refs: Vec<(String, Reference)>,
    /// `containerimage.config`, `result.json`, ...
    pub metadata: Vec<(String, Vec<u8>)>,
}

impl BuildResult {
    /// A result holding one reference (or scratch).
    pub fn from_ref(reference: Option<Reference>) -> Self {
        BuildResult {
            reference,
            ..Default::default()
        }
    }

    /// Add a metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Add the image config (`containerimage.config`) exporters write for this result.
    pub fn with_image_config(self, config: &crate::image::ImageConfig) -> Self {
        self.with_metadata("containerimage.config", config.to_json())
    }

    /// The value of a metadata key.
    pub fn metadata(&self, key: &str) -> Option<&[u8]> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// The client of a frontend running as a component: the WIT imports.
pub(crate) struct WitClient;

impl Client for WitClient {
    fn options(&self) -> Vec<(String, String)> {
        wit::options()
    }

    fn inputs(&self) -> Vec<(String, Definition)> {
        wit::inputs()
    }

    fn worker_platforms(&self) -> Vec<Platform> {
        wit::worker_platforms()
    }

    fn solve(&self, request: SolveRequest) -> Result<BuildResult, Error> {
        let r = wit::solve(&request)?;
        Ok(BuildResult {
            reference: r.ref_.map(|r| Reference::new(WitReference(r))),
            refs: r
                .refs
                .into_iter()
                .map(|(k, r)| (k, Reference::new(WitReference(r))))
                .collect(),
            metadata: r.metadata,
        })
    }

    fn resolve_image_config(&self, request: ResolveImageRequest) -> Result<ResolvedImage, Error> {
        wit::resolve_image_config(&request)
    }

    fn warn(&self, warning: Warning) {
        wit::warn(&warning)
    }

    fn log(&self, level: LogLevel, message: &str) {
        wit::log(level, message)
    }

    fn progress(&self, id: &str, name: &str, current: u64, total: u64, completed: bool) {
        wit::progress(id, name, current, total, completed)
    }
}

/// A reference owned by the host.
pub(crate) struct WitReference(pub(crate) wit::Reference);

impl ReferenceBackend for WitReference {
    fn read_file(&self, path: &str, range: Option<FileRange>) -> Result<Vec<u8>, Error> {
        self.0.read_file(path, range)
    }

    fn read_dir(&self, path: &str, include_pattern: Option<&str>) -> Result<Vec<Stat>, Error> {
        self.0.read_dir(path, include_pattern)
    }

    fn stat_file(&self, path: &str) -> Result<Stat, Error> {
        self.0.stat_file(path)
    }

    fn evaluate(&self) -> Result<(), Error> {
        self.0.evaluate()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}
