//! `buildwit du` and `buildwit prune`, with buildctl's output.

use anyhow::{Context, Result};
use buildwit_config::{DiskSpace, Duration as ConfigDuration, PruneRule};
use buildwit_solver::UsageRecord;

/// `buildwit du`.
#[derive(clap::Args)]
pub struct DuArgs {
    /// Show every field of each record.
    #[arg(short, long)]
    pub verbose: bool,
    /// Only records matching (`type==source.local`, `id==…`, `description~=…`); repeat
    /// for alternatives.
    #[arg(long = "filter", short = 'f')]
    pub filters: Vec<String>,
}

/// `buildwit prune`.
#[derive(clap::Args)]
pub struct PruneArgs {
    /// Include internal and frontend records, and records other records build on.
    #[arg(short, long)]
    pub all: bool,
    /// Only records matching (repeat for alternatives).
    #[arg(long = "filter", short = 'f')]
    pub filters: Vec<String>,
    /// Keep records used within this duration (`48h`, or seconds).
    #[arg(long)]
    pub keep_duration: Option<String>,
    /// Never free below this much (`512MB`, `10%`, bytes).
    #[arg(long)]
    pub reserved_space: Option<String>,
    /// Free until the cache uses at most this much.
    #[arg(long)]
    pub max_used_space: Option<String>,
    /// Free until this much of the disk is free.
    #[arg(long)]
    pub min_free_space: Option<String>,
    /// Deprecated: MB of cache to keep (same as --reserved-space).
    #[arg(long)]
    pub keep_storage: Option<f64>,
    /// List what was removed.
    #[arg(short, long)]
    pub verbose: bool,
}

fn size_flag(flag: &str, value: Option<&str>, disk: i64) -> Result<i64> {
    Ok(value
        .map(DiskSpace::parse)
        .transpose()
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("--{flag}"))?
        .map_or(0, |d| d.as_bytes(disk)))
}

impl PruneArgs {
    /// The rule these flags ask for, sizes in bytes of a disk of `disk` bytes.
    pub fn rule(&self, disk: i64) -> Result<PruneRule> {
        let keep_duration = self
            .keep_duration
            .as_deref()
            .map(ConfigDuration::parse)
            .transpose()
            .map_err(anyhow::Error::msg)
            .context("--keep-duration")?
            .map_or(std::time::Duration::ZERO, |d| d.as_std());
        let mut reserved_space = size_flag("reserved-space", self.reserved_space.as_deref(), disk)?;
        if reserved_space == 0
            && let Some(mb) = self.keep_storage
        {
            reserved_space = (mb * 1e6) as i64;
        }
        Ok(PruneRule {
            all: self.all,
            filters: self.filters.clone(),
            keep_duration,
            reserved_space,
            max_used_space: size_flag("max-used-space", self.max_used_space.as_deref(), disk)?,
            min_free_space: size_flag("min-free-space", self.min_free_space.as_deref(), disk)?,
        })
    }
}

/// Run `du`.
pub fn du(engine: &crate::backend::Backend, args: &DuArgs) -> Result<()> {
    let records = engine.disk_usage(&args.filters)?;
    let now = now();
    let mut out = if args.verbose {
        records.iter().map(|r| verbose(r, now)).collect::<String>()
    } else {
        table(&records, now)
    };
    out.push_str(&summary(&records));
    print!("{out}");
    Ok(())
}

/// Run `prune`.
pub fn prune(engine: &crate::backend::Backend, args: &PruneArgs) -> Result<()> {
    let rule = args.rule(engine.disk_size()?)?;
    let report = engine.prune(&rule)?;
    let now = now();
    let mut out = String::new();
    if args.verbose {
        for r in &report.records {
            out.push_str(&verbose(r, now));
        }
    }
    out.push_str(&tabbed(&[vec!["Total:".into(), human_size(report.freed)]]));
    print!("{out}");
    Ok(())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Rows aligned as Go's tabwriter does with a tab pad character (minwidth 1, tabwidth 8,
/// padding 1): each column but the last is padded with tabs to a multiple of 8.
fn tabbed(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max((cell.chars().count() + 1).div_ceil(8) * 8);
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let len = cell.chars().count();
                let tabs = (widths[i] - len).div_ceil(8).max(1);
                out.push_str(&"\t".repeat(tabs));
            }
        }
        out.push('\n');
    }
    out
}

/// buildctl's table: `ID  RECLAIMABLE  SIZE  LAST ACCESSED`; mutable ids and shared sizes
/// get a `*`.
pub fn table(records: &[UsageRecord], now: u64) -> String {
    let mut rows = vec![vec![
        "ID".to_string(),
        "RECLAIMABLE".into(),
        "SIZE".into(),
        "LAST ACCESSED".into(),
    ]];
    for r in records {
        rows.push(vec![
            format!("{}{}", r.id, if r.mutable { "*" } else { "" }),
            (!r.in_use).to_string(),
            format!("{}{}", human_size(r.size), if r.shared { "*" } else { "" }),
            r.last_used
                .map(|t| format!("{} ago", human_duration(now.saturating_sub(t))))
                .unwrap_or_default(),
        ]);
    }
    tabbed(&rows)
}

