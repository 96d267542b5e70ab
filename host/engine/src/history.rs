//! Build history: one record per build (`buildwit history ls` / `inspect`), kept within
//! `[history] maxAge` and `maxEntries`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use buildwit_solver::ProgressEvent;
use serde::{Deserialize, Serialize};

use crate::{EventSink, FrontendRecord};

/// One past build.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// Its id (as `buildx history` shows build refs).
    pub id: String,
    /// The build context, or the frontend when there is none.
    pub name: String,
    /// When it started, Unix seconds.
    pub created: u64,
    /// How long it took, milliseconds.
    pub duration_ms: u64,
    /// `Completed` or `Error`.
    pub status: String,
    /// The error of a failed build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The frontend as asked for (`dockerfile.v0`, a file, an image).
    pub frontend: String,
    /// What served it: reference, digest, name, version, channel, WIT version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<FrontendRecord>,
    /// The `target` option.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Steps run and steps answered from the cache.
    pub steps: usize,
    /// Of which cached.
    pub cached_steps: usize,
    /// What was exported, as `type to dest (digest)`.
    #[serde(default)]
    pub outputs: Vec<String>,
}

/// Counts the steps of a build on their way to the client.
pub(crate) struct Counting {
    pub(crate) inner: std::sync::Arc<dyn EventSink>,
    pub(crate) steps: AtomicUsize,
    pub(crate) cached: AtomicUsize,
}

impl EventSink for Counting {
    fn event(&self, event: buildwit_frontend::Event) {
        self.inner.event(event)
    }

    fn progress(&self, event: ProgressEvent) {
        match &event {
            ProgressEvent::Started { .. } => {
                self.steps.fetch_add(1, Ordering::Relaxed);
            }
            ProgressEvent::Cached { .. } => {
                self.steps.fetch_add(1, Ordering::Relaxed);
                self.cached.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.inner.progress(event)
    }
}

/// The history directory.
pub struct History {
    dir: PathBuf,
    max_age: Duration,
    max_entries: usize,
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh build id: 25 base-36 characters, like BuildKit's build refs.
pub(crate) fn new_id() -> String {
    use sha2::Digest as _;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!(
        "{nanos}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    sha2::Sha256::digest(seed.as_bytes())
        .iter()
        .take(25)
        .map(|b| char::from_digit(u32::from(*b) % 36, 36).expect("base 36"))
        .collect()
}

impl History {
    /// The history under `dir`, with its limits.
    pub fn new(dir: PathBuf, max_age: Duration, max_entries: i64) -> Self {
        History {
            dir,
            max_age,
            max_entries: usize::try_from(max_entries).unwrap_or(0),
        }
    }

    /// Record a build, then drop records over the limits (oldest first).
    pub fn record(&self, record: &HistoryRecord) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{}.json", record.id));
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)?;
        let mut all = self.list();
        let now = now();
        let too_old = |r: &HistoryRecord| now.saturating_sub(r.created) > self.max_age.as_secs();
        // Newest first: keep the first max_entries that are young enough.
        all.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        for (i, r) in all.iter().enumerate() {
            if i >= self.max_entries || too_old(r) {
                let _ = std::fs::remove_file(self.dir.join(format!("{}.json", r.id)));
            }
        }
        Ok(())
    }

    /// All records, newest first.
    pub fn list(&self) -> Vec<HistoryRecord> {
        let mut out: Vec<HistoryRecord> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        out
    }

    /// One record by id (or a unique prefix of one).
    pub fn get(&self, id: &str) -> Option<HistoryRecord> {
        let matches: Vec<HistoryRecord> = self
            .list()
            .into_iter()
            .filter(|r| r.id.starts_with(id))
            .collect();
        match matches.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path().to_path_buf(), Duration::from_secs(3600), 2);
        for (i, created) in [10, now() - 10, now() - 5, now()].into_iter().enumerate() {
            h.record(&HistoryRecord {
                id: format!("b{i}"),
                created,
                ..Default::default()
            })
            .unwrap();
        }
        let ids: Vec<String> = h.list().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["b3", "b2"]);
        assert!(h.get("b3").is_some() && h.get("b").is_none() && h.get("b0").is_none());
    }
}
