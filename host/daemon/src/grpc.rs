//! buildwit's gRPC API (`proto/buildwit.proto`) and the conversions between its messages
//! and the engine's types, shared by buildwitd and the CLI's client.

use std::time::Duration;

use buildwit_config::PruneRule;
use buildwit_frontend::Event;
use buildwit_frontend::bridge::{LineRange, LogLevel, SourceLocation, Warning};
use buildwit_solver::{ProgressEvent, SolveError, UsageRecord};

use buildwit_engine::history::HistoryRecord;
use buildwit_engine::info::DaemonInfo;
use buildwit_engine::{DaemonError, Exported, FrontendRecord};

/// The generated messages, client and server.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("buildwit.v1");
}

use proto::{frontend_event, vertex_event};

/// The largest message either side accepts (components and file chunks stay far below).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Bytes of file content per message.
pub const CHUNK: usize = 1 << 20;

impl From<&FrontendRecord> for proto::FrontendRecord {
    fn from(r: &FrontendRecord) -> Self {
        proto::FrontendRecord {
            source: r.source.clone(),
            digest: r.digest.clone(),
            wit_version: r.wit_version.clone(),
            name: r.name.clone(),
            version: r.version.clone(),
            channel: r.channel.clone(),
            compiled: r.compiled,
        }
    }
}

impl From<proto::FrontendRecord> for FrontendRecord {
    fn from(r: proto::FrontendRecord) -> Self {
        FrontendRecord {
            source: r.source,
            digest: r.digest,
            wit_version: r.wit_version,
            name: r.name,
            version: r.version,
            channel: r.channel,
            compiled: r.compiled,
        }
    }
}

impl From<&Exported> for proto::Exported {
    fn from(e: &Exported) -> Self {
        proto::Exported {
            kind: e.kind.clone(),
            dest: e.dest.clone(),
            digest: e.digest.clone(),
            manifest_media_type: e.manifest.as_ref().map(|m| m.0.clone()),
            manifest_size: e.manifest.as_ref().map_or(0, |m| m.1),
            config_digest: e.config_digest.clone(),
            names: e.names.clone(),
        }
    }
}

impl From<proto::Exported> for Exported {
    fn from(e: proto::Exported) -> Self {
        Exported {
            kind: e.kind,
            dest: e.dest,
            digest: e.digest,
            manifest: e.manifest_media_type.map(|t| (t, e.manifest_size)),
            config_digest: e.config_digest,
            names: e.names,
        }
    }
}

impl From<&UsageRecord> for proto::UsageRecord {
    fn from(r: &UsageRecord) -> Self {
        proto::UsageRecord {
            id: r.id.clone(),
            record_type: r.record_type.clone(),
            description: r.description.clone(),
            size: r.size,
            created: r.created,
            last_used: r.last_used,
            usage_count: r.usage_count,
            shared: r.shared,
            in_use: r.in_use,
            mutable: r.mutable,
        }
    }
}

impl From<proto::UsageRecord> for UsageRecord {
    fn from(r: proto::UsageRecord) -> Self {
        UsageRecord {
            id: r.id,
            record_type: r.record_type,
            description: r.description,
            size: r.size,
            created: r.created,
            last_used: r.last_used,
            usage_count: r.usage_count,
            shared: r.shared,
            in_use: r.in_use,
            mutable: r.mutable,
        }
    }
}

impl From<&PruneRule> for proto::PruneRule {
    fn from(r: &PruneRule) -> Self {
        proto::PruneRule {
            all: r.all,
            filters: r.filters.clone(),
            keep_duration_secs: r.keep_duration.as_secs(),
            reserved_space: r.reserved_space,
            max_used_space: r.max_used_space,
            min_free_space: r.min_free_space,
        }
    }
}

impl From<proto::PruneRule> for PruneRule {
    fn from(r: proto::PruneRule) -> Self {
        PruneRule {
            all: r.all,
            filters: r.filters,
            keep_duration: Duration::from_secs(r.keep_duration_secs),
            reserved_space: r.reserved_space,
            max_used_space: r.max_used_space,
            min_free_space: r.min_free_space,
        }
    }
}

impl From<&HistoryRecord> for proto::HistoryRecord {
    fn from(r: &HistoryRecord) -> Self {
        proto::HistoryRecord {
            id: r.id.clone(),
            name: r.name.clone(),
            created: r.created,
            duration_ms: r.duration_ms,
            status: r.status.clone(),
            error: r.error.clone(),
            frontend: r.frontend.clone(),
            served_by: r.served_by.as_ref().map(Into::into),
            target: r.target.clone(),
            steps: r.steps as u64,
            cached_steps: r.cached_steps as u64,
            outputs: r.outputs.clone(),
        }
    }
}

