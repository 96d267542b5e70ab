//! Writing a directory tree as tar entries: either a layer in overlayfs format, turned into
//! an OCI layer (whiteouts become `.wh.` files), or plain files (for `type=tar`).
//!
//! Entries come depth first with the names of each directory sorted bytewise, and their
//! headers carry only what is in the tree (mode, uid/gid, mtime in whole seconds, xattrs),
//! never the host's user names or the time of the export, so the same tree always gives the
//! same bytes.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use buildwit_worker::snapshot::{is_opaque, is_whiteout};
use tar::{EntryType, Header};

/// Prefix of a whiteout file in an OCI layer.
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the marker that makes a directory opaque in an OCI layer.
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Xattrs of overlayfs' own bookkeeping: never part of an image.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
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

/// An io::Error that names the path it happened on, keeping its kind.
pub(crate) fn path_error(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Write every entry under `root` (not `root` itself) into `out`; the caller finishes the
/// archive.
pub(crate) fn write_tree<W: Write>(
    root: &Path,
    kind: TreeKind,
    out: &mut tar::Builder<W>,
) -> io::Result<()> {
    let mut walker = Walker {
        out,
        kind,
        links: HashMap::new(),
    };
    if kind == TreeKind::Layer && is_opaque(root) {
        let md = fs::symlink_metadata(root).map_err(|e| path_error(root, e))?;
        walker.opaque_marker(b"", &md)?;
    }
    walker.dir(root, b"")
}

/// Whether a layer directory holds nothing at all (no files, no deletions, not opaque).
pub(crate) fn is_empty_layer(dir: &Path) -> io::Result<bool> {
    let mut entries = fs::read_dir(dir).map_err(|e| path_error(dir, e))?;
    Ok(entries.next().is_none() && !is_opaque(dir))
}

struct Walker<'a, W: Write> {
    out: &'a mut tar::Builder<W>,
    kind: TreeKind,
    /// Files with more than one link seen so far: (dev, inode) → the name written first.
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl<W: Write> Walker<'_, W> {
    /// The entries below directory `abs`, whose name in the archive is `rel` ("" for the root).
    fn dir(&mut self, abs: &Path, rel: &[u8]) -> io::Result<()> {
        let mut names = Vec::new();
        for entry in fs::read_dir(abs).map_err(|e| path_error(abs, e))? {
            names.push(entry.map_err(|e| path_error(abs, e))?.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let child = abs.join(&name);
            let mut child_rel = rel.to_vec();
            if !child_rel.is_empty() {
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(name.as_bytes());
            self.entry(&child, &child_rel)
                .map_err(|e| path_error(&child, e))?;
        }
        Ok(())
    }

    fn entry(&mut self, abs: &Path, rel: &[u8]) -> io::Result<()> {
        let md = fs::symlink_metadata(abs)?;
        let ft = md.file_type();
        if is_whiteout(&md) {
            if self.kind == TreeKind::Layer {
                self.whiteout(rel, &md)?;
            }
            return Ok(());
        }
        if ft.is_dir() {
            let mut name = rel.to_vec();
            name.push(b'/');
            let header = header_for(EntryType::Directory, &md, 0);
            self.append(header, &name, None, xattrs(abs)?, io::empty())?;
            if self.kind == TreeKind::Layer && is_opaque(abs) {
                // Right after the directory, before anything the same layer adds to it, so
                // an extractor applying markers as it goes never hides this layer's files.
                self.opaque_marker(rel, &md)?;
            }
            return self.dir(abs, rel);
        }
        if ft.is_file() {
            if md.nlink() > 1 {
                let key = (md.dev(), md.ino());
                if let Some(target) = self.links.get(&key) {
                    let target = target.clone();
                    let header = header_for(EntryType::Link, &md, 0);
                    return self.append(header, rel, Some(&target), Vec::new(), io::empty());
                }
                self.links.insert(key, rel.to_vec());
            }
            let header = header_for(EntryType::Regular, &md, md.len());
            let file = ExactReader {
                inner: File::open(abs)?,
                left: md.len(),
            };
            return self.append(header, rel, None, xattrs(abs)?, file);
        }
        if ft.is_symlink() {
            let target = fs::read_link(abs)?;
            let header = header_for(EntryType::Symlink, &md, 0);
            let target = target.as_os_str().as_bytes();
            return self.append(header, rel, Some(target), xattrs(abs)?, io::empty());
        }
        let kind = if ft.is_char_device() {
            EntryType::Char
        } else if ft.is_block_device() {
            EntryType::Block
        } else if ft.is_fifo() {
            EntryType::Fifo
        } else {
            // Sockets have no tar form; they are runtime artefacts anyway.
            tracing::debug!("skipping socket {}", abs.display());
            return Ok(());
        };
        let mut header = header_for(kind, &md, 0);
        if kind != EntryType::Fifo {
            header.set_device_major(rustix::fs::major(md.rdev()))?;
            header.set_device_minor(rustix::fs::minor(md.rdev()))?;
        }
        self.append(header, rel, None, xattrs(abs)?, io::empty())
    }

    /// `dir/.wh.name` for a deleted `dir/name`: an empty file with the deletion's mtime.
    fn whiteout(&mut self, rel: &[u8], md: &Metadata) -> io::Result<()> {
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
        header.set_mtime(md.mtime().max(0) as u64);
        header.set_size(0);
        self.append(header, &name, None, Vec::new(), io::empty())
    }

    /// `dir/.wh..wh..opq`, owned like the directory it marks.
    fn opaque_marker(&mut self, dir_rel: &[u8], dir_md: &Metadata) -> io::Result<()> {
        let mut name = dir_rel.to_vec();
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(OPAQUE_MARKER);
        let mut header = header_for(EntryType::Regular, dir_md, 0);
        header.set_mode(dir_md.mode() & 0o777);
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
        set_name(&mut header.as_old_mut().name, name);
        if let Some(link) = link {
            set_name(&mut header.as_old_mut().linkname, link);
        }
        header.set_cksum();
        self.out.append(&header, data)
    }
}

/// A header with the entry's own mode, owner and mtime; no user or group names.
fn header_for(kind: EntryType, md: &Metadata, size: u64) -> Header {
    let mut header = Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(md.mode() & 0o7777);
    header.set_uid(u64::from(md.uid()));
    header.set_gid(u64::from(md.gid()));
    header.set_mtime(md.mtime().max(0) as u64);
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

/// The xattrs of a path, sorted by name, without overlayfs' own.
pub(crate) fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let list = match read_xattr_buf(|buf| rustix::fs::llistxattr(path, buf)) {
        Ok(list) => list,
        // Filesystems without xattrs have none to keep.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        let cname = std::ffi::OsStr::from_bytes(name);
        match read_xattr_buf(|buf| rustix::fs::lgetxattr(path, cname, buf)) {
            Ok(value) => out.push((name.to_vec(), value)),
            // Removed between listing and reading: it is gone, so not part of the tree.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODATA.raw_os_error()) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Call an xattr getter with a growing buffer until the value fits.
fn read_xattr_buf(
    mut get: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match get(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < (1 << 20) => {
                let grown = buf.len() * 4;
                buf.resize(grown, 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
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
