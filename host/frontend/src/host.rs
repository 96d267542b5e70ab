//! The gateway imports of WIT `buildwit:frontend@0.1.0`, answered from a [`Bridge`].

use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits};

use crate::bridge::{self, Bridge, Event, GatewayError, SolvedRef};
use crate::convert;

pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        world: "frontend",
        path: "../../wit",
        with: { "buildwit:frontend/gateway.reference": crate::bridge::SolvedRef },
        imports: { default: trappable },
    });
}

use v0_1::buildwit::frontend::gateway as wit;
use v0_1::buildwit::frontend::llb as wit_llb;

/// Trapped on purpose by a host import: the frontend exceeded the output budget.
#[derive(Debug, thiserror::Error)]
#[error(
    "returned {used} bytes (solved definitions, metadata, warnings), more than the limit of {limit}"
)]
pub(crate) struct OutputLimitExceeded {
    pub used: usize,
    pub limit: usize,
}

/// Per-build state of a store.
pub(crate) struct HostState {
    pub table: ResourceTable,
    pub limits: MemoryLimiter,
    pub bridge: Arc<dyn Bridge>,
    pub frontend: String,
    pub options: Vec<(String, String)>,
    pub inputs: Vec<(String, buildwit_llb::pb::Definition)>,
    pub output_used: usize,
    pub output_limit: usize,
    /// Wall time this run may take.
    pub deadline: std::time::Duration,
    /// The message of the last panic the guest reported before trapping.
    pub panic: Option<String>,
    /// WASI, for a frontend that imports it.
    pub wasi: crate::wasi::Wasi,
}

/// A memory cap that remembers it was hit, so the trap can be explained.
pub(crate) struct MemoryLimiter {
    pub inner: StoreLimits,
    pub max: usize,
    pub hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
        }
        self.inner.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl HostState {
    /// Count bytes the guest hands over; trap once past the budget.
    pub(crate) fn charge(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.output_used = self.output_used.saturating_add(bytes);
        if self.output_used > self.output_limit {
            return Err(wasmtime::Error::new(OutputLimitExceeded {
                used: self.output_used,
                limit: self.output_limit,
            }));
        }
        Ok(())
    }

    fn reference(&self, r: &Resource<SolvedRef>) -> wasmtime::Result<SolvedRef> {
        Ok(self.table.get(r)?.clone())
    }
}

pub(crate) fn to_wit_error(e: GatewayError) -> wit::Error {
    wit::Error {
        kind: match e.kind {
            bridge::ErrorKind::InvalidArgument => wit::ErrorKind::InvalidArgument,
            bridge::ErrorKind::NotFound => wit::ErrorKind::NotFound,
            bridge::ErrorKind::PermissionDenied => wit::ErrorKind::PermissionDenied,
            bridge::ErrorKind::Unsupported => wit::ErrorKind::Unsupported,
            bridge::ErrorKind::Failed => wit::ErrorKind::Failed,
            bridge::ErrorKind::Internal => wit::ErrorKind::Internal,
        },
        message: e.message,
        location: e.location.map(|l| wit::SourceLocation {
            filename: l.filename,
            ranges: l.ranges.iter().map(to_wit_range).collect(),
        }),
    }
}

pub(crate) fn from_wit_error(e: wit::Error) -> GatewayError {
    GatewayError {
        kind: match e.kind {
            wit::ErrorKind::InvalidArgument => bridge::ErrorKind::InvalidArgument,
            wit::ErrorKind::NotFound => bridge::ErrorKind::NotFound,
            wit::ErrorKind::PermissionDenied => bridge::ErrorKind::PermissionDenied,
            wit::ErrorKind::Unsupported => bridge::ErrorKind::Unsupported,
            wit::ErrorKind::Failed => bridge::ErrorKind::Failed,
            wit::ErrorKind::Internal => bridge::ErrorKind::Internal,
        },
        message: e.message,
        location: e.location.map(|l| bridge::SourceLocation {
            filename: l.filename,
            ranges: l.ranges.iter().map(from_wit_range).collect(),
        }),
    }
}

