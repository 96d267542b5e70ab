//! Unpacking an image layer (a tar, gzip- or zstd-compressed or not) into an empty directory
//! in overlayfs format, the format [`crate::snapshot`] keeps layers in.
//!
//! OCI whiteouts become overlayfs ones: `.wh.NAME` a 0/0 character device `NAME`,
//! `.wh..wh..opq` the `trusted.overlay.opaque=y` mark on its directory. Modes, owners,
//! times, xattrs, symlinks, hard links, devices and fifos are kept as the tar says.
//!
//! A layer is untrusted input. Nothing is written outside `dest`: `..` in a name or a hard
//! link target is refused, absolute names are taken relative to `dest`, and every directory
//! on the way to an entry must be a real directory (not a symlink), so a symlink in the layer
//! can never redirect a later entry. Files are created with `O_EXCL | O_NOFOLLOW`.
//!
//! The diff_id (sha256 of the uncompressed tar, all of it) is computed on the way through.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::fileops::set_mtime;
use crate::snapshot::{make_whiteout, set_opaque};

/// What unpacking a layer found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackStats {
    /// `sha256:<hex>` of the uncompressed tar stream: the layer's diff_id.
    pub diff_id: String,
    /// Size of the uncompressed tar stream.
    pub size: u64,
    /// Tar entries read.
    pub entries: u64,
}

/// How a layer blob or an archive is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// bzip2 (archives only, as `ADD` takes them).
    Bzip2,
    /// xz (archives only).
    Xz,
}

impl Compression {
    /// The compression its first bytes announce (any other bytes: none).
    fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else {
            Compression::None
        }
    }

    /// `reader`, decompressed.
    fn reader<'a>(self, reader: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(reader),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(reader)),
            Compression::Xz => Box::new(lzma_rust2::XzReader::new(reader, true)),
        })
    }
}

/// Whether `path` is an archive `ADD` unpacks, as BuildKit decides: by its content, not
/// its name. A tar (v7, ustar or GNU: its first header's checksum holds), plain or
/// compressed with gzip, bzip2, xz or zstd; a compressed file that is not a tar is not one
/// (`ADD file.txt.gz` copies it as it is).
pub fn archive_compression(path: &Path) -> io::Result<Option<Compression>> {
    if !path.symlink_metadata()?.is_file() {
        return Ok(None);
    }
    let mut magic = [0u8; 6];
    let n = read_up_to(&mut File::open(path)?, &mut magic)?;
    let compression = Compression::sniff(&magic[..n]);
    let mut header = [0u8; 512];
    // A decoder that fails on what it reads: not an archive either.
    let read = compression
        .reader(File::open(path)?)
        .and_then(|mut r| read_up_to(&mut r, &mut header));
    Ok(match read {
        Ok(512) if is_tar_header(&header) => Some(compression),
        _ => None,
    })
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Whether a 512-byte block is a tar header: its checksum (the bytes summed with the
/// checksum field as spaces) is the octal number in that field.
fn is_tar_header(block: &[u8; 512]) -> bool {
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .map(|&b| b as char)
        .filter(|c| c.is_ascii_digit())
        .collect();
    let Ok(stored) = u32::from_str_radix(&digits, 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    !digits.is_empty() && sum == stored && block[0] != 0
}

/// The layer media types we unpack (OCI, Docker, and their non-distributable/foreign forms).
const MEDIA_TYPES: &[(&str, Compression)] = &[
    ("application/vnd.oci.image.layer.v1.tar", Compression::None),
    (
        "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.oci.image.layer.v1.tar+zstd",
        Compression::Zstd,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        Compression::None,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        Compression::Zstd,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        Compression::None,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        Compression::Zstd,
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
        Compression::None,
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        Compression::Gzip,
    ),
];

fn compression(media_type: &str) -> Option<Compression> {
    MEDIA_TYPES
        .iter()
        .find(|(t, _)| *t == media_type)
        .map(|(_, c)| *c)
}

/// Whether [`unpack_layer`] knows this layer media type.
pub fn is_layer_media_type(media_type: &str) -> bool {
    compression(media_type).is_some()
}

/// Decompresses a layer by its media type and unpacks it into `dest`, an empty directory,
/// in overlayfs format. Errors name the tar entry. On error `dest` holds a partial layer:
/// throw it away (a [`crate::LayerBuilder`] does).
pub fn unpack_layer(reader: impl Read, media_type: &str, dest: &Path) -> io::Result<UnpackStats> {
    let Some(compression) = compression(media_type) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unsupported layer media type {media_type:?}"),
        ));
    };
    let (stats, _) = unpack_tar(compression.reader(reader)?, dest, true)?;
    Ok(stats)
}

