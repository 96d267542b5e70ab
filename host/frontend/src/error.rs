//! Errors of the frontend host. Every one names the frontend.

use std::time::Duration;

use crate::bridge::GatewayError;

/// A limit a frontend can hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Wall time of a run.
    Deadline(Duration),
    /// Linear memory, bytes.
    Memory(usize),
    /// Wasm stack, bytes.
    Stack(usize),
    /// Bytes handed to the host in one run.
    Output(usize),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Deadline(d) => write!(f, "the deadline of {:.1}s", d.as_secs_f64()),
            Limit::Memory(b) => write!(f, "the memory limit of {} MiB", b >> 20),
            Limit::Stack(b) => write!(f, "the stack limit of {} KiB", b >> 10),
            Limit::Output(b) => write!(f, "the output limit of {} MiB", b >> 20),
        }
    }
}

/// Why running a frontend failed.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// The engine could not be set up.
    #[error("cannot start the Wasm engine: {0}")]
    Engine(String),
    /// The component is not a usable frontend.
    #[error("cannot load frontend {frontend}: {reason}")]
    Load {
        /// Which frontend.
        frontend: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The frontend ran into a limit and was stopped.
    #[error("frontend {frontend} exceeded {limit} and was stopped ({detail})")]
    LimitExceeded {
        /// Which frontend.
        frontend: String,
        /// Which limit.
        limit: Limit,
        /// What the engine said.
        detail: String,
    },
    /// The frontend crashed.
    #[error("frontend {frontend} crashed: {}", panic.as_deref().unwrap_or(detail))]
    Trap {
        /// Which frontend.
        frontend: String,
        /// Its panic message, if it reported one.
        panic: Option<String>,
        /// The trap.
        detail: String,
    },
    /// The frontend returned an error: the build definition is wrong, or a gateway call
    /// failed.
    #[error("{}", build_message(frontend, error))]
    Build {
        /// Which frontend.
        frontend: String,
        /// Its error.
        error: GatewayError,
    },
    /// The frontend returned something unusable.
    #[error("frontend {frontend} returned an invalid result: {reason}")]
    Output {
        /// Which frontend.
        frontend: String,
        /// What is wrong.
        reason: String,
    },
}

fn build_message(frontend: &str, error: &GatewayError) -> String {
    match &error.location {
        Some(loc) => {
            let line = loc.ranges.first().map(|r| r.start_line).unwrap_or(0);
            format!(
                "{}:{}: {} (frontend {frontend})",
                loc.filename, line, error.message
            )
        }
        None => format!("{} (frontend {frontend})", error.message),
    }
}
