//! Files below a directory, reached through directory descriptors rather than path strings.
//!
//! Two properties the build needs and paths cannot give. A directory another party can
//! change while we read it (a client's mirror, a context, a layer a step wrote) must never
//! lead us out through a symlink planted half way: every component is opened relative to
//! its parent's descriptor with `O_NOFOLLOW` (or `openat2` with `RESOLVE_NO_SYMLINKS`). And
//! a tree a step made may be deeper than `PATH_MAX`: a walk that holds one descriptor per
//! level never builds a path the kernel has to resolve, so depth is no limit.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Open the directory `root` itself (following symlinks: it is named by us, not by what is
/// below it).
pub fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(root, flags, Mode::empty())?)
}

/// Open `rel` below the directory `dir` for reading, refusing a symlink in any component
/// and anything that would leave `dir` (`..`, an absolute path).
pub fn open_file(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(File::from(open_no_symlinks(dir, rel, flags)?))
}

/// Open the directory `rel` below `dir`, as [`open_file`].
pub fn open_dir(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    open_no_symlinks(dir, rel, DIR_FLAGS)
}

/// An `O_PATH` descriptor of `rel` below `dir`, following symlinks only while they stay
/// below `dir` (`RESOLVE_BENEATH`): a link that leads out fails as a path that does not
/// exist would, so its target is never looked at.
pub fn open_path(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let rel_or_dot = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(dir, rel_or_dot, flags, Mode::empty(), resolve) {
        // Kernels before 5.6: no symlink at all.
        Err(rustix::io::Errno::NOSYS) => open_no_symlinks(dir, rel, flags | OFlags::NOFOLLOW),
        other => Ok(other?),
    }
}

fn open_no_symlinks(dir: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let rel_or_dot = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    match rustix::fs::openat2(dir, rel_or_dot, flags, Mode::empty(), resolve) {
        Err(rustix::io::Errno::NOSYS) => {}
        other => return Ok(other?),
    }
    // Kernels before 5.6: one component at a time, each without following a symlink.
    let mut parts = rel.components().peekable();
    let mut current: Option<OwnedFd> = None;
    while let Some(part) = parts.next() {
        let std::path::Component::Normal(name) = part else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a plain relative path", rel.display()),
            ));
        };
        let at = current.as_ref().map_or(dir, |fd| fd.as_fd());
        let f = if parts.peek().is_some() {
            DIR_FLAGS
        } else {
            flags
        };
        current = Some(rustix::fs::openat(at, name, f, Mode::empty())?);
    }
    match current {
        Some(fd) => Ok(fd),
        None => Ok(rustix::fs::openat(dir, ".", flags, Mode::empty())?),
    }
}

/// One entry met by [`walk`].
pub struct Entry<'a> {
    /// Its path below the walked directory, `/`-separated (may exceed `PATH_MAX`).
    pub rel: &'a [u8],
    /// Its name.
    pub name: &'a CStr,
    /// The directory holding it.
    pub parent: BorrowedFd<'a>,
    /// Its metadata (of a symlink itself, not its target).
    pub stat: &'a Stat,
}

impl Entry<'_> {
    /// Its file type.
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.stat.st_mode)
    }

    /// Whether it is a directory (not a symlink to one).
    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    /// `rel` as a path, for messages and for callers that work with paths.
    pub fn rel_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(self.rel))
    }

    /// Open it for reading; a symlink swapped in since the walk saw it is refused.
    pub fn open(&self) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(File::from(rustix::fs::openat(
            self.parent,
            self.name,
            flags,
            Mode::empty(),
        )?))
    }

    /// The target of a symlink.
    pub fn read_link(&self) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(self.parent, self.name, Vec::new())?.into_bytes())
    }
}

/// What [`walk`] calls.
pub trait Visit {
    /// An entry, parents before children and each directory's entries in name order.
    /// True: walk into it (only a directory is walked into).
    fn enter(&mut self, entry: &Entry<'_>) -> io::Result<bool>;

    /// Done with the directory `rel` that `enter` walked into.
    fn leave(&mut self, rel: &[u8]) -> io::Result<()> {
        let _ = rel;
        Ok(())
    }
}

/// One open directory of a walk and the names in it still to visit (last first).
struct Frame {
    fd: OwnedFd,
    rel: Vec<u8>,
    names: Vec<CString>,
}

impl Frame {
    fn new(fd: OwnedFd, rel: Vec<u8>) -> io::Result<Self> {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd)? {
            let entry = entry?;
            let name = entry.file_name();
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        }
        names.sort_unstable_by(|a, b| b.cmp(a));
        Ok(Frame { fd, rel, names })
    }
}

