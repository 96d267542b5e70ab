//! `local://` sources: a directory of the client (the build context), filtered by the
//! source's `followpaths`, `includepattern` and `excludepatterns`.
//!
//! A scan stats every file and hashes only those whose size, mtime or inode changed since
//! the last scan (the hashes are kept per source), so an unchanged context costs a walk of
//! its metadata. The scan gives the checksums cache keys are made of: the whole source, or
//! only the paths a copy selects. The files become a layer only when a step needs them, and
//! unchanged files are hard links into the previous layer of the same source.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::pattern::{Patterns, has_wildcards, match_parts, may_match_below};
use crate::rootpath::clean;
use crate::snapshot::{Layer, LayerMeta, Snapshotter};

/// A local source as an LLB op names it.
#[derive(Clone, Debug)]
pub struct LocalSource {
    /// The client's directory.
    pub dir: PathBuf,
    /// `local.followpaths`: only these paths (and their parents) are sent.
    pub follow: Vec<String>,
    /// `local.includepattern`.
    pub include: Vec<String>,
    /// `local.excludepatterns`.
    pub exclude: Vec<String>,
}

/// What kind of file an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
}

/// One path of a scanned source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its kind.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, Unix nanoseconds.
    pub mtime: i64,
    /// Inode, to notice a file replaced by another of the same size and time.
    pub ino: u64,
    /// Change time, Unix nanoseconds: a rewrite that keeps size and mtime (`touch -r`,
    /// `cp -p`) still changes it, and user space cannot set it back.
    #[serde(default)]
    pub ctime: i64,
    /// Links to the inode (a file with more than one is a hard link of another entry
    /// with the same inode).
    #[serde(default)]
    pub nlink: u64,
    /// sha256 of the content (files), the link target (symlinks), empty for directories.
    pub hash: String,
}

/// A scanned source: its entries by relative path, and the checksum of all of them.
#[derive(Clone, Debug, Default)]
pub struct LocalTree {
    /// The client's directory.
    pub dir: PathBuf,
    /// Entries by `/`-separated relative path.
    pub entries: BTreeMap<String, Entry>,
    /// `sha256:` over every entry.
    pub digest: String,
}

/// What the last scan of a source knew, kept between builds.
#[derive(Default, Serialize, Deserialize)]
struct ScanCache {
    entries: BTreeMap<String, Entry>,
    /// The version of the directory these entries were scanned at (see
    /// [`crate::LocalSync::version`]).
    version: Option<String>,
    /// The last layer made from this source, and the entries it holds.
    layer: Option<(String, BTreeMap<String, Entry>)>,
}

/// Scans and materializes local sources; keeps its per-source caches under `dir`.
#[derive(Debug)]
pub struct Locals {
    dir: PathBuf,
}

impl Locals {
    /// Caches under `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        // Caches of the JSON format of earlier versions: a scan makes them again.
        for e in fs::read_dir(&dir)?.flatten() {
            if e.path().extension().is_some_and(|x| x == "json") {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Locals { dir })
    }

    fn cache_path(&self, source: &LocalSource) -> PathBuf {
        let key = Sha256::digest(
            format!(
                "{}\0{:?}\0{:?}\0{:?}",
                source.dir.display(),
                source.follow,
                source.include,
                source.exclude
            )
            .as_bytes(),
        );
        self.dir.join(format!("{}.scan", hex::encode(&key[..16])))
    }

    /// The last scan of `source`, its file marked as used now (see [`Locals::prune`]).
    fn load(&self, source: &LocalSource) -> ScanCache {
        let read = || -> io::Result<Vec<u8>> {
            let mut file = File::open(self.cache_path(source))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            // Where times cannot be set the scan is still good; it only ages out sooner.
            let _ = file.set_modified(std::time::SystemTime::now());
            Ok(bytes)
        };
        read()
            .ok()
            .and_then(|b| postcard::from_bytes(&b).ok())
            .unwrap_or_default()
    }

