//! Snapshots as stacks of immutable layer directories, mounted with overlayfs.
//!
//! A layer is a directory in overlayfs' own format (deletions are 0/0 character devices,
//! opaque directories carry `trusted.overlay.opaque=y`), so a layer is also exactly the
//! diff an image layer is made from. A snapshot is a list of layers, bottom first: merge
//! concatenates lists, a step that writes adds one layer on top. Layers are written in
//! `tmp/` and renamed into `layers/<id>` when complete, so a killed build never leaves a
//! half layer where a later build would find it.
//!
//! Lower layers are added one at a time with the new mount API (`lowerdir+`), so long
//! stacks never outgrow the one-page limit on mount options. overlayfs stacks at most 500
//! lower layers; longer stacks mount with their bottom layers squashed, in aligned groups
//! of [`GROUP`] that are cached and shared by every snapshot built on them (the snapshot
//! keeps its own layers for export).

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, UnmountFlags, fsconfig_create,
    fsconfig_set_string, fsmount, fsopen, move_mount, unmount,
};
use serde::{Deserialize, Serialize};

use crate::content::Descriptor;

/// Layers squashed into one lower directory when a stack is too deep for overlayfs.
pub const GROUP: usize = 128;
/// Deepest stack mounted layer by layer (overlayfs allows 500 lowers).
const MAX_LOWERS: usize = 400;

/// What is known about a layer besides its files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMeta {
    /// The digest of its uncompressed tar, when it came from one (a pulled image layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
    /// The compressed blob it was unpacked from, kept in the content store, so exporting
    /// it again needs no compression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<Descriptor>,
    /// When a build made it (Unix seconds): the time its image history entry gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    /// The blob the last export with `rewrite-timestamp` made of it: the same files, no
    /// time later than `SOURCE_DATE_EPOCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewritten: Option<RewrittenBlob>,
}

/// A layer's blob with its times clamped to an epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewrittenBlob {
    /// The epoch (Unix seconds).
    pub epoch: i64,
    /// The blob.
    pub blob: Descriptor,
    /// The digest of its uncompressed tar.
    pub diff_id: String,
}

impl LayerMeta {
    /// The blobs in the content store that are this layer's.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.blob
            .iter()
            .chain(self.rewritten.as_ref().map(|r| &r.blob))
    }

    /// Metadata of a layer a build makes now.
    pub fn now() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        LayerMeta {
            created: Some(secs),
            ..Default::default()
        }
    }
}

/// A committed, immutable layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Its name under `layers/`.
    pub id: String,
    /// Its files, in overlayfs format.
    pub dir: PathBuf,
}

impl Layer {
    /// Its metadata (`meta.json` beside the files).
    pub fn meta(&self) -> io::Result<LayerMeta> {
        let path = self.meta_path();
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LayerMeta::default()),
            Err(e) => Err(e),
        }
    }

    /// Record metadata learnt later (the blob an export compressed it to); atomic.
    pub fn set_meta(&self, meta: &LayerMeta) -> io::Result<()> {
        let path = self.meta_path();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = path.with_extension(format!(
            "tmp{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::write(&tmp, serde_json::to_vec(meta).map_err(io::Error::other)?)?;
        fs::rename(tmp, path)
    }

    fn meta_path(&self) -> PathBuf {
        self.dir.with_file_name("meta.json")
    }
}

/// A filesystem state: layers, bottom first. Empty = scratch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The layers.
    pub layers: Vec<Layer>,
}

/// The layers under one directory.
#[derive(Debug)]
pub struct Snapshotter {
    root: PathBuf,
    next: AtomicU64,
    native: bool,
}

/// Which snapshotter (`[worker.oci] snapshotter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// overlayfs if the kernel mounts it here, else native.
    #[default]
    Auto,
    /// overlayfs.
    Overlayfs,
    /// Plain copies: each step gets a full copy of its root filesystem, and its layer is
    /// the difference found afterwards. Slow, but needs nothing from the kernel.
    Native,
}

impl Kind {
    /// The config value (`auto`, `overlayfs`, `native`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "auto" => Some(Kind::Auto),
            "overlayfs" => Some(Kind::Overlayfs),
            "native" => Some(Kind::Native),
            _ => None,
        }
    }
}

