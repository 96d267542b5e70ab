//! Writing a directory tree as tar entries: either a layer in overlayfs format, turned into
//! an OCI layer (whiteouts become `.wh.` files), or plain files (for `type=tar`).
//!
//! Entries come depth first with the names of each directory sorted bytewise, and their
//! headers carry only what is in the tree (mode, uid/gid, mtime in whole seconds, xattrs),
//! never the host's user names or the time of the export, so the same tree always gives the
//! same bytes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use buildwit_worker::beneath::{Entry, Visit};
use buildwit_worker::snapshot::is_opaque;
pub(crate) use buildwit_worker::snapshot::xattrs;
use tar::{EntryType, Header};

/// Prefix of a whiteout file in an OCI layer.
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the marker that makes a directory opaque in an OCI layer.
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Longest name a ustar header holds; longer ones go into a PAX record.
const USTAR_NAME_LEN: usize = 100;

/// How to read the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TreeKind {
    /// An overlayfs layer: 0/0 character devices are deletions, `trusted.overlay.opaque=y`
    /// marks opaque directories.
    Layer,
    /// Plain files: a stray whiteout (from a single-layer snapshot read directly) is skipped.
    Plain,
}

/// The modification times the entries get (`SOURCE_DATE_EPOCH`, in Unix seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Times {
    /// Each entry's own.
    #[default]
    Own,
    /// None later than this (BuildKit's `rewrite-timestamp`).
    NotAfter(i64),
    /// This one for all (BuildKit's `tar` exporter with an epoch).
    All(i64),
}

impl Times {
    fn apply(self, mtime: i64) -> i64 {
        match self {
            Times::Own => mtime,
            Times::NotAfter(epoch) => mtime.min(epoch),
            Times::All(epoch) => epoch,
        }
    }
}

/// An io::Error that names the path it happened on, keeping its kind.
pub(crate) fn path_error(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Write every entry under `root` (not `root` itself) into `out`, each name after `prefix`
/// (empty, or a directory name ending in `/`); the caller finishes the archive. The tree is
/// walked through directory descriptors, so no depth is too deep.
pub(crate) fn write_tree<W: Write>(
    root: &Path,
    kind: TreeKind,
    times: Times,
    prefix: &[u8],
    out: &mut tar::Builder<W>,
) -> io::Result<()> {
    let mut walker = Walker {
        out,
        kind,
        times,
        prefix,
        links: HashMap::new(),
    };
    if !prefix.is_empty() {
        let md = fs::symlink_metadata(root).map_err(|e| path_error(root, e))?;
        let mut header = header_for(EntryType::Directory, &Meta::of(&md), 0);
        header.set_mode(0o755);
        walker.append(header, b"", None, Vec::new(), io::empty())?;
    }
    if kind == TreeKind::Layer && is_opaque(root) {
        let md = fs::symlink_metadata(root).map_err(|e| path_error(root, e))?;
        walker.opaque_marker(b"", &Meta::of(&md))?;
    }
    buildwit_worker::beneath::walk(root, &mut walker).map_err(|e| path_error(root, e))
}

/// What a tar header takes from an entry's metadata.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

impl Meta {
    fn of(md: &Metadata) -> Self {
        Meta {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.mtime(),
        }
    }

    fn of_stat(st: &rustix::fs::Stat) -> Self {
        Meta {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime,
        }
    }
}

/// A short path to an entry of a walk that works at any depth: its parent directory's
/// descriptor through `/proc`, and its name (for calls that only take paths, like xattrs).
fn proc_path(e: &Entry<'_>) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", e.parent.as_raw_fd()));
    p.push(OsStr::from_bytes(e.name.to_bytes()));
    p
}

/// The end of a long relative path, for messages.
pub(crate) fn shown(rel: &[u8]) -> String {
    const KEEP: usize = 200;
    let tail = &rel[rel.len().saturating_sub(KEEP)..];
    let dots = if rel.len() > KEEP { ".../" } else { "" };
    format!("{dots}{}", String::from_utf8_lossy(tail))
}

struct Walker<'a, W: Write> {
    out: &'a mut tar::Builder<W>,
    kind: TreeKind,
    times: Times,
    /// Put before every name.
    prefix: &'a [u8],
    /// Files with more than one link seen so far: (dev, inode) → the name written first.
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl<W: Write> Visit for Walker<'_, W> {
    fn enter(&mut self, e: &Entry<'_>) -> io::Result<bool> {
        self.entry(e)
            .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", shown(e.rel))))
    }
}