/// Unpacks the archive `ADD` found (see [`archive_compression`]) into `dest`, an empty
/// directory, as plain files: `.wh.` names are files like any other. Returns the
/// directories the archive implies but does not list (relative paths), which `ADD
/// --chown` leaves to root, as BuildKit does.
pub fn unpack_archive(
    reader: impl Read,
    compression: Compression,
    dest: &Path,
) -> io::Result<Vec<PathBuf>> {
    let (_, implied) = unpack_tar(compression.reader(reader)?, dest, false)?;
    Ok(implied)
}

fn unpack_tar(
    tar: impl Read,
    dest: &Path,
    whiteouts: bool,
) -> io::Result<(UnpackStats, Vec<PathBuf>)> {
    let mut hashed = Hashing {
        inner: crate::tar_guard::TarGuard::new(tar),
        hasher: Sha256::new(),
        size: 0,
    };
    let mut unpacker = Unpacker {
        dest,
        dirs: HashMap::new(),
        room: crate::disk::free_space(dest)?,
        whiteouts,
        implied: std::collections::HashSet::new(),
    };
    let mut entries = 0;
    {
        let mut archive = tar::Archive::new(&mut hashed);
        for entry in archive.entries()? {
            let mut entry = entry.map_err(|e| annotate("reading the layer tar", e))?;
            unpacker.entry(&mut entry)?;
            entries += 1;
        }
    }
    // The end-of-archive blocks and any padding are part of the diff_id too.
    io::copy(&mut hashed, &mut io::sink())?;
    let mut implied: Vec<PathBuf> = unpacker
        .implied
        .iter()
        .filter_map(|p| p.strip_prefix(dest).ok().map(Path::to_path_buf))
        .collect();
    implied.sort();
    unpacker.finish()?;
    let stats = UnpackStats {
        diff_id: format!("sha256:{}", hex::encode(hashed.hasher.finalize())),
        size: hashed.size,
        entries,
    };
    Ok((stats, implied))
}

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// The metadata of an entry, read from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Unpacking state: directory modes and times are set last, since writing into a
/// directory changes its mtime and a read-only directory mode would stop a non-root
/// unpacker from filling it.
struct Unpacker<'a> {
    dest: &'a Path,
    dirs: HashMap<PathBuf, (u32, i64)>,
    /// Bytes of file content that may still be written: the free space of the disk when
    /// unpacking began. A few kilobytes of compressed (or sparse) input can claim terabytes;
    /// such a layer is refused before it fills the disk.
    room: u64,
    /// `.wh.` names are deletions (a layer), or plain files (an archive `ADD` unpacks).
    whiteouts: bool,
    /// Directories made for entries below them that the tar does not list itself.
    implied: std::collections::HashSet<PathBuf>,
}