/// A layer being written.
#[derive(Debug)]
pub struct LayerBuilder {
    tmp: PathBuf,
    layers: PathBuf,
    done: bool,
}

/// A mounted snapshot; unmounted and cleaned up on drop.
#[derive(Debug)]
pub struct Mounted {
    path: PathBuf,
    mounted: bool,
    cleanup: Option<PathBuf>,
    /// Native snapshotter: the pristine copy and the layer to write the difference to.
    native_upper: Option<(PathBuf, PathBuf)>,
    /// Native snapshotter: copied trees to remove.
    trees: Vec<PathBuf>,
}

impl Snapshotter {
    /// The snapshotter under `root`; whatever a killed process left in `tmp/` is removed.
    pub fn open(root: impl Into<PathBuf>, kind: Kind) -> io::Result<Arc<Self>> {
        let root = root.into();
        fs::create_dir_all(root.join("layers"))?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            remove_tmp(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let mut s = Snapshotter {
            root,
            next: AtomicU64::new(0),
            native: kind == Kind::Native,
        };
        if kind == Kind::Auto && !s.overlay_works() {
            tracing::warn!("overlayfs cannot be mounted here; using the native snapshotter");
            s.native = true;
        }
        Ok(Arc::new(s))
    }

    /// Whether this snapshotter copies instead of mounting overlays.
    pub fn is_native(&self) -> bool {
        self.native
    }

    /// Whether the kernel makes an overlay of directories here. The filesystem is created
    /// but never attached, which is as telling as a mount and spares an unmount (tens of
    /// milliseconds) on every start.
    fn overlay_works(&self) -> bool {
        let probe = self.scratch_dir("probe");
        let ok = (|| -> io::Result<()> {
            for d in ["l", "u", "w"] {
                fs::create_dir_all(probe.join(d))?;
            }
            let fs_fd = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
            fsconfig_set_string(fs_fd.as_fd(), "lowerdir+", probe.join("l"))?;
            fsconfig_set_string(fs_fd.as_fd(), "upperdir", probe.join("u"))?;
            fsconfig_set_string(fs_fd.as_fd(), "workdir", probe.join("w"))?;
            fsconfig_create(fs_fd.as_fd())?;
            Ok(())
        })()
        .is_ok();
        let _ = remove_tmp(&probe);
        ok
    }

    /// A plain copy of a stack of layers.
    fn materialize(&self, layers: &[Layer]) -> io::Result<PathBuf> {
        let dir = self.scratch_dir("copy");
        fs::create_dir_all(&dir)?;
        for l in layers {
            apply_layer(&l.dir, &dir, Apply::Materialize)?;
        }
        Ok(dir)
    }

    /// A committed layer by id.
    pub fn layer(&self, id: &str) -> Option<Layer> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return None;
        }
        let dir = self.root.join("layers").join(id).join("diff");
        dir.is_dir().then(|| Layer {
            id: id.to_string(),
            dir,
        })
    }

    /// Ids of all committed layers.
    pub fn layer_ids(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for e in fs::read_dir(self.root.join("layers"))? {
            ids.push(e?.file_name().to_string_lossy().into_owned());
        }
        ids.sort();
        Ok(ids)
    }

    /// Remove a committed layer (the caller knows nothing refers to it).
    pub fn remove_layer(&self, id: &str) -> io::Result<()> {
        if self.layer(id).is_none() {
            return Ok(());
        }
        // Rename first so a crash half way leaves garbage in tmp/, not a half layer.
        let doomed = self.scratch_dir("rm");
        fs::rename(self.root.join("layers").join(id), &doomed)?;
        remove_tmp(&doomed)
    }

    /// Remove every squashed group (they are remade on demand). Only safe while no
    /// snapshot is mounted, since mounts use them as lower directories.
    pub fn clear_squashed(&self) -> io::Result<()> {
        let dir = self.root.join("squashed");
        if !dir.is_dir() {
            return Ok(());
        }
        let doomed = self.scratch_dir("rm");
        fs::create_dir_all(doomed.parent().unwrap_or(&self.root))?;
        fs::rename(&dir, &doomed)?;
        remove_tmp(&doomed)
    }

    /// Start a new layer.
    pub fn new_layer(&self) -> io::Result<LayerBuilder> {
        let tmp = self.scratch_dir("layer");
        fs::create_dir_all(tmp.join("diff"))?;
        fs::create_dir_all(tmp.join("work"))?;
        Ok(LayerBuilder {
            tmp,
            layers: self.root.join("layers"),
            done: false,
        })
    }

    fn scratch_dir(&self, what: &str) -> PathBuf {
        self.root.join("tmp").join(format!(
            "{what}-{}-{}",
            std::process::id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// The lower directories to mount for a stack of layers, bottom first: squashed groups
    /// for the bottom of a deep stack, then the layers themselves.
    fn lowers(&self, layers: &[Layer]) -> io::Result<Vec<PathBuf>> {
        if layers.len() <= MAX_LOWERS {
            return Ok(layers.iter().map(|l| l.dir.clone()).collect());
        }
        let grouped = (layers.len() - MAX_LOWERS).div_ceil(GROUP) * GROUP;
        let mut out = Vec::new();
        for group in layers[..grouped].chunks(GROUP) {
            out.push(self.squashed(group)?);
        }
        out.extend(layers[grouped..].iter().map(|l| l.dir.clone()));
        Ok(out)
    }

    /// A group of layers squashed into one overlay-format directory, made once.
    fn squashed(&self, group: &[Layer]) -> io::Result<PathBuf> {
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        for l in group {
            sha2::Digest::update(&mut h, l.id.as_bytes());
            sha2::Digest::update(&mut h, b"\0");
        }
        let id = format!("squash-{}", hex::encode(&sha2::Digest::finalize(h)[..16]));
        let dest = self.root.join("squashed").join(&id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let tmp = self.scratch_dir("squash");
        fs::create_dir_all(&tmp)?;
        for l in group {
            apply_layer(&l.dir, &tmp, Apply::Squash)?;
        }
        fs::create_dir_all(self.root.join("squashed"))?;
        match fs::rename(&tmp, &dest) {
            Ok(()) => Ok(dest),
            Err(_) if dest.is_dir() => {
                remove_tmp(&tmp)?;
                Ok(dest)
            }
            Err(e) => Err(e),
        }
    }

    /// Mount a snapshot read-only, or with `upper` as its writable top layer.
    pub fn mount(&self, snapshot: &Snapshot, upper: Option<&LayerBuilder>) -> io::Result<Mounted> {
        if self.native && (upper.is_some() || snapshot.layers.len() > 1) {
            let work = self.materialize(&snapshot.layers)?;
            let mut m = Mounted {
                path: work.clone(),
                mounted: false,
                cleanup: None,
                native_upper: None,
                trees: vec![work],
            };
            if let Some(u) = upper {
                let base = self.materialize(&snapshot.layers)?;
                m.trees.push(base.clone());
                m.native_upper = Some((base, u.dir()));
            }
            return Ok(m);
        }
        let lower_dirs = self.lowers(&snapshot.layers)?;
        let lowers: Vec<&Path> = lower_dirs.iter().map(|l| l.as_path()).collect();
        match (upper, lowers.as_slice()) {
            // One layer read-only needs no overlay: readers get its directory.
            (None, [only]) => Ok(Mounted {
                path: only.to_path_buf(),
                mounted: false,
                cleanup: None,
                native_upper: None,
                trees: Vec::new(),
            }),
            (None, []) => {
                let dir = self.scratch_dir("empty");
                fs::create_dir_all(&dir)?;
                Ok(Mounted {
                    path: dir.clone(),
                    mounted: false,
                    cleanup: Some(dir),
                    native_upper: None,
                    trees: Vec::new(),
                })
            }
            _ => {
                let target = self.scratch_dir("mnt");
                fs::create_dir_all(&target)?;
                let mut guard = Mounted {
                    path: target.clone(),
                    mounted: false,
                    cleanup: Some(target.clone()),
                    native_upper: None,
                    trees: Vec::new(),
                };
                // overlayfs needs a lower layer even when the snapshot is scratch.
                let empty;
                let lowers = if lowers.is_empty() {
                    empty = target.with_extension("lower");
                    fs::create_dir_all(&empty)?;
                    vec![empty.as_path()]
                } else {
                    lowers
                };
                mount_overlay(
                    &target,
                    &lowers,
                    upper.map(|u| (u.dir(), u.tmp.join("work"))),
                )?;
                guard.mounted = true;
                Ok(guard)
            }
        }
    }
}

/// Mount overlayfs at `target`: `lowers` bottom first, and an optional upper and work dir.
fn mount_overlay(
    target: &Path,
    lowers: &[&Path],
    upper: Option<(PathBuf, PathBuf)>,
) -> io::Result<()> {
    let fs_fd = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    // lowerdir+ takes the topmost layer first.
    for lower in lowers.iter().rev() {
        fsconfig_set_string(fs_fd.as_fd(), "lowerdir+", *lower).map_err(|e| {
            io::Error::other(format!(
                "overlayfs refused lower layer {}: {e}",
                lower.display()
            ))
        })?;
    }
    if let Some((upper, work)) = &upper {
        fsconfig_set_string(fs_fd.as_fd(), "upperdir", upper)?;
        fsconfig_set_string(fs_fd.as_fd(), "workdir", work)?;
    }
    fsconfig_create(fs_fd.as_fd())?;
    let attrs = if upper.is_some() {
        MountAttrFlags::empty()
    } else {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    };
    let mnt = fsmount(fs_fd.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
    move_mount(
        mnt.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// Remove a scratch tree, unmounting anything a killed process left mounted in it.
fn remove_tmp(dir: &Path) -> io::Result<()> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = unmount(e.path(), UnmountFlags::DETACH);
        }
    }
    let _ = unmount(dir, UnmountFlags::DETACH);
    fs::remove_dir_all(dir).or_else(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(e)
        }
    })
}

impl LayerBuilder {
    /// Where its files go.
    pub fn dir(&self) -> PathBuf {
        self.tmp.join("diff")
    }

    /// Make it a committed layer named `id`. If a layer with that id exists already (another
    /// build made the same result), that one is kept and ours discarded.
    pub fn commit(mut self, id: &str, meta: &LayerMeta) -> io::Result<Layer> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid layer id {id:?}"),
            ));
        }
        let _ = fs::remove_dir_all(self.tmp.join("work"));
        fs::write(
            self.tmp.join("meta.json"),
            serde_json::to_vec(meta).map_err(io::Error::other)?,
        )?;
        let dest = self.layers.join(id);
        self.done = true;
        match fs::rename(&self.tmp, &dest) {
            Ok(()) => {}
            Err(e) if dest.join("diff").is_dir() => {
                tracing::debug!("layer {id} exists already ({e}); keeping it");
                remove_tmp(&self.tmp)?;
            }
            Err(e) => {
                self.done = false;
                return Err(e);
            }
        }
        Ok(Layer {
            id: id.to_string(),
            dir: dest.join("diff"),
        })
    }
}

