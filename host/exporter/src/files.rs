//! The files of a build result: copied into a directory (`type=local`) or as a tar stream
//! (`type=tar`).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use buildwit_worker::beneath::{self, Entry, Visit};

use crate::ExportError;
use crate::atomic::{AtomicDir, AtomicFile};
use crate::tree::{Times, TreeKind, shown, write_tree, xattrs};

/// Write the files of one or more trees (mounted snapshots) to `w` as one tar stream, with
/// their modes, owners, times and xattrs. Each tree goes under the directory it is named
/// with (`linux_arm64`, one per platform, as BuildKit's tar exporter splits a
/// multi-platform result), or at the top when its name is empty.
///
/// With `epoch` (`SOURCE_DATE_EPOCH`, Unix seconds), every entry has that time, as in
/// BuildKit.
pub fn export_tar(
    trees: &[(&str, &Path)],
    epoch: Option<i64>,
    w: impl Write,
) -> Result<(), ExportError> {
    let times = epoch.map_or(Times::Own, Times::All);
    let mut tar = tar::Builder::new(w);
    for (dir, root) in trees {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        write_tree(root, TreeKind::Plain, times, prefix.as_bytes(), &mut tar)
            .map_err(|e| ExportError::io(format!("archiving {}", root.display()), e))?;
    }
    let what = || "finishing the tar stream".to_string();
    let mut w = tar.into_inner().map_err(|e| ExportError::io(what(), e))?;
    w.flush().map_err(|e| ExportError::io(what(), e))
}

/// [`export_tar`] to a file that appears only once it is complete.
pub fn export_tar_file(
    trees: &[(&str, &Path)],
    epoch: Option<i64>,
    dest: &Path,
) -> Result<(), ExportError> {
    let mut file = AtomicFile::create(dest)?;
    export_tar(trees, epoch, &mut file)?;
    file.commit()
}

/// The paths of everything but directories under `root` (mounted snapshot), `/`-separated:
/// what two results merged into one directory must not both have.
pub fn non_directories(root: &Path) -> Result<Vec<Vec<u8>>, ExportError> {
    struct Collect(Vec<Vec<u8>>);
    impl Visit for Collect {
        fn enter(&mut self, e: &Entry<'_>) -> io::Result<bool> {
            if e.is_dir() {
                return Ok(true);
            }
            self.0.push(e.rel.to_vec());
            Ok(false)
        }
    }
    let mut found = Collect(Vec::new());
    beneath::walk(root, &mut found)
        .map_err(|e| ExportError::io(format!("listing {}", root.display()), e))?;
    Ok(found.0)
}

/// Copy the files under `merged_dir` into the directory `dest`, as BuildKit's local
/// exporter does: modes, times, symlinks, hard links and xattrs are kept, and the files
/// belong to the user running the export (not to the owners inside the image).
///
/// A new `dest` is built beside it and appears complete; into an existing directory the
/// files are merged (each file replaced in one step; files already there and not in the
/// result are left alone). Both trees are worked through directory descriptors: no depth
/// is too deep, and a symlink already in `dest` is replaced, never written through.
/// With `epoch` (`SOURCE_DATE_EPOCH`, Unix seconds), every file gets that time instead of
/// its own, as in BuildKit.
pub fn export_local(merged_dir: &Path, epoch: Option<i64>, dest: &Path) -> Result<(), ExportError> {
    let what = |p: &Path| format!("exporting {} to {}", p.display(), dest.display());
    let root_md = fs::metadata(merged_dir).map_err(|e| ExportError::io(what(merged_dir), e))?;
    let copy = |to: &Path| -> io::Result<()> {
        let mut copier = Copier {
            open: vec![(beneath::open_root(to)?, None)],
            links: HashMap::new(),
            epoch,
        };
        beneath::walk(merged_dir, &mut copier)
    };
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = AtomicDir::create(dest)?;
            copy(dir.path()).map_err(|e| ExportError::io(what(merged_dir), e))?;
            let root = beneath::open_root(dir.path())
                .and_then(|fd| set_times_and_mode(&fd, &Meta::of(&root_md).at(epoch)))
                .map_err(|e| ExportError::io(what(merged_dir), e));
            root?;
            dir.commit()
        }
        Ok(md) if md.is_dir() => copy(dest).map_err(|e| ExportError::io(what(merged_dir), e)),
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