    /// Remove the scans no build used for `max_age`, and writes of one that a crash left:
    /// each source directory has its own (a CI checkout in a new directory every build makes
    /// a new one each time), so without this they would pile up for ever.
    pub fn prune(&self, max_age: std::time::Duration) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let path = entry.path();
            let ours = path
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| x == "scan" || x.starts_with("tmp"));
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= max_age);
            if ours && old && fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn save(&self, source: &LocalSource, cache: &ScanCache) -> io::Result<()> {
        let path = self.cache_path(source);
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp = path.with_extension(format!(
            "tmp{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        fs::write(&tmp, postcard::to_stdvec(cache).map_err(io::Error::other)?)?;
        fs::rename(tmp, path)
    }

    /// Walk the source, hashing what changed since the last scan.
    pub fn scan(&self, source: &LocalSource) -> io::Result<LocalTree> {
        self.scan_at(source, None)
    }

    /// [`Locals::scan`] of a directory at `version`: when the last scan was at the same
    /// version, its entries are the answer and nothing is walked.
    pub fn scan_at(&self, source: &LocalSource, version: Option<&str>) -> io::Result<LocalTree> {
        let dir = source
            .dir
            .canonicalize()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", source.dir.display())))?;
        let mut cache = self.load(source);
        if version.is_some() && cache.version.as_deref() == version {
            let digest = tree_digest(cache.entries.iter());
            return Ok(LocalTree {
                dir,
                entries: cache.entries,
                digest,
            });
        }
        let filter = Filter::new(&dir, &source.follow, &source.include, &source.exclude);
        let mut entries = BTreeMap::new();
        walk(&dir, &filter, &cache.entries, true, &mut entries)?;
        let digest = tree_digest(entries.iter());
        // An unchanged source leaves its cache as it is (tens of thousands of entries).
        if cache.entries != entries || cache.version.as_deref() != version {
            cache.entries = entries.clone();
            cache.version = version.map(str::to_string);
            self.save(source, &cache)?;
        }
        Ok(LocalTree {
            dir,
            entries,
            digest,
        })
    }

    /// The layer holding the files of a scanned source (made now if no build made it yet).
    pub fn materialize(
        &self,
        source: &LocalSource,
        tree: &LocalTree,
        snapshots: &Snapshotter,
    ) -> io::Result<Layer> {
        let id = format!("local-{}", &tree.digest["sha256:".len()..]);
        if let Some(layer) = snapshots.layer(&id) {
            return Ok(layer);
        }
        let mut cache = self.load(source);
        let (previous, prev_entries) = match &cache.layer {
            Some((id, entries)) => (snapshots.layer(id), entries.clone()),
            None => (None, BTreeMap::new()),
        };
        let builder = snapshots.new_layer()?;
        let out = builder.dir();
        // Files are read through the source's descriptor, never through a symlink: the
        // directory may have changed since the scan (another build syncing a mirror).
        let source_dir = crate::beneath::open_root(&tree.dir)?;
        // Hard links of the context stay hard links: inode → the first copy.
        let mut links: std::collections::HashMap<u64, (PathBuf, String)> = Default::default();
        // Files that are links to an inode already made: its owner, mode and time are set.
        let mut linked = std::collections::HashSet::new();
        for (rel, e) in &tree.entries {
            let dest = out.join(rel);
            match e.kind {
                Kind::Dir => fs::create_dir(&dest)?,
                Kind::Symlink => symlink(&e.hash, &dest)?,
                // The same inode and the same content: a hard link (a context spanning
                // mounts may repeat inode numbers, never with another file's content here).
                Kind::File
                    if e.nlink > 1
                        && links.get(&e.ino).is_some_and(|(_, hash)| *hash == e.hash) =>
                {
                    fs::hard_link(&links[&e.ino].0, &dest)?;
                    linked.insert(rel);
                    continue;
                }
                Kind::File => {
                    if e.nlink > 1 {
                        links.insert(e.ino, (dest.clone(), e.hash.clone()));
                    }
                    let reused = previous.as_ref().is_some_and(|prev| {
                        prev_entries.get(rel) == Some(e)
                            && fs::hard_link(prev.dir.join(rel), &dest).is_ok()
                    });
                    if reused {
                        // The previous layer made this inode from the same entry.
                        linked.insert(rel);
                        continue;
                    }
                    let input = crate::beneath::open_file(source_dir.as_fd(), Path::new(rel))?;
                    copy_checked(input, &dest, &e.hash, rel)?;
                }
            }
            // Files of the context belong to root in the build, as with BuildKit; owner
            // before mode, since chown clears the setuid and setgid bits.
            rustix::fs::chownat(
                rustix::fs::CWD,
                &dest,
                Some(rustix::process::Uid::ROOT),
                Some(rustix::process::Gid::ROOT),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )?;
            if e.kind != Kind::Symlink {
                fs::set_permissions(&dest, fs::Permissions::from_mode(e.mode))?;
            }
        }
        // Times last, deepest first, so creating children does not change a parent's.
        for (rel, e) in tree.entries.iter().rev() {
            if !linked.contains(rel) {
                crate::fileops::set_mtime(&out.join(rel), e.mtime)?;
            }
        }
        let layer = builder.commit(&id, &LayerMeta::now())?;
        cache.layer = Some((id, tree.entries.clone()));
        self.save(source, &cache)?;
        Ok(layer)
    }
}

/// The paths of a source its filters select, with their metadata but no hashes (symlinks
/// still carry their target): what a client lists for the daemon to compare with its copy.
pub fn list(source: &LocalSource) -> io::Result<BTreeMap<String, Entry>> {
    let filter = Filter::new(
        &source.dir,
        &source.follow,
        &source.include,
        &source.exclude,
    );
    let mut entries = BTreeMap::new();
    walk(&source.dir, &filter, &BTreeMap::new(), false, &mut entries)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", source.dir.display())))?;
    Ok(entries)
}

/// What a local source's filters select, with fsutil's semantics: the `followpaths`, with
/// the targets of the symlinks among them, join the include patterns; these are patterns
/// (`*`, `?`, `[...]`, `**`) that select what they match and everything below it, and a
/// directory is walked when something below it may match; exclude patterns are Docker's.
pub struct Filter {
    include: Vec<Vec<String>>,
    exclude: Patterns,
}

impl Filter {
    /// The filters of a source's `local.followpaths`, `local.includepattern` and
    /// `local.excludepatterns`, for its directory `dir`.
    pub fn new(dir: &Path, follow: &[String], include: &[String], exclude: &[String]) -> Filter {
        let mut selected: Vec<String> = include.iter().map(|p| clean(p)).collect();
        for path in follow {
            let path = clean(path);
            // A symlink named (or on the way) brings its target, as a copy follows it.
            if !has_wildcards(&path)
                && let Ok(real) = crate::rootpath::resolve(dir, &path, true)
                && let Ok(rel) = real.strip_prefix(dir)
            {
                selected.push(rel.to_string_lossy().into_owned());
            }
            selected.push(path);
        }
        selected.sort();
        selected.dedup();
        let include = if include.is_empty() && follow.is_empty() {
            Vec::new()
        } else {
            // An empty pattern is the whole directory.
            selected
                .iter()
                .map(|p| {
                    p.split('/')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .collect()
        };
        Filter {
            include,
            exclude: Patterns::new(exclude),
        }
    }

    /// Whether `rel` is selected itself, and whether a walk should look inside it.
    pub fn visit(&self, rel: &str, is_dir: bool) -> (bool, bool) {
        let parts: Vec<&str> = rel.split('/').collect();
        if !self.include.is_empty() {
            // Selected by a pattern (a parent matching selects its children), or a
            // directory something below which may be.
            let hit = self
                .include
                .iter()
                .any(|p| p.is_empty() || (1..=parts.len()).any(|n| match_parts(p, &parts[..n])));
            if !hit {
                let below = is_dir && self.include.iter().any(|p| may_match_below(p, &parts));
                return (false, below);
            }
        }
        if self.exclude.matches(rel) {
            return (false, is_dir && self.exclude.may_include_below(rel));
        }
        (true, is_dir)
    }
}

/// Scans a source: what its filters select, with metadata and (when `hash`) content hashes.
/// It walks through directory descriptors and never follows a symlink, so a directory
/// swapped for a link while it is scanned cannot lead it outside the source.
struct Scan<'a> {
    filter: &'a Filter,
    previous: &'a BTreeMap<String, Entry>,
    hash: bool,
    out: &'a mut BTreeMap<String, Entry>,
    /// The directories walked into: the entry to keep, whether the filter keeps it for
    /// itself, and whether something below it was kept (then it is kept too).
    open: Vec<(String, Entry, bool, bool)>,
}

impl Scan<'_> {
    fn keep(&mut self, rel: String, e: Entry) {
        if let Some(parent) = self.open.last_mut() {
            parent.3 = true;
        }
        self.out.insert(rel, e);
    }
}

impl crate::beneath::Visit for Scan<'_> {
    fn enter(&mut self, found: &crate::beneath::Entry<'_>) -> io::Result<bool> {
        use rustix::fs::FileType;
        let child = String::from_utf8_lossy(found.rel).into_owned();
        let kind = match found.file_type() {
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::RegularFile => Kind::File,
            // Sockets, devices and fifos of a context are not sent (as Docker).
            _ => return Ok(false),
        };
        let (keep, descend) = self.filter.visit(&child, kind == Kind::Dir);
        if !(keep || descend && kind == Kind::Dir) {
            return Ok(false);
        }
        let st = found.stat;
        let mut e = Entry {
            kind,
            mode: st.st_mode & 0o7777,
            size: if kind == Kind::File {
                st.st_size as u64
            } else {
                0
            },
            mtime: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64,
            ino: st.st_ino,
            ctime: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec as i64,
            nlink: st.st_nlink,
            hash: String::new(),
        };
        e.hash = match kind {
            Kind::Dir => String::new(),
            Kind::Symlink => String::from_utf8_lossy(&found.read_link()?).into_owned(),
            Kind::File if !self.hash => String::new(),
            Kind::File => match self.previous.get(&child) {
                Some(p)
                    if p.size == e.size
                        && p.mtime == e.mtime
                        && p.ino == e.ino
                        && p.ctime == e.ctime =>
                {
                    p.hash.clone()
                }
                _ => hash_file(found.open()?)?,
            },
        };
        if kind == Kind::Dir && descend {
            self.open.push((child, e, keep, false));
            return Ok(true);
        }
        self.keep(child, e);
        Ok(false)
    }

    fn leave(&mut self, _rel: &[u8]) -> io::Result<()> {
        if let Some((rel, e, keep, kept_below)) = self.open.pop()
            && (keep || kept_below)
        {
            self.keep(rel, e);
        }
        Ok(())
    }
}

