//! Build progress for people (`tty`, a live display redrawn in place; `plain`, BuildKit's
//! line format for logs and CI) and machines (`rawjson`, one BuildKit `SolveStatus`-shaped
//! JSON object per line).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use buildwit_engine::EventSink;
use buildwit_frontend::bridge::{Event, LogLevel};
use buildwit_solver::ProgressEvent;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A live display of the steps, redrawn in place.
    Tty,
    /// `#N name` / `#N DONE 0.3s` lines.
    Plain,
    /// JSON lines.
    RawJson,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// `--progress` value; `auto` is `tty` on a terminal, else `plain`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        use std::io::IsTerminal;
        Ok(match s {
            "auto" if std::io::stderr().is_terminal() => Mode::Tty,
            "auto" | "plain" => Mode::Plain,
            "tty" => Mode::Tty,
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
    /// The live display: steps in order of appearance, and how many lines it drew last.
    steps: Vec<Step>,
    drawn: usize,
    begun: Option<Instant>,
}

/// A step as the live display shows it.
struct Step {
    vertex: String,
    name: String,
    started: Instant,
    finished: Option<std::time::Duration>,
    cached: bool,
    error: bool,
    logs: std::collections::VecDeque<String>,
}

/// Steps and log lines the live display shows at most.
const TTY_STEPS: usize = 24;
const TTY_LOGS: usize = 6;

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
        if self.mode == Mode::RawJson {
            // Warnings as SolveStatus carries them; frontend logs stay out of the stream.
            if let Event::Warning { warning, .. } = event {
                let w = serde_json::json!({"warnings": [{
                    "level": warning.level, "short": warning.short, "detail": warning.detail, "url": warning.url,
                }]});
                let _ = writeln!(std::io::stderr().lock(), "{w}");
            }
            return;
        }
        if self.mode == Mode::Quiet {
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
        if self.mode == Mode::Tty {
            tty_update(&mut state, event);
            tty_draw(&mut state);
            return;
        }
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

fn tty_update(state: &mut State, event: ProgressEvent) {
    state.begun.get_or_insert_with(Instant::now);
    let find = |state: &mut State, vertex: &str, name: &str| -> usize {
        match state.steps.iter().position(|s| s.vertex == vertex) {
            Some(i) => i,
            None => {
                state.steps.push(Step {
                    vertex: vertex.to_string(),
                    name: name.to_string(),
                    started: Instant::now(),
                    finished: None,
                    cached: false,
                    error: false,
                    logs: Default::default(),
                });
                state.steps.len() - 1
            }
        }
    };
    match event {
        ProgressEvent::Started { vertex, name } => {
            let i = find(state, &vertex, &name);
            state.steps[i].started = Instant::now();
        }
        ProgressEvent::Cached { vertex, name } => {
            let i = find(state, &vertex, &name);
            state.steps[i].cached = true;
            state.steps[i].finished = Some(Default::default());
        }
        ProgressEvent::Completed {
            vertex,
            name,
            duration,
            error,
        } => {
            let i = find(state, &vertex, &name);
            state.steps[i].finished = Some(duration);
            state.steps[i].error = error.is_some();
        }
        ProgressEvent::Log { vertex, line, .. } => {
            if let Some(step) = state.steps.iter_mut().find(|s| s.vertex == vertex) {
                if step.logs.len() == TTY_LOGS {
                    step.logs.pop_front();
                }
                step.logs.push_back(line);
            }
        }
    }
}

/// Redraw the live display over the one drawn before.
fn tty_draw(state: &mut State) {
    let mut out = String::new();
    if state.drawn > 0 {
        out.push_str(&format!("\x1b[{}A", state.drawn));
    }
    let done = state.steps.iter().filter(|s| s.finished.is_some()).count();
    let elapsed = state.begun.map_or(0.0, |b| b.elapsed().as_secs_f64());
    let mut lines = vec![format!(
        "[+] Building {elapsed:.1}s ({done}/{})",
        state.steps.len()
    )];
    let skip = state.steps.len().saturating_sub(TTY_STEPS);
    for step in &state.steps[skip..] {
        let time = step
            .finished
            .unwrap_or_else(|| step.started.elapsed())
            .as_secs_f64();
        let tag = match (step.cached, step.error) {
            (true, _) => "CACHED ",
            (_, true) => "ERROR ",
            _ => "",
        };
        lines.push(format!(" => {tag}{:<60} {time:.1}s", step.name));
        // Output of running steps only; finished steps collapse to one line.
        if step.finished.is_none() || step.error {
            for log in &step.logs {
                lines.push(format!(" => => # {log}"));
            }
        }
    }
    for line in &lines {
        out.push_str("\x1b[2K");
        out.push_str(line);
        out.push('\n');
    }
    // Lines left over from a taller previous frame are cleared.
    for _ in lines.len()..state.drawn {
        out.push_str("\x1b[2K\n");
    }
    let extra = state.drawn.saturating_sub(lines.len());
    if extra > 0 {
        out.push_str(&format!("\x1b[{extra}A"));
    }
    state.drawn = lines.len();
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(out.as_bytes());
    let _ = err.flush();
}
