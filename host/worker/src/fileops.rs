//! LLB file actions (mkdir, mkfile, rm, symlink, copy) applied to a mounted snapshot.
//!
//! Every path is resolved with [`rootpath::resolve`], and nothing is ever written through
//! an existing symlink of the destination (it is replaced), so a build cannot write
//! outside its snapshot.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use buildwit_llb::pb;

use crate::pattern::{Patterns, has_wildcards, match_path};
use crate::rootpath::{self, clean};
use crate::users;

/// An error of one action, naming the path.
fn fail(action: &str, path: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{action} {path}: {e}"))
}

/// Resolve a `ChownOpt` against the destination's user database.
fn owner(root: &Path, chown: Option<&pb::ChownOpt>) -> io::Result<Option<(u32, u32)>> {
    let Some(chown) = chown else { return Ok(None) };
    let id = |opt: &Option<pb::UserOpt>, user: bool| -> io::Result<Option<u32>> {
        use pb::user_opt::User;
        match opt.as_ref().and_then(|o| o.user.as_ref()) {
            None => Ok(None),
            Some(User::ById(id)) => Ok(Some(*id)),
            Some(User::ByName(n)) if user => Ok(Some(users::user_id(root, &n.name)?.0)),
            Some(User::ByName(n)) => Ok(Some(users::group_id(root, &n.name)?)),
        }
    };
    let uid = id(&chown.user, true)?;
    let gid = match id(&chown.group, false)? {
        Some(g) => Some(g),
        // A user without group gets the user's primary group, as `--chown=user` does.
        None => match chown.user.as_ref().and_then(|o| o.user.as_ref()) {
            Some(pb::user_opt::User::ByName(n)) => users::user_id(root, &n.name)?.1,
            _ => uid,
        },
    };
    Ok(Some((uid.unwrap_or(0), gid.unwrap_or(0))))
}