/// An error with what it was about in front.
fn annotate(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The components of a name in the tar, relative to the layer root. `..` is refused: no
/// legitimate layer needs it and it is the classic way out of the destination.
fn components(name: &[u8]) -> io::Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(invalid("`..` would leave the layer".into())),
            p => out.push(OsStr::from_bytes(p)),
        }
    }
    Ok(out)
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> io::Result<()> {
        let name = entry.path_bytes().into_owned();
        self.entry_inner(entry, &name).map_err(|e| {
            annotate(
                &format!("layer entry {:?}", String::from_utf8_lossy(&name)),
                e,
            )
        })
    }

    fn entry_inner<R: Read>(&mut self, entry: &mut tar::Entry<R>, name: &[u8]) -> io::Result<()> {
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        if kind == T::XGlobalHeader {
            return Ok(());
        }
        let parts = components(name)?;
        let Some((last, parents)) = parts.split_last() else {
            // The layer root itself ("./"): only its metadata applies.
            if kind != T::Directory {
                return Err(invalid("only a directory can name the layer root".into()));
            }
            let meta = read_meta(entry)?;
            self.dirs
                .insert(self.dest.to_path_buf(), (meta.mode, meta.mtime_ns));
            return set_owner_and_xattrs(self.dest, &meta, None);
        };
        let last_bytes = last.as_bytes();
        if let Some(hidden) = last_bytes.strip_prefix(b".wh.")
            && self.whiteouts
        {
            let dir = self.dir(parents, true)?;
            if hidden == b".wh..opq" {
                return set_opaque(&dir);
            }
            if hidden.starts_with(b".wh.") || hidden.is_empty() {
                // AUFS bookkeeping (`.wh..wh.plnk` ...): meaningless in overlayfs.
                return Ok(());
            }
            let target = dir.join(OsStr::from_bytes(hidden));
            // A whiteout only hides lower layers; an entry of this layer stays.
            if target.symlink_metadata().is_err() {
                make_whiteout(&target)?;
            }
            return Ok(());
        }

        let path = self.dir(parents, true)?.join(last);
        let existing = path.symlink_metadata().ok();
        match kind {
            T::Directory => {
                let meta = read_meta(entry)?;
                self.implied.remove(&path);
                match &existing {
                    Some(md) if md.is_dir() => {}
                    _ => {
                        self.remove(&path, existing.as_ref())?;
                        fs::create_dir(&path)?;
                    }
                }
                set_owner_and_xattrs(&path, &meta, None)?;
                self.dirs.insert(path, (meta.mode, meta.mtime_ns));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let meta = read_meta(entry)?;
                let size = entry.size();
                if size > self.room {
                    return Err(io::Error::new(
                        io::ErrorKind::StorageFull,
                        format!(
                            "it expands to {size} bytes, more than the {} bytes left on the disk holding the build's state",
                            self.room
                        ),
                    ));
                }
                self.room -= size;
                self.remove(&path, existing.as_ref())?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc_o_nofollow())
                    .mode(0o600)
                    .open(&path)?;
                io::copy(entry, &mut file)?;
                file.flush()?;
                // Owner before mode (chown clears set-id bits), both after the data
                // (a write clears file capabilities), times last.
                set_owner_and_xattrs(&path, &meta, Some(&file))?;
                drop(file);
            }
            T::Symlink => {
                let meta = read_meta(entry)?;
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| invalid("symlink without a target".into()))?
                    .into_owned();
                self.remove(&path, existing.as_ref())?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)?;
                set_owner_and_xattrs(&path, &meta, None)?;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| invalid("hard link without a target".into()))?
                    .into_owned();
                let shown = String::from_utf8_lossy(&target).into_owned();
                let tparts = components(&target)
                    .map_err(|e| annotate(&format!("hard link target {shown:?}"), e))?;
                let Some((tlast, tparents)) = tparts.split_last() else {
                    return Err(invalid("hard link to the layer root".into()));
                };
                let missing =
                    || invalid(format!("hard link target {shown:?} is not in this layer"));
                let source = match self.dir(tparents, false) {
                    Ok(dir) => dir.join(tlast),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
                    Err(e) => return Err(annotate(&format!("hard link target {shown:?}"), e)),
                };
                let smd = source.symlink_metadata().map_err(|_| missing())?;
                if smd.is_dir() {
                    return Err(invalid(format!(
                        "hard link target {shown:?} is a directory"
                    )));
                }
                if existing
                    .as_ref()
                    .is_some_and(|md| md.dev() == smd.dev() && md.ino() == smd.ino())
                {
                    return Ok(());
                }
                let meta = read_meta(entry)?;
                self.remove(&path, existing.as_ref())?;
                // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
                fs::hard_link(&source, &path)?;
                // The link's own header decides the inode's owner and mode, as Go's
                // archive extraction (BuildKit, containerd) applies every header.
                if !smd.file_type().is_symlink() {
                    set_owner_and_xattrs(&path, &meta, None)?;
                }
            }
            T::Char | T::Block | T::Fifo => {
                let meta = read_meta(entry)?;
                let (file_type, dev) = match kind {
                    T::Fifo => (rustix::fs::FileType::Fifo, 0),
                    _ => {
                        let h = entry.header();
                        let major = h.device_major()?.unwrap_or(0);
                        let minor = h.device_minor()?.unwrap_or(0);
                        let t = if kind == T::Char {
                            rustix::fs::FileType::CharacterDevice
                        } else {
                            rustix::fs::FileType::BlockDevice
                        };
                        (t, rustix::fs::makedev(major, minor))
                    }
                };
                self.remove(&path, existing.as_ref())?;
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &path,
                    file_type,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    dev,
                )?;
                set_owner_and_xattrs(&path, &meta, None)?;
            }
            other => return Err(invalid(format!("unsupported tar entry type {other:?}"))),
        }
        Ok(())
    }

    /// The directory `parts` under `dest`, every component checked to be a real directory
    /// (not a symlink); missing ones are created when `create`.
    fn dir(&mut self, parts: &[&OsStr], create: bool) -> io::Result<PathBuf> {
        let mut path = self.dest.to_path_buf();
        for (i, part) in parts.iter().enumerate() {
            path.push(part);
            let shown = || {
                parts[..=i]
                    .iter()
                    .map(|p| p.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/")
            };
            match path.symlink_metadata() {
                Ok(md) if md.is_dir() => {}
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(invalid(format!(
                        "{} is a symlink in this layer; writing through it could leave the layer",
                        shown()
                    )));
                }
                Ok(_) => return Err(invalid(format!("{} is not a directory", shown()))),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&path)?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
                    self.implied.insert(path.clone());
                }
                Err(e) => return Err(annotate(&shown(), e)),
            }
        }
        Ok(path)
    }

    /// Removes what an entry replaces (a directory only when replaced by a non-directory).
    fn remove(&mut self, path: &Path, md: Option<&fs::Metadata>) -> io::Result<()> {
        match md {
            Some(md) if md.is_dir() => {
                // remove_dir_all does not follow symlinks.
                fs::remove_dir_all(path)?;
                self.dirs.retain(|d, _| !d.starts_with(path));
                Ok(())
            }
            Some(_) => fs::remove_file(path),
            None => Ok(()),
        }
    }

    /// Directory modes and times, now that nothing more is written into them.
    fn finish(self) -> io::Result<()> {
        for (dir, (mode, mtime_ns)) in self.dirs {
            // Still a real directory (nothing replaced it since)?
            if dir.symlink_metadata().is_ok_and(|md| md.is_dir()) {
                fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
                set_mtime(&dir, mtime_ns)?;
            }
        }
        Ok(())
    }
}