impl Drop for LayerBuilder {
    fn drop(&mut self) {
        if !self.done {
            let _ = remove_tmp(&self.tmp);
        }
    }
}

impl Mounted {
    /// Where the snapshot's files are.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Done writing: unmount, and with the native snapshotter write what changed into the
    /// upper layer. Dropping without finishing discards the changes of a native mount.
    pub fn finish(mut self) -> io::Result<()> {
        if let Some((base, upper)) = self.native_upper.take() {
            diff_trees(&base, &self.path, &upper)?;
        }
        Ok(())
    }
}

/// Write into `upper`, in overlay format, how `work` differs from `base`.
pub fn diff_trees(base: &Path, work: &Path, upper: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let same_meta = |a: &fs::Metadata, b: &fs::Metadata| {
        a.mode() == b.mode()
            && a.uid() == b.uid()
            && a.gid() == b.gid()
            && a.mtime() == b.mtime()
            && a.mtime_nsec() == b.mtime_nsec()
    };
    let mut names: Vec<_> = fs::read_dir(work)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in &names {
        let (w, b, u) = (work.join(name), base.join(name), upper.join(name));
        let wm = w.symlink_metadata()?;
        let bm = b.symlink_metadata().ok();
        if wm.is_dir() {
            match &bm {
                Some(bm) if bm.is_dir() => {
                    fs::create_dir(&u)?;
                    diff_trees(&b, &w, &u)?;
                    if same_meta(bm, &wm) && fs::read_dir(&u)?.next().is_none() {
                        fs::remove_dir(&u)?;
                    } else {
                        copy_dir_meta(&w, &u)?;
                    }
                }
                _ => {
                    // New, or replacing a non-directory: everything in it is new.
                    fs::create_dir(&u)?;
                    apply_layer(&w, &u, Apply::Materialize)?;
                    copy_dir_meta(&w, &u)?;
                }
            }
            continue;
        }
        let changed = match &bm {
            None => true,
            Some(bm) => {
                bm.file_type() != wm.file_type()
                    || !same_meta(bm, &wm)
                    || bm.size() != wm.size()
                    || (wm.file_type().is_symlink() && fs::read_link(&b)? != fs::read_link(&w)?)
                    // Same metadata can hide new content (a copy with a fixed timestamp).
                    || (wm.is_file() && !same_bytes(&b, &w)?)
            }
        };
        if changed {
            crate::fileops::copy_exact(&w, &u)?;
        }
    }
    for e in fs::read_dir(base)? {
        let name = e?.file_name();
        if !names.contains(&name) {
            make_whiteout(&upper.join(&name))?;
        }
    }
    Ok(())
}

