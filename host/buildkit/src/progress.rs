//! The engine's events as BuildKit's status messages: every change of a vertex resends
//! the whole vertex (the CLIs merge by digest).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use buildwit_engine::EventSink;
use buildwit_frontend::Event;
use buildwit_solver::ProgressEvent;

use crate::jobs::Job;
use crate::proto::moby::buildkit::v1::{
    StatusResponse, Vertex, VertexLog, VertexStatus, VertexWarning,
};
use crate::{now, synthetic_digest};

/// A job's events, published on its status feed.
pub struct JobEvents {
    job: Arc<Job>,
    /// Vertices by digest, as last sent.
    vertices: Mutex<HashMap<String, Vertex>>,
}

impl JobEvents {
    /// Events of `job`.
    pub fn new(job: Arc<Job>) -> Arc<Self> {
        Arc::new(JobEvents {
            job,
            vertices: Mutex::default(),
        })
    }

    /// Send a vertex after `change`, keeping its earlier fields.
    fn vertex(&self, digest: &str, name: &str, change: impl FnOnce(&mut Vertex)) {
        let mut vertices = self.vertices.lock().unwrap_or_else(|e| e.into_inner());
        let v = vertices
            .entry(digest.to_string())
            .or_insert_with(|| Vertex {
                digest: digest.to_string(),
                name: name.to_string(),
                ..Default::default()
            });
        change(v);
        self.job.status.publish(StatusResponse {
            vertexes: vec![v.clone()],
            ..Default::default()
        });
    }

    /// A step of buildwitd's own (an export, a transfer): started now.
    pub fn start(&self, what: &str, name: &str) -> String {
        let digest = synthetic_digest(what);
        self.vertex(&digest, name, |v| v.started = Some(now()));
        digest
    }

    /// The end of a step of [`JobEvents::start`].
    pub fn complete(&self, digest: &str, error: Option<String>) {
        self.vertex(digest, "", |v| {
            v.completed = Some(now());
            v.error = error.unwrap_or_default();
        });
    }

    /// A line of a step's output (1 stdout, 2 stderr).
    pub fn log(&self, digest: &str, stream: i64, line: &str) {
        self.job.status.publish(StatusResponse {
            logs: vec![VertexLog {
                vertex: digest.to_string(),
                timestamp: Some(now()),
                stream,
                msg: format!("{line}\n").into_bytes(),
            }],
            ..Default::default()
        });
    }

    /// A warning of buildwitd itself, shown after the build.
    pub fn warn(&self, message: String) {
        tracing::warn!("{message}");
        self.job.status.publish(StatusResponse {
            warnings: vec![VertexWarning {
                vertex: String::new(),
                level: 1,
                short: message.into_bytes(),
                detail: Vec::new(),
                url: String::new(),
            }],
            ..Default::default()
        });
    }

    /// Vertices still running get `context canceled`, as BuildKit ends them.
    pub fn end_running(&self) {
        let running: Vec<String> = self
            .vertices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|v| v.started.is_some() && v.completed.is_none())
            .map(|v| v.digest.clone())
            .collect();
        for digest in running {
            self.complete(&digest, Some("context canceled".into()));
        }
    }
}

impl EventSink for JobEvents {
    fn event(&self, event: Event) {
        match event {
            Event::Warning { warning, .. } => self.job.status.publish(StatusResponse {
                warnings: vec![VertexWarning {
                    vertex: String::new(),
                    level: i64::from(warning.level),
                    short: warning.short.into_bytes(),
                    detail: warning.detail.into_iter().map(String::into_bytes).collect(),
                    url: warning.url,
                }],
                ..Default::default()
            }),
            Event::Progress {
                id,
                name,
                current,
                total,
                completed,
                ..
            } => {
                let digest = synthetic_digest(&format!("frontend-progress:{id}"));
                self.vertex(&digest, &name, |v| {
                    if v.started.is_none() {
                        v.started = Some(now());
                    }
                    if completed {
                        v.completed = Some(now());
                    }
                });
                if total > 0 || current > 0 {
                    self.job.status.publish(StatusResponse {
                        statuses: vec![VertexStatus {
                            id: name.clone(),
                            vertex: digest,
                            name: String::new(),
                            current: current as i64,
                            total: total as i64,
                            timestamp: Some(now()),
                            started: None,
                            completed: completed.then(now),
                        }],
                        ..Default::default()
                    });
                }
            }
            Event::Log { message, .. } => tracing::debug!("frontend: {message}"),
        }
    }

    fn progress(&self, event: ProgressEvent) {
        match event {
            ProgressEvent::Started { vertex, name } => self.vertex(&vertex, &name, |v| {
                v.started = Some(now());
                v.completed = None;
            }),
            ProgressEvent::Cached { vertex, name } => self.vertex(&vertex, &name, |v| {
                let t = now();
                v.cached = true;
                v.started = Some(t);
                v.completed = Some(t);
            }),
            ProgressEvent::Completed {
                vertex,
                name,
                error,
                ..
            } => self.vertex(&vertex, &name, |v| {
                let t = now();
                v.started.get_or_insert(t);
                v.completed = Some(t);
                v.error = error.unwrap_or_default();
            }),
            ProgressEvent::Log {
                vertex,
                stream,
                line,
            } => self.log(&vertex, i64::from(stream), &line),
        }
    }
}