fn lchown(path: &Path, ids: Option<(u32, u32)>) -> io::Result<()> {
    if let Some((uid, gid)) = ids {
        rustix::fs::chownat(
            rustix::fs::CWD,
            path,
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(gid)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    Ok(())
}

/// Remove whatever is at `path` (a directory with all it holds, never a symlink's
/// target); nothing there is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Set a path's times (Unix nanoseconds), not following a final symlink.
pub fn set_mtime(path: &Path, ns: i64) -> io::Result<()> {
    let ts = rustix::fs::Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Remove whatever is at `path` unless it is a directory (a symlink is never written through).
fn clear_non_dir(path: &Path) -> io::Result<()> {
    match path.symlink_metadata() {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create the missing directories of `dir` (already resolved inside the root).
fn mkdir_all(dir: &Path, mode: u32, ids: Option<(u32, u32)>, ts: Option<i64>) -> io::Result<()> {
    if dir.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        mkdir_all(parent, mode, ids, ts)?;
    }
    clear_non_dir(dir)?;
    fs::create_dir(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    lchown(dir, ids)?;
    if let Some(ts) = ts {
        set_mtime(dir, ts)?;
    }
    Ok(())
}

fn timestamp(ts: i64) -> Option<i64> {
    (ts >= 0).then_some(ts)
}

/// `mkdir`.
pub fn mkdir(root: &Path, a: &pb::FileActionMkDir) -> io::Result<()> {
    let path = rootpath::resolve(root, &a.path, true)?;
    let ids = owner(root, a.owner.as_ref())?;
    let mode = a.mode as u32 & 0o7777;
    if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(root);
    if !a.make_parents && !parent.is_dir() {
        return Err(fail("mkdir", &a.path, "parent directory does not exist"));
    }
    mkdir_all(&path, mode, ids, timestamp(a.timestamp)).map_err(|e| fail("mkdir", &a.path, e))
}

/// `mkfile`.
pub fn mkfile(root: &Path, a: &pb::FileActionMkFile) -> io::Result<()> {
    let path = rootpath::resolve(root, &a.path, false)?;
    let ids = owner(root, a.owner.as_ref())?;
    (|| {
        clear_non_dir(&path)?;
        fs::write(&path, &a.data)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(a.mode as u32 & 0o7777))?;
        lchown(&path, ids)?;
        if let Some(ts) = timestamp(a.timestamp) {
            set_mtime(&path, ts)?;
        }
        Ok(())
    })()
    .map_err(|e: io::Error| fail("mkfile", &a.path, e))
}

/// `rm`.
pub fn rm(root: &Path, a: &pb::FileActionRm) -> io::Result<()> {
    let targets = if a.allow_wildcard && has_wildcards(&a.path) {
        glob_in(root, &a.path)?
    } else {
        vec![rootpath::resolve(root, &a.path, false)?]
    };
    let mut removed = false;
    for t in targets {
        match t.symlink_metadata() {
            Ok(md) if md.is_dir() => fs::remove_dir_all(&t)?,
            Ok(_) => fs::remove_file(&t)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(fail("rm", &a.path, e)),
        }
        removed = true;
    }
    if !removed && !a.allow_not_found {
        return Err(fail("rm", &a.path, "not found"));
    }
    Ok(())
}

/// `symlink`.
pub fn symlink_action(root: &Path, a: &pb::FileActionSymlink) -> io::Result<()> {
    let path = rootpath::resolve(root, &a.newpath, false)?;
    let ids = owner(root, a.owner.as_ref())?;
    (|| {
        clear_non_dir(&path)?;
        symlink(&a.oldpath, &path)?;
        lchown(&path, ids)?;
        if let Some(ts) = timestamp(a.timestamp) {
            set_mtime(&path, ts)?;
        }
        Ok(())
    })()
    .map_err(|e: io::Error| fail("symlink", &a.newpath, e))
}

/// Paths under `root` matching a wildcard path, sorted.
fn glob_in(root: &Path, pattern: &str) -> io::Result<Vec<PathBuf>> {
    let pattern = clean(pattern);
    let mut found = Vec::new();
    fn walk(root: &Path, rel: &str, parts: &[&str], found: &mut Vec<PathBuf>) -> io::Result<()> {
        let Some((first, rest)) = parts.split_first() else {
            found.push(root.join(rel));
            return Ok(());
        };
        let dir = rootpath::resolve(root, rel, true)?;
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| match_path(first, n))
            .collect();
        names.sort();
        for n in names {
            let child = if rel.is_empty() {
                n
            } else {
                format!("{rel}/{n}")
            };
            walk(root, &child, rest, found)?;
        }
        Ok(())
    }
    let parts: Vec<&str> = pattern.split('/').collect();
    walk(root, "", &parts, &mut found)?;
    // Resolve the matches' parents inside the root (they may pass through symlinks).
    found
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            rootpath::resolve(root, &rel, false)
        })
        .collect()
}

/// Options of one copy, prepared once.
struct CopyCtx {
    ids: Option<(u32, u32)>,
    mode: Option<u32>,
    ts: Option<i64>,
    include: Patterns,
    exclude: Patterns,
    /// Hard links already copied: (dev, ino) of the source → copy.
    links: HashMap<(u64, u64), PathBuf>,
    /// Directories an unpacked archive implies without listing them: `--chown` leaves
    /// them as they are (root's), as BuildKit does.
    implied: std::collections::HashSet<String>,
}

/// Parse a `--chmod` value: octal, or symbolic (`u+x,go-w`) applied to `mode`.
fn apply_mode_str(spec: &str, mode: u32, is_dir: bool) -> io::Result<u32> {
    if let Ok(m) = u32::from_str_radix(spec, 8) {
        return Ok(m);
    }
    let mut m = mode;
    for clause in spec.split(',') {
        let op_at = clause
            .find(['+', '-', '='])
            .ok_or_else(|| io::Error::other(format!("invalid chmod {spec:?}")))?;
        let (who, rest) = clause.split_at(op_at);
        let who = if who.is_empty() { "a" } else { who };
        let mut mask = 0;
        for c in who.chars() {
            mask |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => return Err(io::Error::other(format!("invalid chmod {spec:?}"))),
            };
        }
        let (op, perms) = rest.split_at(1);
        let mut bits = 0;
        for c in perms.chars() {
            bits |= match c {
                'r' => 0o444,
                'w' => 0o222,
                'x' => 0o111,
                'X' if is_dir || mode & 0o111 != 0 => 0o111,
                'X' => 0,
                's' => 0o6000,
                't' => 0o1000,
                _ => return Err(io::Error::other(format!("invalid chmod {spec:?}"))),
            };
        }
        bits &= mask;
        m = match op {
            "+" => m | bits,
            "-" => m & !bits,
            _ => (m & !mask) | bits,
        };
    }
    Ok(m)
}