/// Whether two regular files hold the same bytes.
fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(fb.read(&mut bb)? == 0);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

fn copy_dir_meta(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = from.symlink_metadata()?;
    fs::set_permissions(to, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    rustix::fs::chown(
        to,
        Some(rustix::process::Uid::from_raw(md.uid())),
        Some(rustix::process::Gid::from_raw(md.gid())),
    )?;
    crate::fileops::set_mtime(to, md.mtime() * 1_000_000_000 + md.mtime_nsec())
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted
            && let Err(e) = unmount(&self.path, UnmountFlags::DETACH)
        {
            tracing::warn!("unmounting {}: {e}", self.path.display());
        }
        if let Some(dir) = &self.cleanup {
            let _ = fs::remove_dir(dir);
            let _ = fs::remove_dir(dir.with_extension("lower"));
        }
        for tree in &self.trees {
            let _ = fs::remove_dir_all(tree);
        }
    }
}

/// How [`apply_layer`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Apply {
    /// Into another layer directory: whiteouts and opaque markers are kept (they still
    /// hide what lies below), files are hard links (layers are never written in place).
    Squash,
    /// Into a plain directory tree: deletions are carried out, files are copied.
    Materialize,
}

/// Apply a layer on top of the files in `target`.
pub fn apply_layer(layer: &Path, target: &Path, how: Apply) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut names: Vec<_> = fs::read_dir(layer)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let src = layer.join(&name);
        let dst = target.join(&name);
        let md = src.symlink_metadata()?;
        let existing = dst.symlink_metadata().ok();
        if is_whiteout(&md) {
            remove_any(&dst, existing.as_ref())?;
            if how == Apply::Squash {
                make_whiteout(&dst)?;
            }
            continue;
        }
        if md.is_dir() {
            let opaque = is_opaque(&src);
            match &existing {
                Some(e) if e.is_dir() && !opaque => {}
                _ => {
                    remove_any(&dst, existing.as_ref())?;
                    fs::create_dir(&dst)?;
                }
            }
            if opaque && how == Apply::Squash {
                set_opaque(&dst)?;
            }
            apply_layer(&src, &dst, how)?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(md.mode() & 0o7777))?;
            rustix::fs::chown(
                &dst,
                Some(rustix::process::Uid::from_raw(md.uid())),
                Some(rustix::process::Gid::from_raw(md.gid())),
            )?;
            crate::fileops::set_mtime(&dst, md.mtime() * 1_000_000_000 + md.mtime_nsec())?;
            continue;
        }
        remove_any(&dst, existing.as_ref())?;
        match how {
            Apply::Squash => fs::hard_link(&src, &dst)?,
            Apply::Materialize => {
                let copy = crate::fileops::copy_exact(&src, &dst);
                copy?
            }
        }
    }
    Ok(())
}