impl<W: Write> Walker<'_, W> {
    /// One entry; true for a directory to walk into.
    fn entry(&mut self, e: &Entry<'_>) -> io::Result<bool> {
        use rustix::fs::FileType as T;
        let rel = e.rel;
        let st = e.stat;
        let md = Meta::of_stat(st);
        let ft = e.file_type();
        if ft == T::CharacterDevice && st.st_rdev == 0 {
            if self.kind == TreeKind::Layer {
                self.whiteout(rel, &md)?;
            }
            return Ok(false);
        }
        let path = proc_path(e);
        match ft {
            T::Directory => {
                let mut name = rel.to_vec();
                name.push(b'/');
                let header = header_for(EntryType::Directory, &md, 0);
                self.append(header, &name, None, xattrs(&path)?, io::empty())?;
                if self.kind == TreeKind::Layer && is_opaque(&path) {
                    // Right after the directory, before anything the same layer adds to
                    // it, so an extractor applying markers as it goes never hides this
                    // layer's files.
                    self.opaque_marker(rel, &md)?;
                }
                Ok(true)
            }
            T::RegularFile => {
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(target) = self.links.get(&key) {
                        let target = [self.prefix, target].concat();
                        let header = header_for(EntryType::Link, &md, 0);
                        self.append(header, rel, Some(&target), Vec::new(), io::empty())?;
                        return Ok(false);
                    }
                    self.links.insert(key, rel.to_vec());
                }
                let size = st.st_size as u64;
                let header = header_for(EntryType::Regular, &md, size);
                let file = ExactReader {
                    inner: e.open()?,
                    left: size,
                };
                self.append(header, rel, None, xattrs(&path)?, file)?;
                Ok(false)
            }
            T::Symlink => {
                let target = e.read_link()?;
                let header = header_for(EntryType::Symlink, &md, 0);
                self.append(header, rel, Some(&target), xattrs(&path)?, io::empty())?;
                Ok(false)
            }
            T::CharacterDevice | T::BlockDevice | T::Fifo => {
                let kind = match ft {
                    T::CharacterDevice => EntryType::Char,
                    T::BlockDevice => EntryType::Block,
                    _ => EntryType::Fifo,
                };
                let mut header = header_for(kind, &md, 0);
                if kind != EntryType::Fifo {
                    header.set_device_major(rustix::fs::major(st.st_rdev))?;
                    header.set_device_minor(rustix::fs::minor(st.st_rdev))?;
                }
                self.append(header, rel, None, xattrs(&path)?, io::empty())?;
                Ok(false)
            }
            _ => {
                // Sockets have no tar form; they are runtime artefacts anyway.
                tracing::debug!("skipping socket {}", shown(rel));
                Ok(false)
            }
        }
    }

    /// `dir/.wh.name` for a deleted `dir/name`: an empty file with the deletion's mtime.
    fn whiteout(&mut self, rel: &[u8], md: &Meta) -> io::Result<()> {
        let (dir, base) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..=i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        let name = [dir, WHITEOUT_PREFIX, base].concat();
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(md.mtime.max(0) as u64);
        header.set_size(0);
        self.append(header, &name, None, Vec::new(), io::empty())
    }

    /// `dir/.wh..wh..opq`, owned like the directory it marks.
    fn opaque_marker(&mut self, dir_rel: &[u8], dir_md: &Meta) -> io::Result<()> {
        let mut name = dir_rel.to_vec();
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(OPAQUE_MARKER);
        let mut header = header_for(EntryType::Regular, dir_md, 0);
        header.set_mode(dir_md.mode & 0o777);
        self.append(header, &name, None, Vec::new(), io::empty())
    }

    /// One entry, preceded by a PAX header when the name or link target does not fit ustar
    /// or there are xattrs.
    fn append(
        &mut self,
        mut header: Header,
        name: &[u8],
        link: Option<&[u8]>,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
        data: impl Read,
    ) -> io::Result<()> {
        let name = &[self.prefix, name].concat();
        let mut pax = Vec::new();
        if !fits_ustar(name) {
            pax_record(&mut pax, b"path", name);
        }
        if let Some(link) = link
            && !fits_ustar(link)
        {
            pax_record(&mut pax, b"linkpath", link);
        }
        for (key, value) in &xattrs {
            pax_record(
                &mut pax,
                &[b"SCHILY.xattr.", key.as_slice()].concat(),
                value,
            );
        }
        if !pax.is_empty() {
            let mut ph = Header::new_ustar();
            ph.set_entry_type(EntryType::XHeader);
            ph.set_mode(0o644);
            ph.set_size(pax.len() as u64);
            let base = name.rsplit(|&b| b == b'/').find(|s| !s.is_empty());
            set_name(
                &mut ph.as_old_mut().name,
                &[b"PaxHeaders.0/", base.unwrap_or(b"")].concat(),
            );
            ph.set_cksum();
            self.out.append(&ph, pax.as_slice())?;
        }
        if self.times != Times::Own {
            header.set_mtime(self.times.apply(header.mtime()? as i64).max(0) as u64);
        }
        set_name(&mut header.as_old_mut().name, name);
        if let Some(link) = link {
            set_name(&mut header.as_old_mut().linkname, link);
        }
        header.set_cksum();
        self.out.append(&header, data)
    }
}

