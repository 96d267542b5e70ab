//! `buildwit history ls` and `inspect`: past builds, as `docker buildx history` shows them.

use anyhow::Result;

use crate::backend::Backend;
use buildwit_engine::history::HistoryRecord;

use crate::cache::{human_duration, utc};

fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// The table of past builds, newest first.
pub fn ls(engine: &Backend) -> Result<()> {
    let now = buildwit_engine::history::now();
    println!(
        "{:<27}{:<40}{:<11}{:<28}DURATION",
        "BUILD ID", "NAME", "STATUS", "CREATED AT"
    );
    for r in engine.history()? {
        let ago = format!("{} ago", human_duration(now.saturating_sub(r.created)));
        println!(
            "{:<27}{:<40}{:<11}{:<28}{}",
            r.id,
            r.name,
            r.status,
            ago,
            seconds(r.duration_ms)
        );
    }
    Ok(())
}

/// The details of one build.
pub fn inspect(engine: &Backend, id: &str) -> Result<()> {
    let r = engine.history_get(id)?;
    print!("{}", details(&r));
    Ok(())
}

fn details(r: &HistoryRecord) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<18}{v}\n"));
    line("Build ID:", &r.id);
    line("Context:", &r.name);
    line("Frontend:", &r.frontend);
    if let Some(f) = &r.served_by {
        line(
            "Served by:",
            &format!("{} {} ({}) from {}", f.name, f.version, f.channel, f.source),
        );
        line("Frontend digest:", &f.digest);
        line("WIT:", &f.wit_version);
    }
    if !r.target.is_empty() {
        line("Target:", &r.target);
    }
    line("Started:", &utc(r.created));
    line("Duration:", &seconds(r.duration_ms));
    line("Status:", &r.status);
    if let Some(e) = &r.error {
        line("Error:", e);
    }
    line(
        "Build Steps:",
        &format!("{} ({} cached)", r.steps, r.cached_steps),
    );
    for o in &r.outputs {
        line("Output:", o);
    }
    out
}