/// buildctl's `du -v` block of one record.
pub fn verbose(r: &UsageRecord, now: u64) -> String {
    let mut rows = vec![
        vec!["ID:".to_string(), r.id.clone()],
        vec!["Created at:".into(), utc(r.created)],
        vec!["Mutable:".into(), r.mutable.to_string()],
        vec!["Reclaimable:".into(), (!r.in_use).to_string()],
        vec!["Shared:".into(), r.shared.to_string()],
        vec!["Size:".into(), human_size(r.size)],
        vec!["Description:".into(), r.description.clone()],
        vec!["Usage count:".into(), r.usage_count.to_string()],
    ];
    if let Some(t) = r.last_used {
        rows.push(vec![
            "Last used:".into(),
            format!("{} ago", human_duration(now.saturating_sub(t))),
        ]);
    }
    rows.push(vec!["Type:".into(), r.record_type.clone()]);
    let mut out = tabbed(&rows);
    out.push('\n');
    out
}

/// buildctl's totals: `Shared:`/`Private:` when something is shared, then `Reclaimable:`
/// (what no running build holds) and `Total:`.
pub fn summary(records: &[UsageRecord]) -> String {
    let (mut shared, mut private, mut reclaimable) = (0, 0, 0);
    for r in records {
        if r.shared {
            shared += r.size;
        } else {
            private += r.size;
        }
        if !r.in_use {
            reclaimable += r.size;
        }
    }
    let mut rows = Vec::new();
    if shared > 0 {
        rows.push(vec!["Shared:".to_string(), human_size(shared)]);
        rows.push(vec!["Private:".to_string(), human_size(private)]);
    }
    rows.push(vec!["Reclaimable:".to_string(), human_size(reclaimable)]);
    rows.push(vec!["Total:".to_string(), human_size(shared + private)]);
    tabbed(&rows)
}

/// go-units `HumanSize`: decimal units, four significant digits (`454.6MB`, `512B`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    format!("{}{}", significant(size, 4), UNITS[unit])
}

/// `%.Ng` for numbers below 1000: N significant digits, trailing zeros dropped.
fn significant(x: f64, digits: i32) -> String {
    let int_digits = if x < 1.0 {
        1
    } else {
        x.log10().floor() as i32 + 1
    };
    let decimals = (digits - int_digits).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// go-units `HumanDuration` of a number of seconds.
pub fn human_duration(secs: u64) -> String {
    let minutes = secs / 60;
    let hours = (secs as f64 / 3600.0 + 0.5) as u64;
    match () {
        _ if secs < 1 => "Less than a second".into(),
        _ if secs == 1 => "1 second".into(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// Unix seconds as Go prints a UTC `time.Time` (`2024-05-01 10:00:00 +0000 UTC`).
pub fn utc(secs: u64) -> String {
    buildwit_exporter::rfc3339_utc(secs as i64)
        .replace('T', " ")
        .replace('Z', " +0000 UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, size: u64, shared: bool, in_use: bool) -> UsageRecord {
        UsageRecord {
            id: id.into(),
            record_type: "regular".into(),
            description: "/bin/sh -c make".into(),
            size,
            created: 1_700_000_000,
            last_used: Some(1_700_000_000),
            usage_count: 2,
            shared,
            in_use,
            mutable: false,
        }
    }

    #[test]
    fn sizes_and_durations_read_like_buildctl() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(454_600_000), "454.6MB");
        assert_eq!(human_size(1_234_567), "1.235MB");
        assert_eq!(human_size(12_000), "12kB");
        assert_eq!(human_duration(35), "35 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(utc(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 +0000 UTC");
    }

    #[test]
    fn table_and_summary() {
        let records = [
            rec("aaaa", 1_500_000, true, false),
            rec("bb", 5_000, false, true),
        ];
        let now = 1_700_000_000 + 120;
        assert_eq!(
            table(&records, now),
            "ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED\n\
             aaaa\ttrue\t\t1.5MB*\t2 minutes ago\n\
             bb\tfalse\t\t5kB\t2 minutes ago\n"
        );
        assert_eq!(
            summary(&records),
            "Shared:\t\t1.5MB\nPrivate:\t5kB\nReclaimable:\t1.5MB\nTotal:\t\t1.505MB\n"
        );
        let v = verbose(&records[1], now);
        assert!(
            v.starts_with("ID:\t\tbb\nCreated at:\t2023-11-14 22:13:20 +0000 UTC\n"),
            "{v}"
        );
        assert!(
            v.contains("Reclaimable:\tfalse\n") && v.ends_with("Type:\t\tregular\n\n"),
            "{v}"
        );
    }

    #[test]
    fn prune_flags_parse_like_buildkitd_toml() {
        let args = PruneArgs {
            all: true,
            filters: vec!["type==regular".into()],
            keep_duration: Some("48h".into()),
            reserved_space: Some("1GB".into()),
            max_used_space: Some("10%".into()),
            min_free_space: Some("512000000".into()),
            keep_storage: None,
            verbose: false,
        };
        let rule = args.rule(100 << 30).unwrap();
        assert_eq!(rule.keep_duration.as_secs(), 48 * 3600);
        assert_eq!(rule.reserved_space, 1 << 30);
        assert_eq!(rule.max_used_space, 11_000_000_000);
        assert_eq!(rule.min_free_space, 512_000_000);
        let bad = PruneArgs {
            keep_duration: Some("2d".into()),
            ..args
        };
        let err = format!("{:#}", bad.rule(0).unwrap_err());
        assert_eq!(err, "--keep-duration: invalid duration 2d");
    }
}
