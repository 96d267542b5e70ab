//! Atomic outputs: everything is written under a temporary name beside the destination,
//! synced, then renamed into place, so a failed or killed export leaves nothing at the
//! destination (and a temporary that the drop guard removes when it can).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ExportError;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A temporary name in `dest`'s directory: `.<name>.tmp-<pid>-<n>`.
fn temp_beside(dest: &Path) -> Result<PathBuf, ExportError> {
    let name = dest.file_name().ok_or_else(|| ExportError::Io {
        what: format!("exporting to {}", dest.display()),
        error: io::Error::new(
            io::ErrorKind::InvalidInput,
            "the destination has no file name",
        ),
    })?;
    let tmp = format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    Ok(dest.with_file_name(tmp))
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Sync a directory so a rename in it survives a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A file that appears at its destination only when [`AtomicFile::commit`] succeeds.
pub(crate) struct AtomicFile {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl AtomicFile {
    pub(crate) fn create(dest: &Path) -> Result<Self, ExportError> {
        let tmp = temp_beside(dest)?;
        let file = File::create(&tmp)
            .map_err(|e| ExportError::io(format!("creating {}", tmp.display()), e))?;
        Ok(AtomicFile {
            file: Some(file),
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// Sync the data and rename it into place.
    pub(crate) fn commit(mut self) -> Result<(), ExportError> {
        let what = || format!("writing {}", self.dest.display());
        let file = self.file.take().expect("committed once");
        file.sync_all().map_err(|e| ExportError::io(what(), e))?;
        drop(file);
        if let Err(e) = fs::rename(&self.tmp, &self.dest) {
            let _ = fs::remove_file(&self.tmp);
            return Err(ExportError::io(what(), e));
        }
        sync_dir(dir_of(&self.dest)).map_err(|e| ExportError::io(what(), e))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("not committed").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A directory built under a temporary name and moved to its destination on commit.
pub(crate) struct AtomicDir {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl AtomicDir {
    pub(crate) fn create(dest: &Path) -> Result<Self, ExportError> {
        let tmp = temp_beside(dest)?;
        fs::create_dir(&tmp)
            .map_err(|e| ExportError::io(format!("creating {}", tmp.display()), e))?;
        Ok(AtomicDir {
            tmp,
            dest: dest.to_path_buf(),
            done: false,
        })
    }

    /// Where to write the contents.
    pub(crate) fn path(&self) -> &Path {
        &self.tmp
    }

    /// Sync and move into place. A destination that exists must be a directory; it is
    /// swapped with the new one in a single step and the old one removed.
    pub(crate) fn commit(mut self) -> Result<(), ExportError> {
        let what = || format!("writing {}", self.dest.display());
        // One syncfs covers every file written under the temporary directory.
        let dir = File::open(&self.tmp).map_err(|e| ExportError::io(what(), e))?;
        rustix::fs::syncfs(&dir).map_err(|e| ExportError::io(what(), e.into()))?;
        match fs::symlink_metadata(&self.dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::rename(&self.tmp, &self.dest).map_err(|e| ExportError::io(what(), e))?;
            }
            Err(e) => return Err(ExportError::io(what(), e)),
            Ok(md) if !md.is_dir() => {
                return Err(ExportError::io(
                    what(),
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "it exists and is not a directory",
                    ),
                ));
            }
            Ok(_) => {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &self.tmp,
                    rustix::fs::CWD,
                    &self.dest,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .map_err(|e| ExportError::io(what(), e.into()))?;
                // The temporary name now holds the old contents; Drop removes them.
                sync_dir(dir_of(&self.dest)).map_err(|e| ExportError::io(what(), e))?;
                return Ok(());
            }
        }
        self.done = true;
        sync_dir(dir_of(&self.dest)).map_err(|e| ExportError::io(what(), e))
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}