/// Copy one entry (a file, symlink or device node, not a directory) exactly: content,
/// mode, owner and time.
pub fn copy_exact(src: &Path, dst: &Path) -> io::Result<()> {
    let mut ctx = CopyCtx {
        ids: None,
        mode: None,
        ts: None,
        include: Patterns::default(),
        exclude: Patterns::default(),
        links: HashMap::new(),
        implied: Default::default(),
    };
    copy_tree(src, dst, "", &mut ctx, None, false)
}

/// `copy` from `src_root` into `root`; an archive `ADD` unpacks is first unpacked in a new
/// private directory under `scratch` (the worker's own, never a shared one like `/tmp`).
pub fn copy(
    root: &Path,
    src_root: &Path,
    a: &pb::FileActionCopy,
    scratch: &Path,
) -> io::Result<()> {
    let ids = owner(root, a.owner.as_ref())?;
    let mut ctx = CopyCtx {
        ids,
        mode: (a.mode >= 0).then_some(a.mode as u32),
        ts: timestamp(a.timestamp),
        include: Patterns::new(&a.include_patterns),
        exclude: Patterns::new(&a.exclude_patterns),
        links: HashMap::new(),
        implied: Default::default(),
    };
    let sources = if a.allow_wildcard && has_wildcards(&a.src) {
        let found = glob_in(src_root, &a.src)?;
        if found.is_empty() && !a.allow_empty_wildcard {
            return Err(fail("copy", &a.src, "no source files were specified"));
        }
        found
    } else {
        let p = rootpath::resolve(src_root, &a.src, a.follow_symlink)?;
        if p.symlink_metadata().is_err() {
            return Err(fail("copy", &a.src, "not found"));
        }
        vec![p]
    };
    if a.attempt_unpack_docker_compatibility
        && let [one] = sources.as_slice()
        && let Some(compression) = crate::unpack::archive_compression(one)?
    {
        return add_archive(root, one, &a.dest, compression, scratch, &mut ctx)
            .map_err(|e| fail("copy", &a.src, e));
    }
    // Paths that must exist in the source (`COPY --parents` with patterns), from its root.
    for required in &a.required_paths {
        let p = rootpath::resolve(src_root, required, false)?;
        if p.symlink_metadata().is_err() {
            return Err(fail("copy", required, "not found"));
        }
    }
    let mode_str = (!a.mode_str.is_empty()).then_some(a.mode_str.as_str());
    // Directories the copy creates take an octal --chmod, as in BuildKit (not a symbolic
    // one: those are 0755).
    let created_mode = match mode_str {
        Some(_) => 0o755,
        None => ctx.mode.unwrap_or(0o755),
    };
    let many = sources.len() > 1;
    let dest_is_dir_name = a.dest.ends_with('/') || a.dest.ends_with("/.") || many;
    let dest = rootpath::resolve(root, &a.dest, true)?;
    for src in sources {
        let md = src.symlink_metadata()?;
        let into_dir = dest_is_dir_name || dest.is_dir();
        // Named as the source was written: a followed symlink keeps its own name.
        let name = if many || (a.allow_wildcard && has_wildcards(&a.src)) {
            src.file_name().unwrap_or_default().to_os_string()
        } else {
            Path::new(&clean(&a.src))
                .file_name()
                .unwrap_or_default()
                .to_os_string()
        };
        let target = if md.is_dir() && a.dir_copy_contents {
            dest.clone()
        } else if into_dir {
            dest.join(name)
        } else {
            dest.clone()
        };
        if let Some(parent) = target.parent()
            && !parent.is_dir()
        {
            if !a.create_dest_path && !into_dir {
                return Err(fail(
                    "copy",
                    &a.dest,
                    "destination directory does not exist",
                ));
            }
            mkdir_all(parent, created_mode, ctx.ids, None).map_err(|e| fail("copy", &a.dest, e))?;
        }
        if md.is_dir() && a.dir_copy_contents {
            // The directory's contents go into `dest`, which is not a copy of it: made like
            // the parents when missing, left as it is otherwise (as BuildKit does).
            if !target.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                clear_non_dir(&target)?;
                mkdir_all(&target, created_mode, ctx.ids, None)
                    .map_err(|e| fail("copy", &a.dest, e))?;
            }
            for name in sorted_names(&src)? {
                let rel = name.to_string_lossy().into_owned();
                copy_tree(
                    &src.join(&name),
                    &target.join(&name),
                    &rel,
                    &mut ctx,
                    mode_str,
                    a.always_replace_existing_dest_paths,
                )
                .map_err(|e| fail("copy", &a.src, e))?;
            }
            continue;
        }
        copy_tree(
            &src,
            &target,
            "",
            &mut ctx,
            mode_str,
            a.always_replace_existing_dest_paths,
        )
        .map_err(|e| fail("copy", &a.src, e))?;
    }
    Ok(())
}