fn remove_any(path: &Path, md: Option<&fs::Metadata>) -> io::Result<()> {
    match md {
        Some(m) if m.is_dir() => fs::remove_dir_all(path),
        Some(_) => fs::remove_file(path),
        None => Ok(()),
    }
}

/// The overlayfs whiteout: a character device 0/0 stands for a deleted path.
pub fn is_whiteout(md: &fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Drop from the upper directory of a step what the step did not change, as BuildKit's
/// overlay differ decides: an entry whose kind, mode, owner, device, xattrs and (but for
/// directories) size, mtime, content and link target are those of the same path in
/// `lower` (the layers below), and a directory with nothing changed below it. What the runtime did
/// (copying up `/etc` to make a mount point, a file opened for writing and left alone)
/// then never reaches the layer. Deletions and opaque directories stay. A subtree that
/// cannot be compared (a path too long, say) is kept as it is.
pub fn trim_unchanged(upper: &Path, lower: &Path) {
    if let Err(e) = trim_dir(upper, lower) {
        tracing::debug!("not trimming {}: {e}", upper.display());
    }
}

/// Trim the directory `upper` against `lower`; whether nothing is left in it.
fn trim_dir(upper: &Path, lower: &Path) -> io::Result<bool> {
    let mut empty = true;
    for entry in fs::read_dir(upper)? {
        let name = entry?.file_name();
        let (u, l) = (upper.join(&name), lower.join(&name));
        let umd = u.symlink_metadata()?;
        let lmd = match l.symlink_metadata() {
            Ok(md) if !is_whiteout(&md) => md,
            _ => {
                empty = false;
                continue;
            }
        };
        // Whatever cannot be compared is kept: an error here keeps this entry only.
        let unchanged = (|| -> io::Result<bool> {
            if is_whiteout(&umd) {
                return Ok(false);
            }
            if !umd.is_dir() {
                return same_entry(&umd, &lmd, &u, &l);
            }
            // `l` is a real directory (checked before anything reads it, so a symlink of
            // the lower layers is never followed).
            if !lmd.is_dir() {
                return Ok(false);
            }
            // Opaque over an empty directory hides nothing: the mark is dropped.
            if is_opaque(&u) {
                if fs::read_dir(&l)?.next().is_some() {
                    return Ok(false);
                }
                rustix::fs::lremovexattr(&u, "trusted.overlay.opaque")?;
            }
            Ok(trim_dir(&u, &l)? && same_entry(&umd, &lmd, &u, &l)?)
        })()
        .unwrap_or(false);
        if unchanged {
            if umd.is_dir() {
                fs::remove_dir(&u)?;
            } else {
                fs::remove_file(&u)?;
            }
        } else {
            empty = false;
        }
    }
    Ok(empty)
}

fn same_entry(a: &fs::Metadata, b: &fs::Metadata, ap: &Path, bp: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    if (a.mode(), a.uid(), a.gid(), a.rdev()) != (b.mode(), b.uid(), b.gid(), b.rdev()) {
        return Ok(false);
    }
    if !a.is_dir() && (a.len(), a.mtime(), a.mtime_nsec()) != (b.len(), b.mtime(), b.mtime_nsec()) {
        return Ok(false);
    }
    if a.file_type().is_symlink() && fs::read_link(ap)? != fs::read_link(bp)? {
        return Ok(false);
    }
    // A file linked again in the step (`ln`) is the target of a link that stays; a file
    // rewritten with the same size and time (a backup `cp -p` makes) is changed.
    if a.is_file() && (a.nlink() > 1 || !same_bytes(ap, bp)?) {
        return Ok(false);
    }
    Ok(xattrs(ap)? == xattrs(bp)?)
}

/// The xattrs of a path, sorted by name, without overlayfs' own.
pub fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
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
        if name.starts_with(b"trusted.overlay.") {
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

/// Whether a directory of a layer hides everything below it (`trusted.overlay.opaque=y`).
pub fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(
        rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut buf),
        Ok(1) if buf[0] == b'y'
    )
}

/// Mark a directory of a layer opaque.
pub fn set_opaque(dir: &Path) -> io::Result<()> {
    rustix::fs::lsetxattr(
        dir,
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )?;
    Ok(())
}

/// Record the deletion of `path` in a layer.
pub fn make_whiteout(path: &Path) -> io::Result<()> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )?;
    Ok(())
}
