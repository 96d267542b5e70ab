//! The files of a build result: copied into a directory (`type=local`) or as a tar stream
//! (`type=tar`).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use buildwit_worker::snapshot::is_whiteout;

use crate::ExportError;
use crate::atomic::{AtomicDir, AtomicFile};
use crate::tree::{TreeKind, path_error, write_tree, xattrs};

/// Write the files under `merged_dir` (a mounted snapshot) to `w` as a tar stream, with
/// their modes, owners, times and xattrs.
pub fn export_tar(merged_dir: &Path, w: impl Write) -> Result<(), ExportError> {
    let what = || format!("archiving {}", merged_dir.display());
    let mut tar = tar::Builder::new(w);
    write_tree(merged_dir, TreeKind::Plain, &mut tar).map_err(|e| ExportError::io(what(), e))?;
    let mut w = tar.into_inner().map_err(|e| ExportError::io(what(), e))?;
    w.flush().map_err(|e| ExportError::io(what(), e))
}

/// [`export_tar`] to a file that appears only once it is complete.
pub fn export_tar_file(merged_dir: &Path, dest: &Path) -> Result<(), ExportError> {
    let mut file = AtomicFile::create(dest)?;
    export_tar(merged_dir, &mut file)?;
    file.commit()
}

/// Copy the files under `merged_dir` into the directory `dest`, as BuildKit's local
/// exporter does: modes, times, symlinks, hard links and xattrs are kept, and the files
/// belong to the user running the export (not to the owners inside the image).
///
/// A new `dest` is built beside it and appears complete; into an existing directory the
/// files are merged (each file replaced in one step; files already there and not in the
/// result are left alone).
pub fn export_local(merged_dir: &Path, dest: &Path) -> Result<(), ExportError> {
    let what = |p: &Path| format!("exporting {} to {}", p.display(), dest.display());
    let root_md = fs::metadata(merged_dir).map_err(|e| ExportError::io(what(merged_dir), e))?;
    let mut copier = Copier {
        links: HashMap::new(),
    };
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = AtomicDir::create(dest)?;
            copier
                .dir(merged_dir, dir.path())
                .map_err(|e| ExportError::io(what(merged_dir), e))?;
            set_times_and_mode(dir.path(), &root_md)
                .map_err(|e| ExportError::io(what(merged_dir), e))?;
            dir.commit()
        }
        Ok(md) if md.is_dir() => copier
            .dir(merged_dir, dest)
            .map_err(|e| ExportError::io(what(merged_dir), e)),
        Ok(_) => Err(ExportError::io(
            what(merged_dir),
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the destination exists and is not a directory",
            ),
        )),
        Err(e) => Err(ExportError::io(what(merged_dir), e)),
    }
}

struct Copier {
    /// Files with more than one link copied so far: (dev, inode) → the copy.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Copier {
    /// Copy the entries of `src` into the existing directory `dst`.
    fn dir(&mut self, src: &Path, dst: &Path) -> io::Result<()> {
        let mut names = Vec::new();
        for entry in fs::read_dir(src).map_err(|e| path_error(src, e))? {
            names.push(entry.map_err(|e| path_error(src, e))?.file_name());
        }
        names.sort();
        for name in names {
            let (from, to) = (src.join(&name), dst.join(&name));
            self.entry(&from, &to).map_err(|e| path_error(&from, e))?;
        }
        Ok(())
    }

    fn entry(&mut self, src: &Path, dst: &Path) -> io::Result<()> {
        let md = fs::symlink_metadata(src)?;
        let ft = md.file_type();
        // Read straight from a single layer's directory, a deletion marker is no file.
        if is_whiteout(&md) || ft.is_socket() {
            return Ok(());
        }
        if ft.is_dir() {
            match fs::symlink_metadata(dst) {
                Ok(existing) if existing.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(dst)?;
                    fs::create_dir(dst)?;
                }
                Err(_) => fs::create_dir(dst)?,
            }
            self.dir(src, dst)?;
            copy_xattrs(src, dst);
            // Last, so copying the children does not change the directory's time.
            return set_times_and_mode(dst, &md);
        }
        if ft.is_file() && md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = self.links.get(&key) {
                let tmp = temp_name(dst);
                fs::hard_link(first, &tmp)?;
                return fs::rename(&tmp, dst).inspect_err(|_| {
                    let _ = fs::remove_file(&tmp);
                });
            }
            self.links.insert(key, dst.to_path_buf());
        }
        // Everything else is made under a temporary name and renamed over what is there.
        let tmp = temp_name(dst);
        let result = match self.make(src, &tmp, &md) {
            Ok(true) => replace(&tmp, dst),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Create a non-directory at `tmp` like `src`; false when it cannot be made here (a
    /// device node without the privilege to make one).
    fn make(&mut self, src: &Path, tmp: &Path, md: &fs::Metadata) -> io::Result<bool> {
        let ft = md.file_type();
        if ft.is_symlink() {
            symlink(fs::read_link(src)?, tmp)?;
            set_times_nofollow(tmp, md)?;
            return Ok(true);
        }
        if ft.is_file() {
            let mut from = File::open(src)?;
            let mut to = File::create(tmp)?;
            io::copy(&mut from, &mut to)?;
        } else {
            let file_type = if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else if ft.is_block_device() {
                rustix::fs::FileType::BlockDevice
            } else {
                rustix::fs::FileType::Fifo
            };
            let made = rustix::fs::mknodat(
                rustix::fs::CWD,
                tmp,
                file_type,
                rustix::fs::Mode::from_raw_mode(md.mode() & 0o7777),
                md.rdev(),
            );
            if made == Err(rustix::io::Errno::PERM) {
                tracing::warn!(
                    "skipping device {}: no privilege to create it",
                    src.display()
                );
                return Ok(false);
            }
            made?;
        }
        copy_xattrs(src, tmp);
        set_times_and_mode(tmp, md)?;
        Ok(true)
    }
}

/// Move `tmp` to `dst`; a directory in the way (the result has a file there) goes first.
fn replace(tmp: &Path, dst: &Path) -> io::Result<()> {
    if let Ok(existing) = fs::symlink_metadata(dst)
        && existing.is_dir()
    {
        fs::remove_dir_all(dst)?;
    }
    fs::rename(tmp, dst)
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn temp_name(dst: &Path) -> PathBuf {
    let name = dst.file_name().unwrap_or_default().to_string_lossy();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dst.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Xattrs are copied where the destination allows (user.* generally; security.* and
/// trusted.* need privileges); a refusal is not worth failing the export for.
fn copy_xattrs(src: &Path, dst: &Path) {
    let Ok(list) = xattrs(src) else { return };
    for (name, value) in list {
        let name = std::ffi::OsStr::from_bytes(&name);
        if let Err(e) = rustix::fs::lsetxattr(dst, name, &value, rustix::fs::XattrFlags::empty()) {
            tracing::debug!("not copying xattr {name:?} to {}: {e}", dst.display());
        }
    }
}

fn set_times_and_mode(path: &Path, md: &fs::Metadata) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    set_times_nofollow(path, md)
}

fn set_times_nofollow(path: &Path, md: &fs::Metadata) -> io::Result<()> {
    let ts = |sec: i64, nsec: i64| rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts(md.atime(), md.atime_nsec()),
        last_modification: ts(md.mtime(), md.mtime_nsec()),
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}