/// `ADD archive dest`: the archive's files are extracted into the directory `dest`.
fn add_archive(
    root: &Path,
    archive: &Path,
    dest: &str,
    compression: crate::unpack::Compression,
    scratch: &Path,
    ctx: &mut CopyCtx,
) -> io::Result<()> {
    // mkdtemp: a name no one can guess or plant beforehand, mode 0700.
    let unpacked = tempfile::Builder::new()
        .prefix("add-")
        .tempdir_in(scratch)?;
    let scratch = unpacked.path();
    let result = (|| {
        // The same confined unpacking as image layers: nothing lands outside `scratch`.
        let implied = crate::unpack::unpack_archive(File::open(archive)?, compression, scratch)?;
        ctx.implied = implied
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let target = rootpath::resolve(root, dest, true)?;
        mkdir_all(&target, 0o755, ctx.ids, None)?;
        let mut names: Vec<_> = fs::read_dir(scratch)?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for n in names {
            let rel = n.to_string_lossy().into_owned();
            copy_tree(&scratch.join(&n), &target.join(&n), &rel, ctx, None, false)?;
        }
        Ok(())
    })();
    drop(unpacked);
    result
}

/// The names in a directory, sorted.
fn sorted_names(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    Ok(names)
}

/// Copy `src` to `dst`; `rel` is the path below the copy's source, for include/exclude.
fn copy_tree(
    src: &Path,
    dst: &Path,
    rel: &str,
    ctx: &mut CopyCtx,
    mode_str: Option<&str>,
    replace: bool,
) -> io::Result<()> {
    let md = src.symlink_metadata()?;
    if !rel.is_empty() {
        if ctx.exclude.matches(rel) && !(md.is_dir() && ctx.exclude.may_include_below(rel)) {
            return Ok(());
        }
        if !ctx.include.is_empty() && !md.is_dir() && !ctx.include.matches(rel) {
            return Ok(());
        }
    }
    let perm = md.permissions().mode() & 0o7777;
    let mode = match (mode_str, ctx.mode) {
        (Some(s), _) => apply_mode_str(s, perm, md.is_dir())?,
        (None, Some(m)) => m,
        (None, None) => perm,
    };
    let ids = match ctx.ids {
        Some(ids) if !ctx.implied.contains(rel) => Some(ids),
        _ => Some((md.uid(), md.gid())),
    };
    if md.is_dir() {
        if replace || !dst.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            if replace && dst.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                fs::remove_dir_all(dst)?;
            }
            clear_non_dir(dst)?;
            fs::create_dir(dst)?;
        }
        for n in sorted_names(src)? {
            let child = if rel.is_empty() {
                n.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", n.to_string_lossy())
            };
            copy_tree(&src.join(&n), &dst.join(&n), &child, ctx, mode_str, replace)?;
        }
        // With include patterns, a directory nothing was copied into is not created.
        if !ctx.include.is_empty()
            && !rel.is_empty()
            && fs::read_dir(dst)?.next().is_none()
            && !ctx.include.matches(rel)
        {
            fs::remove_dir(dst)?;
            return Ok(());
        }
    } else {
        if dst.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(dst)?;
        } else {
            clear_non_dir(dst)?;
        }
        if md.file_type().is_symlink() {
            symlink(fs::read_link(src)?, dst)?;
        } else if md.is_file() {
            let key = (md.dev(), md.ino());
            match ctx.links.get(&key) {
                Some(first) if md.nlink() > 1 => fs::hard_link(first, dst)?,
                _ => {
                    io::copy(&mut File::open(src)?, &mut File::create(dst)?)?;
                    if md.nlink() > 1 {
                        ctx.links.insert(key, dst.to_path_buf());
                    }
                }
            }
        } else if crate::snapshot::is_whiteout(&md) {
            // A 0/0 device is an overlay deletion marker (from an unpacked `.wh.` entry):
            // written into a snapshot it would delete what lies below. Not copied.
            return Ok(());
        } else {
            // Devices and fifos: recreate the node.
            rustix::fs::mknodat(
                rustix::fs::CWD,
                dst,
                rustix::fs::FileType::from_raw_mode(md.mode()),
                rustix::fs::Mode::from_raw_mode(mode),
                md.rdev(),
            )?;
        }
    }
    // Owner before mode: chown clears the setuid and setgid bits.
    lchown(dst, ids)?;
    if !md.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
    }
    set_mtime(
        dst,
        ctx.ts
            .unwrap_or(md.mtime() * 1_000_000_000 + md.mtime_nsec()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_action(src: &str, dest: &str) -> pb::FileActionCopy {
        pb::FileActionCopy {
            src: src.into(),
            dest: dest.into(),
            mode: -1,
            timestamp: -1,
            create_dest_path: true,
            allow_wildcard: true,
            dir_copy_contents: true,
            follow_symlink: true,
            ..Default::default()
        }
    }

    #[test]
    fn copies_stay_inside_and_follow_docker_rules() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("app/sub")).unwrap();
        fs::write(src.path().join("app/a.txt"), "a").unwrap();
        fs::write(src.path().join("app/sub/b.txt"), "b").unwrap();
        fs::write(src.path().join("app/skip.log"), "x").unwrap();
        // The destination has a symlink pointing out of the root, where a copy would land.
        fs::create_dir_all(dst.path().join("etc")).unwrap();
        symlink(outside.path().join("victim"), dst.path().join("etc/a.txt")).unwrap();

        let mut a = copy_action("/app", "/etc/");
        a.exclude_patterns = vec!["*.log".into()];
        copy(dst.path(), src.path(), &a, &std::env::temp_dir()).unwrap();
        assert_eq!(
            fs::read_to_string(dst.path().join("etc/a.txt")).unwrap(),
            "a"
        );
        assert!(!outside.path().join("victim").exists());
        assert_eq!(
            fs::read_to_string(dst.path().join("etc/sub/b.txt")).unwrap(),
            "b"
        );
        assert!(!dst.path().join("etc/skip.log").exists());

        // A file into a new path, with chmod; a wildcard into a directory.
        let mut f = copy_action("/app/a.txt", "/new/dir/file");
        f.mode = 0o600;
        copy(dst.path(), src.path(), &f, &std::env::temp_dir()).unwrap();
        let md = fs::metadata(dst.path().join("new/dir/file")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        copy(
            dst.path(),
            src.path(),
            &copy_action("/app/*.txt", "/w/"),
            &std::env::temp_dir(),
        )
        .unwrap();
        assert!(dst.path().join("w/a.txt").is_file());
        // A followed symlink is copied under its own name, with its target's content.
        symlink("a.txt", src.path().join("app/link")).unwrap();
        copy(
            dst.path(),
            src.path(),
            &copy_action("/app/link", "/named/"),
            &std::env::temp_dir(),
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(dst.path().join("named/link")).unwrap(),
            "a"
        );
        let e = copy(
            dst.path(),
            src.path(),
            &copy_action("/nope", "/x"),
            &std::env::temp_dir(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nope: not found"), "{e}");
        let e = copy(
            dst.path(),
            src.path(),
            &copy_action("/*.none", "/x"),
            &std::env::temp_dir(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no source files"), "{e}");
    }

    #[test]
    fn mkdir_mkfile_rm_symlink() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        symlink("/", r.join("up")).unwrap();
        mkdir(
            r,
            &pb::FileActionMkDir {
                path: "/up/../a/b".into(),
                mode: 0o750,
                make_parents: true,
                timestamp: -1,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(r.join("a/b").is_dir());
        mkfile(
            r,
            &pb::FileActionMkFile {
                path: "/a/b/f".into(),
                mode: 0o644,
                data: b"hi".to_vec(),
                timestamp: 0,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(fs::read(r.join("a/b/f")).unwrap(), b"hi");
        assert_eq!(fs::metadata(r.join("a/b/f")).unwrap().mtime(), 0);
        symlink_action(
            r,
            &pb::FileActionSymlink {
                oldpath: "/a/b/f".into(),
                newpath: "/l".into(),
                timestamp: -1,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(fs::read_link(r.join("l")).unwrap(), Path::new("/a/b/f"));
        rm(
            r,
            &pb::FileActionRm {
                path: "/a/b/*".into(),
                allow_wildcard: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!r.join("a/b/f").exists());
        assert!(
            rm(
                r,
                &pb::FileActionRm {
                    path: "/nope".into(),
                    ..Default::default()
                }
            )
            .is_err()
        );
        rm(
            r,
            &pb::FileActionRm {
                path: "/nope".into(),
                allow_not_found: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(apply_mode_str("u+x,go-w", 0o666, false).unwrap(), 0o744);
        assert_eq!(apply_mode_str("755", 0, false).unwrap(), 0o755);
    }
}