fn walk(
    root: &Path,
    filter: &Filter,
    previous: &BTreeMap<String, Entry>,
    hash: bool,
    out: &mut BTreeMap<String, Entry>,
) -> io::Result<()> {
    let mut scan = Scan {
        filter,
        previous,
        hash,
        out,
        open: Vec::new(),
    };
    crate::beneath::walk(root, &mut scan)
}

fn hash_file(mut input: File) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Copy a file, checking it still has the content the scan hashed.
fn copy_checked(mut input: File, dest: &Path, hash: &str, rel: &str) -> io::Result<()> {
    let mut output = File::create(dest)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        output.write_all(&buf[..n])?;
    }
    if hex::encode(h.finalize()) != hash {
        return Err(io::Error::other(format!(
            "{rel} changed while the build was reading it; run the build again"
        )));
    }
    Ok(())
}

fn entry_record(h: &mut Sha256, rel: &str, e: &Entry) {
    // Times and inodes are not content: touching a file does not invalidate the cache.
    h.update(format!("{rel}\0{:?}\0{:o}\0{}\n", e.kind, e.mode, e.hash).as_bytes());
}

fn tree_digest<'a>(entries: impl Iterator<Item = (&'a String, &'a Entry)>) -> String {
    let mut h = Sha256::new();
    for (rel, e) in entries {
        entry_record(&mut h, rel, e);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

impl LocalTree {
    /// The checksum of the paths a step reads: each selector is a path or a wildcard
    /// pattern, and selects what it names and everything below. `/` selects the whole
    /// source.
    pub fn checksum(&self, selectors: &[String]) -> String {
        let sel: Vec<String> = selectors.iter().map(|s| clean(s)).collect();
        if sel.iter().any(|s| s.is_empty()) {
            return self.digest.clone();
        }
        // A copy follows symlinks to what they name, anywhere in the source: when a
        // selected path or one of its parents is a link, the whole source is the key.
        let through_link = sel.iter().any(|s| {
            let parts: Vec<&str> = s.split('/').collect();
            (1..=parts.len()).any(|n| {
                let prefix = parts[..n].join("/");
                self.entries.iter().any(|(rel, e)| {
                    e.kind == Kind::Symlink && {
                        let rp: Vec<&str> = rel.split('/').collect();
                        rp.len() == n && match_parts(&parts[..n], &rp)
                    }
                }) || self
                    .entries
                    .get(&prefix)
                    .is_some_and(|e| e.kind == Kind::Symlink)
            })
        });
        if through_link {
            return self.digest.clone();
        }
        let mut h = Sha256::new();
        for s in &sel {
            h.update(format!("selector {s}\n").as_bytes());
        }
        for (rel, e) in &self.entries {
            let parts: Vec<&str> = rel.split('/').collect();
            let selected = sel.iter().any(|s| {
                let sp: Vec<&str> = s.split('/').collect();
                (1..=parts.len()).any(|n| match_parts(&sp, &parts[..n]))
            });
            if selected {
                entry_record(&mut h, rel, e);
            }
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dir: &Path) -> LocalSource {
        LocalSource {
            dir: dir.to_path_buf(),
            follow: Vec::new(),
            include: Vec::new(),
            exclude: vec!["*.tmp".into(), "node_modules".into()],
        }
    }

    #[test]
    fn checksums_follow_content_of_selected_paths() {
        let ctx = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        fs::create_dir_all(ctx.path().join("src")).unwrap();
        fs::create_dir_all(ctx.path().join("node_modules/x")).unwrap();
        fs::write(ctx.path().join("src/main.rs"), "fn main() {}").unwrap();
        fs::write(ctx.path().join("README"), "hi").unwrap();
        fs::write(ctx.path().join("a.tmp"), "x").unwrap();
        let locals = Locals::open(state.path()).unwrap();
        let src = source(ctx.path());
        let t1 = locals.scan(&src).unwrap();
        assert_eq!(
            t1.entries.keys().collect::<Vec<_>>(),
            ["README", "src", "src/main.rs"]
        );
        let sel = vec!["/src".to_string()];
        let c1 = t1.checksum(&sel);
        fs::write(ctx.path().join("README"), "changed").unwrap();
        let t2 = locals.scan(&src).unwrap();
        assert_ne!(t1.digest, t2.digest);
        assert_eq!(
            c1,
            t2.checksum(&sel),
            "an unrelated edit keeps the copy's key"
        );
        fs::write(ctx.path().join("src/main.rs"), "fn main() { }").unwrap();
        let t3 = locals.scan(&src).unwrap();
        assert_ne!(c1, t3.checksum(&sel));
        // Wildcards are anchored: `*.rs` selects nothing at the top, `src/*.rs` the file.
        assert_eq!(t2.checksum(&["*.rs".into()]), t3.checksum(&["*.rs".into()]));

        // Through a symlink, a copy reads its target: the whole source becomes the key.
        std::os::unix::fs::symlink("src/main.rs", ctx.path().join("link")).unwrap();
        let t4 = locals.scan(&src).unwrap();
        assert_eq!(t4.checksum(&["/link".into()]), t4.digest);
        // A rewrite that keeps size and mtime is still seen (ctime).
        let before = t4.entries["README"].hash.clone();
        let mtime = fs::metadata(ctx.path().join("README"))
            .unwrap()
            .modified()
            .unwrap();
        // File times tick at the kernel's coarse clock (a few ms): let one pass.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(ctx.path().join("README"), "CHANGED").unwrap();
        fs::File::options()
            .write(true)
            .open(ctx.path().join("README"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let t5 = locals.scan(&src).unwrap();
        assert_ne!(
            t5.entries["README"].hash, before,
            "{:?} {:?}",
            t4.entries["README"], t5.entries["README"]
        );
        assert_ne!(
            t3.checksum(&["src/*.rs".into()]),
            t2.checksum(&["src/*.rs".into()])
        );
    }

    #[test]
    fn a_scan_at_the_version_of_the_last_one_walks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("a"), "one").unwrap();
        let locals = Locals::open(dir.path().join("locals")).unwrap();
        let src = LocalSource {
            dir: ctx.clone(),
            follow: vec![],
            include: vec![],
            exclude: vec![],
        };
        let v1 = locals.scan_at(&src, Some("v1")).unwrap();
        // Whoever gave the version vouches for the directory: at the same version the
        // last scan is the answer, at another the directory is walked again.
        fs::write(ctx.join("a"), "two!").unwrap();
        assert_eq!(locals.scan_at(&src, Some("v1")).unwrap().digest, v1.digest);
        assert_ne!(locals.scan_at(&src, Some("v2")).unwrap().digest, v1.digest);
        assert_ne!(locals.scan_at(&src, None).unwrap().digest, v1.digest);
    }

    #[test]
    fn scans_unused_for_the_max_age_are_pruned_and_a_scan_used_again_is_kept() {
        let state = tempfile::tempdir().unwrap();
        let locals = Locals::open(state.path()).unwrap();
        let (used, unused) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for dir in [&used, &unused] {
            fs::write(dir.path().join("a"), "a").unwrap();
            locals.scan(&source(dir.path())).unwrap();
        }
        let week_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 86400);
        for dir in [&used, &unused] {
            let scan = File::open(locals.cache_path(&source(dir.path()))).unwrap();
            scan.set_modified(week_ago).unwrap();
        }
        // A build of the same directory marks its scan as used, even when nothing changed.
        locals.scan(&source(used.path())).unwrap();
        let week = std::time::Duration::from_secs(7 * 86400);
        assert_eq!(locals.prune(week).unwrap(), 1);
        assert!(locals.cache_path(&source(used.path())).exists());
        assert!(!locals.cache_path(&source(unused.path())).exists());
        assert_eq!(locals.prune(week).unwrap(), 0);
    }
}
