//! Progress of a solve, per vertex, as BuildKit reports it.

use std::time::Duration;

/// One progress event.
#[derive(Clone, Debug, PartialEq)]
pub enum ProgressEvent {
    /// A vertex started running.
    Started {
        /// Its op digest.
        vertex: String,
        /// Its name (`[stage-0 2/3] RUN make`).
        name: String,
    },
    /// A vertex's result came from the cache.
    Cached {
        /// Its op digest.
        vertex: String,
        /// Its name.
        name: String,
    },
    /// A vertex finished, or failed.
    Completed {
        /// Its op digest.
        vertex: String,
        /// Its name.
        name: String,
        /// How long it ran.
        duration: Duration,
        /// Why it failed.
        error: Option<String>,
    },
    /// A line of output of a running vertex.
    Log {
        /// Its op digest.
        vertex: String,
        /// 1 stdout, 2 stderr.
        stream: u8,
        /// The line.
        line: String,
    },
}

/// Where progress events go.
pub trait Progress: Send + Sync {
    /// One event.
    fn event(&self, event: ProgressEvent);
}

impl<F: Fn(ProgressEvent) + Send + Sync> Progress for F {
    fn event(&self, event: ProgressEvent) {
        self(event)
    }
}
