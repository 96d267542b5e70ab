//! Build progress for people (`plain`, BuildKit's line format) and machines (`rawjson`,
//! one BuildKit `SolveStatus`-shaped JSON object per line).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use buildwit_daemon::EventSink;
use buildwit_frontend::bridge::{Event, LogLevel};
use buildwit_solver::ProgressEvent;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `#N name` / `#N DONE 0.3s` lines.
    Plain,
    /// JSON lines.
    RawJson,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// `--progress` value. `auto` and `tty` print plain lines (no live display yet).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "auto" | "tty" | "plain" => Mode::Plain,
            "rawjson" => Mode::RawJson,
            "quiet" | "none" => Mode::Quiet,
            other => anyhow::bail!(
                "unknown --progress {other:?}: use auto, tty, plain, rawjson or quiet"
            ),
        })
    }
}

#[derive(Default)]
struct State {
    numbers: HashMap<String, usize>,
    started: HashMap<String, Instant>,
}

/// Prints build events to stderr.
pub struct Printer {
    mode: Mode,
    state: Mutex<State>,
}

impl Printer {
    /// A printer in one mode.
    pub fn new(mode: Mode) -> Self {
        Printer {
            mode,
            state: Mutex::new(State::default()),
        }
    }

    fn number(state: &mut State, vertex: &str) -> usize {
        let next = state.numbers.len() + 1;
        *state.numbers.entry(vertex.to_string()).or_insert(next)
    }
}

fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

impl EventSink for Printer {
    fn event(&self, event: Event) {
        if self.mode != Mode::Plain {
            return;
        }
        match event {
            Event::Log {
                frontend,
                level,
                message,
            } => {
                let tag = match level {
                    LogLevel::Debug => "debug",
                    LogLevel::Info => "info",
                    LogLevel::Warn => "warn",
                    LogLevel::Error => "error",
                };
                eprintln!("#0 [{frontend}] {tag}: {message}");
            }
            Event::Warning { warning, .. } => {
                let at = warning
                    .location
                    .as_ref()
                    .map(|l| {
                        format!(
                            " ({}:{})",
                            l.filename,
                            l.ranges.first().map_or(0, |r| r.start_line)
                        )
                    })
                    .unwrap_or_default();
                eprintln!("WARNING: {}{at}", warning.short);
            }
            Event::Progress {
                name,
                current,
                total,
                completed,
                ..
            } => {
                if completed {
                    eprintln!("#0 {name} DONE");
                } else if total > 0 {
                    eprintln!("#0 {name} {current}/{total}");
                }
            }
        }
    }

    fn progress(&self, event: ProgressEvent) {
        let mut state = self.state.lock().unwrap();
        if self.mode == Mode::RawJson {
            let line = match &event {
                ProgressEvent::Started { vertex, name } => {
                    serde_json::json!({"vertexes": [{"digest": vertex, "name": name, "started": rfc3339_now()}]})
                }
                ProgressEvent::Cached { vertex, name } => {
                    serde_json::json!({"vertexes": [{"digest": vertex, "name": name, "cached": true, "started": rfc3339_now(), "completed": rfc3339_now()}]})
                }
                ProgressEvent::Completed {
                    vertex,
                    name,
                    error,
                    ..
                } => {
                    let mut v = serde_json::json!({"digest": vertex, "name": name, "completed": rfc3339_now()});
                    if let Some(e) = error {
                        v["error"] = e.clone().into();
                    }
                    serde_json::json!({"vertexes": [v]})
                }
                ProgressEvent::Log {
                    vertex,
                    stream,
                    line,
                } => {
                    serde_json::json!({"logs": [{"vertex": vertex, "stream": stream, "data": format!("{line}\n"), "timestamp": rfc3339_now()}]})
                }
            };
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
            return;
        }
        if self.mode != Mode::Plain {
            return;
        }
        match event {
            ProgressEvent::Started { vertex, name } => {
                let n = Self::number(&mut state, &vertex);
                state.started.insert(vertex, Instant::now());
                eprintln!("#{n} {name}");
            }
            ProgressEvent::Cached { vertex, name } => {
                let n = Self::number(&mut state, &vertex);
                eprintln!("#{n} {name}\n#{n} CACHED");
            }
            ProgressEvent::Completed {
                vertex,
                duration,
                error,
                ..
            } => {
                let n = Self::number(&mut state, &vertex);
                match error {
                    None => eprintln!("#{n} DONE {:.1}s", duration.as_secs_f64()),
                    Some(e) => eprintln!("#{n} ERROR: {e}"),
                }
            }
            ProgressEvent::Log { vertex, line, .. } => {
                let n = Self::number(&mut state, &vertex);
                let t = state
                    .started
                    .get(&vertex)
                    .map_or(0.0, |s| s.elapsed().as_secs_f64());
                eprintln!("#{n} {t:.3} {line}");
            }
        }
    }
}