/// A header with the entry's own mode, owner and mtime; no user or group names.
fn header_for(kind: EntryType, md: &Meta, size: u64) -> Header {
    let mut header = Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(md.mode & 0o7777);
    header.set_uid(u64::from(md.uid));
    header.set_gid(u64::from(md.gid));
    header.set_mtime(md.mtime.max(0) as u64);
    header.set_size(size);
    header
}

fn fits_ustar(name: &[u8]) -> bool {
    name.len() <= USTAR_NAME_LEN && name.is_ascii()
}

/// Copy a name into a fixed header field; one that does not fit is cut (the PAX record
/// holds the whole name).
fn set_name(field: &mut [u8; USTAR_NAME_LEN], name: &[u8]) {
    let n = name.len().min(USTAR_NAME_LEN);
    field.fill(0);
    field[..n].copy_from_slice(&name[..n]);
}

/// Append a PAX record, `"<len> <key>=<value>\n"`, where `<len>` counts the whole record
/// including its own digits.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=' and '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Reads exactly `left` bytes: a file that shrank while being archived is an error rather
/// than a corrupt archive (the header already promised its size).
struct ExactReader {
    inner: File,
    left: u64,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being archived",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, b"path", b"x");
        assert_eq!(out, b"9 path=x\n");
        // 97 bytes of key and value plus 3 separators: 100, plus 3 digits = 103.
        let mut out = Vec::new();
        pax_record(&mut out, b"path", &[b'a'; 93]);
        assert_eq!(&out[..4], b"103 ");
        assert_eq!(out.len(), 103);
        // Where the length's own digit makes it two digits long: 9 + 1 = 10, so 9 + 2 = 11.
        let mut out = Vec::new();
        pax_record(&mut out, b"k", b"vvvvv");
        assert_eq!(out, b"11 k=vvvvv\n");
    }
}