/// Walk everything below `root` (not `root` itself) without following symlinks and
/// without building paths, holding one descriptor per level of depth.
pub fn walk(root: &Path, visit: &mut impl Visit) -> io::Result<()> {
    walk_fd(open_root(root)?, visit)
}

/// [`walk`] below an open directory.
pub fn walk_fd(root: OwnedFd, visit: &mut impl Visit) -> io::Result<()> {
    let mut stack = vec![Frame::new(root, Vec::new())?];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.pop() else {
            let done = stack.pop().expect("the stack has a top");
            if !stack.is_empty() {
                visit.leave(&done.rel)?;
            }
            continue;
        };
        let stat = rustix::fs::statat(&top.fd, &name, AtFlags::SYMLINK_NOFOLLOW)?;
        let mut rel = top.rel.clone();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.to_bytes());
        let entry = Entry {
            rel: &rel,
            name: &name,
            parent: top.fd.as_fd(),
            stat: &stat,
        };
        if visit.enter(&entry)? && entry.is_dir() {
            let fd = rustix::fs::openat(&top.fd, &name, DIR_FLAGS, Mode::empty())?;
            stack.push(Frame::new(fd, rel)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Vec<String>);

    impl Visit for Collect {
        fn enter(&mut self, e: &Entry<'_>) -> io::Result<bool> {
            self.0.push(String::from_utf8_lossy(e.rel).into_owned());
            Ok(true)
        }
        fn leave(&mut self, rel: &[u8]) -> io::Result<()> {
            self.0.push(format!("<{}", String::from_utf8_lossy(rel)));
            Ok(())
        }
    }

    #[test]
    fn walks_in_name_order_without_following_symlinks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("b/c")).unwrap();
        std::fs::write(d.path().join("b/c/f"), "x").unwrap();
        std::fs::write(d.path().join("a"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("b/link")).unwrap();
        let mut seen = Collect(Vec::new());
        walk(d.path(), &mut seen).unwrap();
        assert_eq!(seen.0, ["a", "b", "b/c", "b/c/f", "<b/c", "b/link", "<b"]);
    }

    #[test]
    fn opening_refuses_symlinks_and_escapes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        std::fs::write(d.path().join("dir/f"), "inside").unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("up")).unwrap();
        std::os::unix::fs::symlink("f", d.path().join("dir/rel")).unwrap();
        let root = open_root(d.path()).unwrap();
        let read = |rel: &str| {
            open_file(root.as_fd(), Path::new(rel))
                .and_then(io::read_to_string)
                .map_err(|e| e.kind())
        };
        assert_eq!(read("dir/f").unwrap(), "inside");
        assert!(read("up/passwd").is_err());
        assert!(read("dir/rel").is_err());
        assert!(read("../etc/passwd").is_err());
        assert!(read("/etc/passwd").is_err());
    }

    #[test]
    fn depth_is_no_limit() {
        // 3000 levels of 2-byte components: a path of 6000 bytes, past PATH_MAX.
        let d = tempfile::tempdir().unwrap();
        let mut fd = open_root(d.path()).unwrap();
        for _ in 0..3000 {
            rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(&fd, "d", DIR_FLAGS, Mode::empty()).unwrap();
        }
        rustix::fs::openat(
            &fd,
            "leaf",
            OFlags::CREATE | OFlags::WRONLY,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        struct Deepest(usize);
        impl Visit for Deepest {
            fn enter(&mut self, e: &Entry<'_>) -> io::Result<bool> {
                self.0 = self.0.max(e.rel.len());
                Ok(true)
            }
        }
        let mut deepest = Deepest(0);
        walk(d.path(), &mut deepest).unwrap();
        assert_eq!(deepest.0, 3000 * 2 - 1 + "/leaf".len());
        // std's remove_dir_all works through descriptors too.
        std::fs::remove_dir_all(d.path().join("d")).unwrap();
    }
}
