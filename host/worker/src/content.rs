//! The content store: blobs addressed by digest, laid out as in an OCI image layout
//! (`blobs/sha256/<hex>`), written to `ingest/` first and renamed into place once their
//! digest checks out, so a killed write never leaves a blob with the wrong bytes.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// An OCI content descriptor (the fields we use).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// `mediaType`.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// Blobs by digest under one directory.
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
}

/// A digest that is not `sha256:` followed by 64 lowercase hex digits.
fn bad_digest(digest: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{digest:?} is not a sha256 digest"),
    )
}

/// The hex part of a `sha256:` digest, checked.
pub fn digest_hex(digest: &str) -> io::Result<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| bad_digest(digest))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad_digest(digest));
    }
    Ok(hex)
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl ContentStore {
    /// The store under `root` (created if missing); leftovers of killed writes are removed.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs/sha256"))?;
        let ingest = root.join("ingest");
        if ingest.exists() {
            fs::remove_dir_all(&ingest)?;
        }
        fs::create_dir_all(&ingest)?;
        Ok(ContentStore { root })
    }

    /// Where the blob with this digest lives (whether or not it is there).
    pub fn path(&self, digest: &str) -> io::Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    /// Whether the blob is present.
    pub fn has(&self, digest: &str) -> bool {
        self.path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Read a whole blob.
    pub fn read(&self, digest: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(digest)?)
    }

    /// Store bytes; returns their digest.
    pub fn write(&self, data: &[u8]) -> io::Result<String> {
        let digest = sha256_digest(data);
        if !self.has(&digest) {
            let mut w = self.writer()?;
            w.write_all(data)?;
            w.commit(Some(&digest))?;
        }
        Ok(digest)
    }

    /// Copy a stream into the store; with `expected`, a stream with other bytes is refused
    /// and nothing is kept.
    pub fn ingest(&self, mut reader: impl Read, expected: Option<&str>) -> io::Result<String> {
        let mut w = self.writer()?;
        io::copy(&mut reader, &mut w)?;
        w.commit(expected)
    }

    /// A writer for a blob whose digest is known at the end.
    pub fn writer(&self) -> io::Result<BlobWriter> {
        let path = self.root.join("ingest").join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        Ok(BlobWriter {
            file: Some(File::create(&path)?),
            path,
            hasher: Sha256::new(),
            size: 0,
            blobs: self.root.join("blobs/sha256"),
        })
    }

    /// The directory blobs live in (`blobs/sha256`).
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A blob being written: hashed as it goes, moved into place by [`BlobWriter::commit`],
/// removed if dropped before.
pub struct BlobWriter {
    file: Option<File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    blobs: PathBuf,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Sync and move the blob into place; returns its digest.
    pub fn commit(mut self, expected: Option<&str>) -> io::Result<String> {
        let file = self.file.take().expect("committed once");
        file.sync_all()?;
        drop(file);
        let digest = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        if let Some(expected) = expected
            && expected != digest
        {
            let _ = fs::remove_file(&self.path);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("content has digest {digest}, expected {expected}"),
            ));
        }
        fs::rename(&self.path, self.blobs.join(digest_hex(&digest)?))?;
        Ok(digest)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_mut().expect("not committed").write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_checked_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = store.write(b"hello").unwrap();
        assert_eq!(
            d,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(store.read(&d).unwrap(), b"hello");
        let wrong = store.ingest(&b"other"[..], Some(&d));
        assert!(wrong.is_err());
        assert_eq!(store.read(&d).unwrap(), b"hello");
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
        assert!(digest_hex("sha256:abc").is_err());
        assert!(store.path("sha256:../../etc").is_err());
    }
}