impl From<proto::HistoryRecord> for HistoryRecord {
    fn from(r: proto::HistoryRecord) -> Self {
        HistoryRecord {
            id: r.id,
            name: r.name,
            created: r.created,
            duration_ms: r.duration_ms,
            status: r.status,
            error: r.error,
            frontend: r.frontend,
            served_by: r.served_by.map(Into::into),
            target: r.target,
            steps: r.steps as usize,
            cached_steps: r.cached_steps as usize,
            outputs: r.outputs,
        }
    }
}

impl From<&DaemonInfo> for proto::InfoResponse {
    fn from(i: &DaemonInfo) -> Self {
        proto::InfoResponse {
            version: i.version.clone(),
            root: i.root.clone(),
            disk_size: i.disk_size,
            platforms: i.platforms.clone(),
            labels: i
                .labels
                .iter()
                .map(|(k, v)| proto::KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            gc_policy: i.gc_policy.iter().map(Into::into).collect(),
            max_parallelism: i.max_parallelism,
            frontends: i
                .frontends
                .iter()
                .map(
                    |(reference, name, version, channel)| proto::BuiltinFrontend {
                        reference: reference.clone(),
                        name: name.clone(),
                        version: version.clone(),
                        channel: channel.clone(),
                    },
                )
                .collect(),
            enabled_frontends: i.enabled_frontends.clone(),
            config: i.config.clone(),
        }
    }
}

impl From<proto::InfoResponse> for DaemonInfo {
    fn from(i: proto::InfoResponse) -> Self {
        DaemonInfo {
            version: i.version,
            root: i.root,
            disk_size: i.disk_size,
            platforms: i.platforms,
            labels: i.labels.into_iter().map(|kv| (kv.key, kv.value)).collect(),
            gc_policy: i.gc_policy.into_iter().map(Into::into).collect(),
            max_parallelism: i.max_parallelism,
            frontends: i
                .frontends
                .into_iter()
                .map(|f| (f.reference, f.name, f.version, f.channel))
                .collect(),
            enabled_frontends: i.enabled_frontends,
            config: i.config,
        }
    }
}

/// A frontend event as a message.
pub fn event_to_proto(event: &Event) -> proto::FrontendEvent {
    match event {
        Event::Log {
            frontend,
            level,
            message,
        } => proto::FrontendEvent {
            frontend: frontend.clone(),
            event: Some(frontend_event::Event::Log(proto::FrontendLog {
                level: match level {
                    LogLevel::Debug => 0,
                    LogLevel::Info => 1,
                    LogLevel::Warn => 2,
                    LogLevel::Error => 3,
                },
                message: message.clone(),
            })),
        },
        Event::Warning { frontend, warning } => proto::FrontendEvent {
            frontend: frontend.clone(),
            event: Some(frontend_event::Event::Warning(proto::FrontendWarning {
                level: warning.level,
                short: warning.short.clone(),
                detail: warning.detail.clone(),
                url: warning.url.clone(),
                location: warning.location.as_ref().map(|l| proto::SourceLocation {
                    file: l.filename.clone(),
                    ranges: l
                        .ranges
                        .iter()
                        .map(|r| proto::LineRange {
                            start_line: r.start_line,
                            start_column: r.start_column,
                            end_line: r.end_line,
                            end_column: r.end_column,
                        })
                        .collect(),
                }),
            })),
        },
        Event::Progress {
            frontend,
            id,
            name,
            current,
            total,
            completed,
        } => proto::FrontendEvent {
            frontend: frontend.clone(),
            event: Some(frontend_event::Event::Progress(proto::FrontendProgress {
                id: id.clone(),
                name: name.clone(),
                current: *current,
                total: *total,
                completed: *completed,
            })),
        },
    }
}

/// A frontend event from a message (`None`: an empty or unknown event).
pub fn event_from_proto(e: proto::FrontendEvent) -> Option<Event> {
    let frontend = e.frontend;
    Some(match e.event? {
        frontend_event::Event::Log(l) => Event::Log {
            frontend,
            level: match l.level {
                0 => LogLevel::Debug,
                1 => LogLevel::Info,
                2 => LogLevel::Warn,
                _ => LogLevel::Error,
            },
            message: l.message,
        },
        frontend_event::Event::Warning(w) => Event::Warning {
            frontend,
            warning: Warning {
                level: w.level,
                short: w.short,
                detail: w.detail,
                url: w.url,
                location: w.location.map(|l| SourceLocation {
                    filename: l.file,
                    ranges: l
                        .ranges
                        .into_iter()
                        .map(|r| LineRange {
                            start_line: r.start_line,
                            start_column: r.start_column,
                            end_line: r.end_line,
                            end_column: r.end_column,
                        })
                        .collect(),
                }),
            },
        },
        frontend_event::Event::Progress(p) => Event::Progress {
            frontend,
            id: p.id,
            name: p.name,
            current: p.current,
            total: p.total,
            completed: p.completed,
        },
    })
}

/// A progress event as a message.
pub fn progress_to_proto(event: &ProgressEvent) -> proto::VertexEvent {
    let (vertex, event) = match event {
        ProgressEvent::Started { vertex, name } => {
            (vertex, vertex_event::Event::Started(name.clone()))
        }
        ProgressEvent::Cached { vertex, name } => {
            (vertex, vertex_event::Event::Cached(name.clone()))
        }
        ProgressEvent::Completed {
            vertex,
            name,
            duration,
            error,
        } => (
            vertex,
            vertex_event::Event::Completed(proto::VertexCompleted {
                name: name.clone(),
                duration_ns: duration.as_nanos() as u64,
                error: error.clone(),
            }),
        ),
        ProgressEvent::Log {
            vertex,
            stream,
            line,
        } => (
            vertex,
            vertex_event::Event::Log(proto::VertexLog {
                stream: u32::from(*stream),
                line: line.clone(),
            }),
        ),
    };
    proto::VertexEvent {
        vertex: vertex.clone(),
        event: Some(event),
    }
}

/// A progress event from a message (`None`: empty).
pub fn progress_from_proto(e: proto::VertexEvent) -> Option<ProgressEvent> {
    let vertex = e.vertex;
    Some(match e.event? {
        vertex_event::Event::Started(name) => ProgressEvent::Started { vertex, name },
        vertex_event::Event::Cached(name) => ProgressEvent::Cached { vertex, name },
        vertex_event::Event::Completed(c) => ProgressEvent::Completed {
            vertex,
            name: c.name,
            duration: Duration::from_nanos(c.duration_ns),
            error: c.error,
        },
        vertex_event::Event::Log(l) => ProgressEvent::Log {
            vertex,
            stream: u8::try_from(l.stream).unwrap_or(2),
            line: l.line,
        },
    })
}

/// The status a failed engine call answers with; a failed step carries its name, exit
/// code and last lines in the details, so the client shows them as in-process.
pub fn error_to_status(e: &DaemonError) -> tonic::Status {
    use tonic::Code;
    let code = match e {
        DaemonError::InvalidFrontend(_) => Code::InvalidArgument,
        DaemonError::Policy(_) => Code::PermissionDenied,
        DaemonError::Frontend(_) => Code::FailedPrecondition,
        DaemonError::Setup(_) | DaemonError::Cache(_) => Code::Internal,
        DaemonError::Export(_) => Code::Aborted,
        DaemonError::Solve(SolveError::Invalid(_)) => Code::InvalidArgument,
        DaemonError::Solve(SolveError::Entitlement(_)) => Code::PermissionDenied,
        DaemonError::Solve(SolveError::Internal(_)) => Code::Internal,
        DaemonError::Solve(SolveError::Step { .. }) => Code::Aborted,
    };
    if let DaemonError::Solve(SolveError::Step {
        name,
        message,
        exit_code,
        tail,
    }) = e
    {
        // Details travel in the trailers, which clients cap (hyper: 16 KiB): long lines
        // are cut so the failure arrives rather than a transport error.
        let details = prost::Message::encode_to_vec(&proto::StepFailure {
            name: cut(name, 1024),
            message: cut(message, 1024),
            exit_code: *exit_code,
            tail: tail.iter().map(|l| cut(l, 256)).collect(),
        });
        return tonic::Status::with_details(code, cut(&e.to_string(), 2048), details.into());
    }
    tonic::Status::new(code, cut(&e.to_string(), 4096))
}

/// `s` cut to at most `max` bytes (on a character boundary), marked when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The failed step a status carries, if any.
pub fn step_failure(status: &tonic::Status) -> Option<DaemonError> {
    if status.details().is_empty() {
        return None;
    }
    let f: proto::StepFailure = prost::Message::decode(status.details()).ok()?;
    Some(DaemonError::Solve(SolveError::Step {
        name: f.name,
        message: f.message,
        exit_code: f.exit_code,
        tail: f.tail,
    }))
}