/// `O_NOFOLLOW`, through rustix so no libc dependency is needed.
fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Reads the entry's mode, owner, mtime (to the nanosecond when PAX has it) and xattrs.
fn read_meta<R: Read>(entry: &mut tar::Entry<R>) -> io::Result<Meta> {
    let h = entry.header();
    let mode = h.mode()? & 0o7777;
    let id = |v: u64, what: &str| {
        u32::try_from(v).map_err(|_| invalid(format!("{what} {v} is too large")))
    };
    // PAX uid/gid are already folded into the header by the tar crate.
    let uid = id(h.uid()?, "uid")?;
    let gid = id(h.gid()?, "gid")?;
    let mut mtime_ns = i64::try_from(h.mtime()?)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .ok_or_else(|| invalid("mtime out of range".into()))?;
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
            } else if key == "mtime"
                && let Some(ns) = ext.value().ok().and_then(parse_pax_time)
            {
                mtime_ns = ns;
            }
        }
    }
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime_ns,
        xattrs,
    })
}

/// A PAX time (`seconds[.fraction]`, maybe negative) in nanoseconds.
fn parse_pax_time(v: &str) -> Option<i64> {
    let (neg, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    if secs.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut ns: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        ns += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    let total = secs.checked_mul(1_000_000_000)?.checked_add(ns)?;
    Some(if neg { -total } else { total })
}

/// Owner, xattrs, mode (not for directories: see [`Unpacker`]; never for symlinks) and
/// times (not for directories), in the order that keeps each of them. With `file`, through
/// its descriptor.
fn set_owner_and_xattrs(path: &Path, meta: &Meta, file: Option<&File>) -> io::Result<()> {
    use rustix::process::{Gid, Uid};
    let (uid, gid) = (Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)));
    match file {
        Some(f) => rustix::fs::fchown(f, uid, gid)?,
        None => rustix::fs::chownat(
            rustix::fs::CWD,
            path,
            uid,
            gid,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?,
    }
    let md = path.symlink_metadata()?;
    if !md.is_dir() && !md.file_type().is_symlink() {
        match file {
            Some(f) => rustix::fs::fchmod(f, rustix::fs::Mode::from_raw_mode(meta.mode))?,
            None => fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))?,
        }
    }
    for (name, value) in &meta.xattrs {
        // overlayfs reads its own xattrs from layers; a layer must not forge them.
        if name.starts_with("trusted.overlay.") {
            tracing::debug!("{}: ignoring xattr {name}", path.display());
            continue;
        }
        let flags = rustix::fs::XattrFlags::empty();
        match file {
            Some(f) => rustix::fs::fsetxattr(f, name.as_str(), value, flags),
            None => rustix::fs::lsetxattr(path, name.as_str(), value, flags),
        }
        .map_err(|e| annotate(&format!("setting xattr {name}"), e.into()))?;
    }
    if !md.is_dir() {
        set_mtime(path, meta.mtime_ns)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{is_opaque, is_whiteout};
    use std::os::unix::fs::FileTypeExt;

    const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

    /// Appends an entry with a raw name (the tar crate's builder refuses `..`).
    fn raw(
        b: &mut tar::Builder<Vec<u8>>,
        kind: tar::EntryType,
        name: &str,
        link: Option<&str>,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    #[test]
    fn keeps_metadata_links_devices_and_computes_the_diff_id() {
        use tar::EntryType as T;
        let tar = tar_of(|b| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(T::Directory);
            h.set_mode(0o750);
            h.set_uid(1000);
            h.set_gid(1001);
            h.set_mtime(1_500_000_000);
            h.set_size(0);
            b.append_data(&mut h, "dir/", &[][..]).unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o4755);
            h.set_uid(1000);
            h.set_gid(1001);
            h.set_mtime(1_600_000_000);
            h.set_size(5);
            b.append_pax_extensions([
                ("SCHILY.xattr.user.note", &b"hi"[..]),
                ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
                ("mtime", &b"1600000000.25"[..]),
            ])
            .unwrap();
            b.append_data(&mut h, "dir/tool", &b"bytes"[..]).unwrap();
            raw(b, T::Symlink, "dir/link", Some("../etc/passwd"), b"");
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o600);
            h.set_uid(7);
            h.set_gid(7);
            h.set_size(1);
            b.append_data(&mut h, "dir/other", &b"o"[..]).unwrap();
            raw(b, T::Link, "./hard", Some("dir/other"), b"");
            raw(b, T::Fifo, "fifo", None, b"");
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(T::Char);
            h.set_mode(0o666);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(0);
            b.append_data(&mut h, "null", &[][..]).unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let stats = unpack_layer(&tar[..], TAR, dir.path()).unwrap();
        assert_eq!(stats.diff_id, sha(&tar));
        assert_eq!(stats.size, tar.len() as u64);
        assert_eq!(stats.entries, 7);

        let d = dir.path().join("dir").symlink_metadata().unwrap();
        assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o750, 1000, 1001));
        assert_eq!(d.mtime(), 1_500_000_000);
        let f = dir.path().join("dir/tool").symlink_metadata().unwrap();
        assert_eq!((f.mode() & 0o7777, f.uid(), f.gid()), (0o4755, 1000, 1001));
        assert_eq!((f.mtime(), f.mtime_nsec()), (1_600_000_000, 250_000_000));
        assert_eq!(fs::read(dir.path().join("dir/tool")).unwrap(), b"bytes");
        let mut buf = [0u8; 8];
        let n = rustix::fs::getxattr(dir.path().join("dir/tool"), "user.note", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert!(
            rustix::fs::getxattr(
                dir.path().join("dir/tool"),
                "trusted.overlay.redirect",
                &mut buf
            )
            .is_err(),
            "overlay xattrs from the tar must be dropped"
        );
        // The symlink is stored as is (never followed while unpacking).
        assert_eq!(
            fs::read_link(dir.path().join("dir/link")).unwrap(),
            Path::new("../etc/passwd")
        );
        // A hard link's own header decides its inode's mode and owner, as in Go's tar
        // extraction.
        let hard = dir.path().join("hard").symlink_metadata().unwrap();
        let other = dir.path().join("dir/other").symlink_metadata().unwrap();
        assert_eq!(hard.ino(), other.ino());
        assert_eq!(
            (other.mode() & 0o7777, other.uid(), other.gid()),
            (0o644, 0, 0)
        );
        let fifo = dir.path().join("fifo").symlink_metadata().unwrap();
        assert!(fifo.file_type().is_fifo());
        let null = dir.path().join("null").symlink_metadata().unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
    }

    #[test]
    fn whiteouts_and_opaque_directories_become_overlayfs_ones() {
        use tar::EntryType as T;
        let tar = tar_of(|b| {
            raw(b, T::Directory, "etc/", None, b"");
            raw(b, T::Regular, "etc/.wh.passwd", None, b"");
            raw(b, T::Regular, "var/lib/.wh..wh..opq", None, b"");
            raw(b, T::Regular, "var/lib/kept", None, b"new");
            // Same-layer content wins over a whiteout of the same name.
            raw(b, T::Regular, "keep", None, b"x");
            raw(b, T::Regular, ".wh.keep", None, b"");
            raw(b, T::Regular, ".wh..wh.plnk", None, b"");
        });
        let dir = tempfile::tempdir().unwrap();
        unpack_layer(&tar[..], TAR, dir.path()).unwrap();
        let wh = dir.path().join("etc/passwd").symlink_metadata().unwrap();
        assert!(is_whiteout(&wh));
        assert!(!dir.path().join("etc/.wh.passwd").exists());
        assert!(is_opaque(&dir.path().join("var/lib")));
        assert!(!is_opaque(&dir.path().join("var")));
        assert_eq!(fs::read(dir.path().join("var/lib/kept")).unwrap(), b"new");
        assert_eq!(fs::read(dir.path().join("keep")).unwrap(), b"x");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn gzip_and_zstd_layers_hash_the_uncompressed_tar() {
        let tar = tar_of(|b| raw(b, tar::EntryType::Regular, "a", None, b"content"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        for (media_type, blob) in [
            ("application/vnd.oci.image.layer.v1.tar+gzip", &gz),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", &gz),
            ("application/vnd.oci.image.layer.v1.tar+zstd", &zst),
            ("application/vnd.docker.image.rootfs.diff.tar", &tar),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let stats = unpack_layer(&blob[..], media_type, dir.path()).unwrap();
            assert_eq!(stats.diff_id, sha(&tar), "{media_type}");
            assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"content");
        }
        let dir = tempfile::tempdir().unwrap();
        let err = unpack_layer(&tar[..], "application/x-tar", dir.path()).unwrap_err();
        assert!(err.to_string().contains("application/x-tar"), "{err}");
        // gzip bytes declared as plain tar are not a tar.
        assert!(unpack_layer(&gz[..], TAR, dir.path()).is_err());
    }

    /// Unpacks a layer into `root/layer` and returns the error; nothing may appear in `root`.
    fn refused(tar: Vec<u8>, expect: &str) -> String {
        let root = tempfile::tempdir().unwrap();
        let layer = root.path().join("layer");
        fs::create_dir(&layer).unwrap();
        let err = unpack_layer(&tar[..], TAR, &layer).unwrap_err().to_string();
        eprintln!("{err}");
        assert!(err.contains(expect), "{err} should mention {expect}");
        let mut names: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["layer"], "something was written outside the layer");
        err
    }

    #[test]
    fn refuses_to_write_outside_the_layer() {
        use tar::EntryType as T;
        refused(
            tar_of(|b| raw(b, T::Regular, "../x", None, b"evil")),
            "\"../x\"",
        );
        refused(
            tar_of(|b| raw(b, T::Regular, "a/../../x", None, b"evil")),
            "a/../../x",
        );
        // A symlink to a directory outside, then a file "inside" it.
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_string();
        let err = refused(
            tar_of(|b| {
                raw(b, T::Symlink, "a", Some(&target), b"");
                raw(b, T::Regular, "a/passwd", None, b"evil");
            }),
            "a/passwd",
        );
        assert!(err.contains("symlink"), "{err}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        refused(
            tar_of(|b| {
                raw(b, T::Symlink, "etc", Some("/etc"), b"");
                raw(b, T::Regular, "etc/.wh.passwd", None, b"");
            }),
            "etc/.wh.passwd",
        );
        refused(
            tar_of(|b| {
                raw(b, T::Symlink, "up", Some(".."), b"");
                raw(b, T::Directory, "up/escape/", None, b"");
            }),
            "up/escape",
        );
        // Hard links to files outside, by `..`, by an absolute path, or through a symlink.
        refused(
            tar_of(|b| raw(b, T::Link, "h", Some("../../x"), b"")),
            "../../x",
        );
        refused(
            tar_of(|b| raw(b, T::Link, "h", Some("/etc/passwd"), b"")),
            "/etc/passwd",
        );
        refused(
            tar_of(|b| {
                raw(b, T::Symlink, "e", Some("/etc"), b"");
                raw(b, T::Link, "h", Some("e/passwd"), b"");
            }),
            "e/passwd",
        );
    }

    #[test]
    fn absolute_names_are_relative_to_the_layer() {
        use tar::EntryType as T;
        let tar = tar_of(|b| {
            raw(b, T::Regular, "/abs/file", None, b"in");
            raw(b, T::Link, "/abs/hard", Some("/abs/file"), b"");
        });
        let dir = tempfile::tempdir().unwrap();
        unpack_layer(&tar[..], TAR, dir.path()).unwrap();
        assert_eq!(fs::read(dir.path().join("abs/file")).unwrap(), b"in");
        assert_eq!(fs::read(dir.path().join("abs/hard")).unwrap(), b"in");
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        use tar::EntryType as T;
        let tar = tar_of(|b| {
            raw(b, T::Directory, "x/", None, b"");
            raw(b, T::Regular, "x/inner", None, b"1");
            raw(b, T::Regular, "x", None, b"file now");
            raw(b, T::Symlink, "s", Some("x"), b"");
            raw(b, T::Regular, "s", None, b"not a link");
        });
        let dir = tempfile::tempdir().unwrap();
        unpack_layer(&tar[..], TAR, dir.path()).unwrap();
        assert_eq!(fs::read(dir.path().join("x")).unwrap(), b"file now");
        assert_eq!(fs::read(dir.path().join("s")).unwrap(), b"not a link");
        assert!(
            !dir.path()
                .join("s")
                .symlink_metadata()
                .unwrap()
                .is_symlink()
        );
    }

    #[test]
    fn parses_pax_times() {
        assert_eq!(parse_pax_time("12"), Some(12_000_000_000));
        assert_eq!(parse_pax_time("12.5"), Some(12_500_000_000));
        assert_eq!(parse_pax_time("1.0000000019"), Some(1_000_000_001));
        assert_eq!(parse_pax_time("-1.5"), Some(-1_500_000_000));
        assert_eq!(parse_pax_time("x"), None);
        assert_eq!(parse_pax_time(".5"), None);
    }
}
