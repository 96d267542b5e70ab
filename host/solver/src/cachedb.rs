//! The cache database: which layers hold the result of which cache key.
//!
//! A record is written only after its layers are committed, in one redb transaction, so a
//! killed build never leaves a record pointing at a half result; a record whose layers are
//! gone (removed by hand or by GC) is a miss.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const RESULTS: TableDefinition<&str, &[u8]> = TableDefinition::new("results");

/// One cached result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// For each output of the op, its layer ids bottom first.
    pub outputs: Vec<Vec<String>>,
    /// The op's description (for `du`).
    pub description: String,
    /// When it was made, Unix seconds.
    pub created: u64,
    /// When a build last used it, Unix seconds.
    pub last_used: u64,
    /// How many builds used it.
    pub usage_count: u64,
    /// BuildKit's record type (`regular`, `source.local`, `source.git.checkout`); empty in
    /// records written before types were kept (then inferred from the description).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub record_type: String,
}

/// The database file.
#[derive(Debug)]
pub struct CacheDb {
    db: Database,
}

/// A database error, with what we were doing.
#[derive(Debug, thiserror::Error)]
#[error("cache database {path}: {message}")]
pub struct DbError {
    path: String,
    message: String,
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Memory redb may keep of the database's pages. Its default, 1 GiB, let a daemon's memory
/// grow with every record it wrote (about 1 KiB a build); 64 MiB holds the records of tens
/// of thousands of steps.
const CACHE_BYTES: usize = 64 << 20;

impl CacheDb {
    /// Open the database, or create it. A new database is made under a temporary name and
    /// renamed into place once whole: a process killed while redb writes a new file's header
    /// left a file redb would never open again ("not a redb database").
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let err = |e: &dyn std::fmt::Display| DbError {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if !path.exists() {
            Self::create(path).map_err(|e| err(&e))?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .open(path)
            .map_err(|e| err(&e))?;
        Ok(CacheDb { db })
    }

    /// Write an empty database with its table beside `path`, then rename it to `path`.
    fn create(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let mut name = path.as_os_str().to_owned();
        name.push(".new");
        let new = std::path::PathBuf::from(name);
        // A leftover of a creation that was killed.
        let _ = std::fs::remove_file(&new);
        {
            let db = Database::builder().create(&new)?;
            let txn = db.begin_write()?;
            txn.open_table(RESULTS)?;
            txn.commit()?;
        }
        std::fs::File::open(&new)?.sync_all()?;
        std::fs::rename(&new, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn err(e: impl std::fmt::Display) -> DbError {
        DbError {
            path: "cache.db".into(),
            message: e.to_string(),
        }
    }

    /// The record of a key.
    pub fn get(&self, key: &str) -> Result<Option<Record>, DbError> {
        let txn = self.db.begin_read().map_err(Self::err)?;
        let table = txn.open_table(RESULTS).map_err(Self::err)?;
        Ok(table
            .get(key)
            .map_err(Self::err)?
            .and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    /// Store a new record.
    pub fn put(&self, key: &str, record: &Record) -> Result<(), DbError> {
        let txn = self.db.begin_write().map_err(Self::err)?;
        {
            let mut table = txn.open_table(RESULTS).map_err(Self::err)?;
            let bytes = serde_json::to_vec(record).map_err(Self::err)?;
            table.insert(key, bytes.as_slice()).map_err(Self::err)?;
        }
        txn.commit().map_err(Self::err)
    }

    /// Mark records used now, in one transaction.
    pub fn touch(&self, keys: &[String]) -> Result<(), DbError> {
        if keys.is_empty() {
            return Ok(());
        }
        let now = now();
        let txn = self.db.begin_write().map_err(Self::err)?;
        {
            let mut table = txn.open_table(RESULTS).map_err(Self::err)?;
            for key in keys {
                let record = table
                    .get(key.as_str())
                    .map_err(Self::err)?
                    .and_then(|v| serde_json::from_slice::<Record>(v.value()).ok());
                if let Some(mut r) = record {
                    r.last_used = now;
                    r.usage_count += 1;
                    let bytes = serde_json::to_vec(&r).map_err(Self::err)?;
                    table
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(Self::err)?;
                }
            }
        }
        txn.commit().map_err(Self::err)
    }

    /// Remove records in one transaction (GC removes records before their layers, so a
    /// crash in between leaves unreferenced layers, never a record without its layers).
    pub fn remove(&self, keys: &[String]) -> Result<(), DbError> {
        if keys.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(Self::err)?;
        {
            let mut table = txn.open_table(RESULTS).map_err(Self::err)?;
            for key in keys {
                table.remove(key.as_str()).map_err(Self::err)?;
            }
        }
        txn.commit().map_err(Self::err)
    }

    /// Every record.
    pub fn all(&self) -> Result<Vec<(String, Record)>, DbError> {
        let txn = self.db.begin_read().map_err(Self::err)?;
        let table = txn.open_table(RESULTS).map_err(Self::err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(Self::err)? {
            let (k, v) = item.map_err(Self::err)?;
            if let Ok(r) = serde_json::from_slice(v.value()) {
                out.push((k.value().to_string(), r));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creation_killed_halfway_leaves_nothing_that_stops_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        // What a kill during redb's first write leaves: a file without a whole header.
        std::fs::write(dir.path().join("cache.db.new"), b"redb\x1a\x0a").unwrap();
        let db = CacheDb::open(&path).unwrap();
        let record = Record {
            description: "step".into(),
            ..Default::default()
        };
        db.put("k", &record).unwrap();
        drop(db);
        assert!(!dir.path().join("cache.db.new").exists());
        let db = CacheDb::open(&path).unwrap();
        assert_eq!(db.get("k").unwrap(), Some(record));
    }
}