/// The metadata a copy takes over: mode and times.
struct Meta {
    mode: u32,
    atime: (i64, i64),
    mtime: (i64, i64),
}

impl Meta {
    fn of(md: &fs::Metadata) -> Self {
        Meta {
            mode: md.mode(),
            atime: (md.atime(), md.atime_nsec()),
            mtime: (md.mtime(), md.mtime_nsec()),
        }
    }

    fn of_stat(st: &rustix::fs::Stat) -> Self {
        Meta {
            mode: st.st_mode,
            atime: (st.st_atime, st.st_atime_nsec as i64),
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
        }
    }

    /// With every time `epoch`, when there is one.
    fn at(self, epoch: Option<i64>) -> Self {
        match epoch {
            Some(secs) => Meta {
                atime: (secs, 0),
                mtime: (secs, 0),
                ..self
            },
            None => self,
        }
    }

    fn timestamps(&self) -> rustix::fs::Timestamps {
        let ts = |(sec, nsec): (i64, i64)| rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        };
        rustix::fs::Timestamps {
            last_access: ts(self.atime),
            last_modification: ts(self.mtime),
        }
    }
}

/// Xattrs as (name, value) pairs.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Copies a walked tree into a destination directory.
struct Copier {
    /// The destination directories walked into, each with what to give it once its
    /// children are copied (its mode, times and the source's xattrs).
    open: Vec<(OwnedFd, Option<(Meta, Xattrs)>)>,
    /// Files with more than one link copied so far: (dev, inode) → the copy, as its
    /// directory (a duplicate descriptor) and name.
    links: HashMap<(u64, u64), (OwnedFd, CString)>,
    /// The time every file gets instead of its own.
    epoch: Option<i64>,
}

impl Visit for Copier {
    fn enter(&mut self, e: &Entry<'_>) -> io::Result<bool> {
        self.entry(e)
            .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", shown(e.rel))))
    }

    fn leave(&mut self, _rel: &[u8]) -> io::Result<()> {
        if let Some((fd, Some((meta, xattrs)))) = self.open.pop() {
            set_xattrs(&fd_path(fd.as_fd(), None), &xattrs);
            // Last, so copying the children does not change the directory's time.
            set_times_and_mode(&fd, &meta)?;
        }
        Ok(())
    }
}

impl Copier {
    fn entry(&mut self, e: &Entry<'_>) -> io::Result<bool> {
        use rustix::fs::{AtFlags, FileType as T, Mode, OFlags};
        let st = e.stat;
        let ft = e.file_type();
        // Read straight from a single layer's directory, a deletion marker is no file.
        if (ft == T::CharacterDevice && st.st_rdev == 0) || ft == T::Socket {
            return Ok(false);
        }
        let dst = self.open.last().expect("the destination is open").0.as_fd();
        let name = e.name;
        let source_path = fd_path(e.parent, Some(name));
        if ft == T::Directory {
            match rustix::fs::statat(dst, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(existing) if T::from_raw_mode(existing.st_mode) == T::Directory => {}
                Ok(_) => {
                    rustix::fs::unlinkat(dst, name, AtFlags::empty())?;
                    rustix::fs::mkdirat(dst, name, Mode::from_raw_mode(0o700))?;
                }
                Err(_) => rustix::fs::mkdirat(dst, name, Mode::from_raw_mode(0o700))?,
            }
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(dst, name, flags, Mode::empty())?;
            let xattrs = xattrs(&source_path)?;
            self.open
                .push((fd, Some((Meta::of_stat(st).at(self.epoch), xattrs))));
            return Ok(true);
        }
        if ft == T::RegularFile && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some((dir, first)) = self.links.get(&key) {
                let tmp = temp_name(name);
                rustix::fs::linkat(dir, first.as_c_str(), dst, &tmp, AtFlags::empty())?;
                return replace(dst, &tmp, name).map(|()| false);
            }
            self.links
                .insert(key, (dst.try_clone_to_owned()?, name.to_owned()));
        }
        // Everything else is made under a temporary name and renamed over what is there.
        let tmp = temp_name(name);
        let result = match make(e, dst, &tmp, &source_path, self.epoch) {
            Ok(true) => replace(dst, &tmp, name),
            Ok(false) => Ok(()),
            Err(err) => Err(err),
        };
        if result.is_err() {
            let _ = rustix::fs::unlinkat(dst, &tmp, AtFlags::empty());
        }
        result.map(|()| false)
    }
}