fn to_wit_range(r: &bridge::LineRange) -> wit_llb::Range {
    wit_llb::Range {
        start: wit_llb::Position {
            line: r.start_line as i32,
            character: r.start_column as i32,
        },
        end: wit_llb::Position {
            line: r.end_line as i32,
            character: r.end_column as i32,
        },
    }
}

fn from_wit_range(r: &wit_llb::Range) -> bridge::LineRange {
    bridge::LineRange {
        start_line: r.start.line.max(0) as u32,
        start_column: r.start.character.max(0) as u32,
        end_line: r.end.line.max(0) as u32,
        end_column: r.end.character.max(0) as u32,
    }
}

fn to_wit_stat(s: bridge::Stat) -> wit::Stat {
    wit::Stat {
        path: s.path,
        mode: s.mode,
        uid: s.uid,
        gid: s.gid,
        size: s.size,
        mod_time: s.mod_time,
        linkname: s.linkname,
        devmajor: s.devmajor,
        devminor: s.devminor,
    }
}

impl wit_llb::Host for HostState {}

impl wit::HostReference for HostState {
    fn read_file(
        &mut self,
        r: Resource<SolvedRef>,
        path: String,
        range: Option<wit::FileRange>,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::Error>> {
        let r = self.reference(&r)?;
        let range = range.map(|r| (r.offset, r.length));
        Ok(self
            .bridge
            .read_file(&r, &path, range)
            .map_err(to_wit_error))
    }

    fn read_dir(
        &mut self,
        r: Resource<SolvedRef>,
        path: String,
        include_pattern: Option<String>,
    ) -> wasmtime::Result<Result<Vec<wit::Stat>, wit::Error>> {
        let r = self.reference(&r)?;
        Ok(self
            .bridge
            .read_dir(&r, &path, include_pattern.as_deref())
            .map(|v| v.into_iter().map(to_wit_stat).collect())
            .map_err(to_wit_error))
    }

    fn stat_file(
        &mut self,
        r: Resource<SolvedRef>,
        path: String,
    ) -> wasmtime::Result<Result<wit::Stat, wit::Error>> {
        let r = self.reference(&r)?;
        Ok(self
            .bridge
            .stat_file(&r, &path)
            .map(to_wit_stat)
            .map_err(to_wit_error))
    }

    fn evaluate(&mut self, r: Resource<SolvedRef>) -> wasmtime::Result<Result<(), wit::Error>> {
        let r = self.reference(&r)?;
        Ok(self.bridge.evaluate(&r).map_err(to_wit_error))
    }

    fn drop(&mut self, r: Resource<SolvedRef>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl wit::Host for HostState {
    fn options(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.options.clone())
    }

    fn worker_platforms(&mut self) -> wasmtime::Result<Vec<wit_llb::Platform>> {
        Ok(self
            .bridge
            .worker_platforms()
            .iter()
            .map(convert::platform_to_wit)
            .collect())
    }

    fn inputs(&mut self) -> wasmtime::Result<Vec<(String, wit_llb::Definition)>> {
        Ok(self
            .inputs
            .iter()
            .map(|(k, d)| (k.clone(), convert::to_wit(d)))
            .collect())
    }

    fn solve(
        &mut self,
        request: wit::SolveRequest,
    ) -> wasmtime::Result<Result<wit::SolveResult, wit::Error>> {
        let size = convert::wit_size(request.definition.as_ref())
            + request
                .frontend_inputs
                .iter()
                .map(|(_, d)| convert::wit_size(Some(d)))
                .sum::<usize>();
        self.charge(size)?;
        let result = match (request.definition, request.frontend) {
            (Some(_), Some(_)) => Err(GatewayError::new(
                bridge::ErrorKind::InvalidArgument,
                "cannot solve with both a definition and a frontend",
            )),
            (Some(def), None) => convert::from_wit(&def)
                .map(|pb| (convert::solved(pb), Vec::new(), Vec::new()))
                .map_err(|e| GatewayError::new(bridge::ErrorKind::InvalidArgument, e.to_string())),
            (None, Some(frontend)) => {
                let inputs: Result<Vec<_>, _> = request
                    .frontend_inputs
                    .iter()
                    .map(|(k, d)| convert::from_wit(d).map(|d| (k.clone(), d)))
                    .collect();
                inputs
                    .map_err(|e| {
                        GatewayError::new(bridge::ErrorKind::InvalidArgument, e.to_string())
                    })
                    .and_then(|inputs| {
                        self.bridge
                            .forward(&frontend, request.frontend_opts, inputs)
                    })
                    .map(|out| (out.reference, out.refs, out.metadata))
            }
            (None, None) => Ok((None, Vec::new(), Vec::new())),
        };
        let (reference, refs, metadata) = match result {
            Ok(r) => r,
            Err(e) => return Ok(Err(to_wit_error(e))),
        };
        if request.evaluate {
            for r in reference.iter().chain(refs.iter().map(|(_, r)| r)) {
                if let Err(e) = self.bridge.evaluate(r) {
                    return Ok(Err(to_wit_error(e)));
                }
            }
        }
        let ref_ = match reference {
            Some(r) => Some(self.table.push(r)?),
            None => None,
        };
        let mut wit_refs = Vec::with_capacity(refs.len());
        for (k, r) in refs {
            wit_refs.push((k, self.table.push(r)?));
        }
        Ok(Ok(wit::SolveResult {
            ref_,
            refs: wit_refs,
            metadata,
        }))
    }

    fn resolve_image_config(
        &mut self,
        request: wit::ResolveImageRequest,
    ) -> wasmtime::Result<Result<wit::ResolvedImage, wit::Error>> {
        let request = bridge::ImageRequest {
            reference: request.ref_,
            platform: request.platform.as_ref().map(convert::platform_from_wit),
            resolve_mode: match request.resolve_mode {
                wit::ResolveMode::Default => bridge::ResolveMode::Default,
                wit::ResolveMode::Pull => bridge::ResolveMode::Pull,
                wit::ResolveMode::Local => bridge::ResolveMode::Local,
            },
            log_name: request.log_name,
        };
        Ok(self
            .bridge
            .resolve_image_config(&request)
            .map(|r| wit::ResolvedImage {
                ref_: r.reference,
                digest: r.digest,
                config: r.config,
            })
            .map_err(to_wit_error))
    }

    fn warn(&mut self, warning: wit::Warning) -> wasmtime::Result<()> {
        self.charge(warning.short.len() + warning.detail.iter().map(String::len).sum::<usize>())?;
        let location = warning.source.map(|s| bridge::SourceLocation {
            filename: s.filename,
            ranges: warning.ranges.iter().map(from_wit_range).collect(),
        });
        self.bridge.event(Event::Warning {
            frontend: self.frontend.clone(),
            warning: bridge::Warning {
                level: warning.level,
                short: warning.short,
                detail: warning.detail,
                url: warning.url,
                location,
            },
        });
        Ok(())
    }

    fn log(&mut self, level: wit::LogLevel, message: String) -> wasmtime::Result<()> {
        self.charge(message.len())?;
        if level == wit::LogLevel::Error && message.starts_with("frontend panicked") {
            self.panic = Some(message.clone());
        }
        let level = match level {
            wit::LogLevel::Debug => bridge::LogLevel::Debug,
            wit::LogLevel::Info => bridge::LogLevel::Info,
            wit::LogLevel::Warn => bridge::LogLevel::Warn,
            wit::LogLevel::Error => bridge::LogLevel::Error,
        };
        self.bridge.event(Event::Log {
            frontend: self.frontend.clone(),
            level,
            message,
        });
        Ok(())
    }

    fn progress(
        &mut self,
        id: String,
        name: String,
        current: u64,
        total: u64,
        completed: bool,
    ) -> wasmtime::Result<()> {
        self.charge(id.len() + name.len())?;
        self.bridge.event(Event::Progress {
            frontend: self.frontend.clone(),
            id,
            name,
            current,
            total,
            completed,
        });
        Ok(())
    }
}