/// Create a non-directory named `tmp` in `dst` like `e`; false when it cannot be made here
/// (a device node without the privilege to make one).
fn make(
    e: &Entry<'_>,
    dst: BorrowedFd<'_>,
    tmp: &CStr,
    source_path: &Path,
    epoch: Option<i64>,
) -> io::Result<bool> {
    use rustix::fs::{AtFlags, FileType as T, Mode, OFlags};
    let st = e.stat;
    let meta = Meta::of_stat(st).at(epoch);
    match e.file_type() {
        T::Symlink => {
            rustix::fs::symlinkat(e.read_link()?.as_slice(), dst, tmp)?;
            rustix::fs::utimensat(dst, tmp, &meta.timestamps(), AtFlags::SYMLINK_NOFOLLOW)?;
            return Ok(true);
        }
        T::RegularFile => {
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let mut to = File::from(rustix::fs::openat(
                dst,
                tmp,
                flags,
                Mode::from_raw_mode(0o600),
            )?);
            io::copy(&mut e.open()?, &mut to)?;
        }
        ft => {
            let made = rustix::fs::mknodat(
                dst,
                tmp,
                ft,
                Mode::from_raw_mode(st.st_mode & 0o7777),
                st.st_rdev,
            );
            if made == Err(rustix::io::Errno::PERM) {
                tracing::warn!(
                    "skipping device {}: no privilege to create it",
                    shown(e.rel)
                );
                return Ok(false);
            }
            made?;
        }
    }
    set_xattrs(&fd_path(dst, Some(tmp)), &xattrs(source_path)?);
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let made = rustix::fs::openat(dst, tmp, flags, Mode::empty())?;
    // chmod and utimes through /proc: an O_PATH descriptor of a device or fifo cannot be
    // fchmod-ed, and opening one for real could block.
    let path = fd_path(made.as_fd(), None);
    fs::set_permissions(&path, fs::Permissions::from_mode(st.st_mode & 0o7777))?;
    rustix::fs::utimensat(rustix::fs::CWD, &path, &meta.timestamps(), AtFlags::empty())?;
    Ok(true)
}

/// Rename `tmp` over `name` in `dir`; a directory in the way (the result has a file there)
/// goes first.
fn replace(dir: BorrowedFd<'_>, tmp: &CStr, name: &CStr) -> io::Result<()> {
    use rustix::fs::{AtFlags, FileType};
    if let Ok(existing) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        && FileType::from_raw_mode(existing.st_mode) == FileType::Directory
    {
        // std's remove_dir_all works through descriptors and never follows a symlink.
        fs::remove_dir_all(fd_path(dir, Some(name)))?;
    }
    Ok(rustix::fs::renameat(dir, tmp, dir, name)?)
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn temp_name(name: &CStr) -> CString {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut tmp = b".".to_vec();
    tmp.extend_from_slice(name.to_bytes());
    tmp.extend_from_slice(format!(".tmp-{}-{n}", std::process::id()).as_bytes());
    CString::new(tmp).expect("a file name has no NUL")
}

/// A short path for `name` in the directory `dir` (or `dir` itself), through `/proc`, for
/// the calls that take only paths (xattrs); it works at any depth.
fn fd_path(dir: BorrowedFd<'_>, name: Option<&CStr>) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if let Some(name) = name {
        p.push(std::ffi::OsStr::from_bytes(name.to_bytes()));
    }
    p
}

/// Xattrs are copied where the destination allows (user.* generally; security.* and
/// trusted.* need privileges); a refusal is not worth failing the export for.
fn set_xattrs(dst: &Path, list: &[(Vec<u8>, Vec<u8>)]) {
    for (name, value) in list {
        let name = std::ffi::OsStr::from_bytes(name);
        if let Err(e) = rustix::fs::lsetxattr(dst, name, value, rustix::fs::XattrFlags::empty()) {
            tracing::debug!("not copying xattr {name:?} to {}: {e}", dst.display());
        }
    }
}

fn set_times_and_mode(fd: &OwnedFd, meta: &Meta) -> io::Result<()> {
    rustix::fs::fchmod(fd, rustix::fs::Mode::from_raw_mode(meta.mode & 0o7777))?;
    rustix::fs::futimens(fd, &meta.timestamps())?;
    Ok(())
}
