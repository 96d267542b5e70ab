//! Paths inside a root filesystem, resolved as a process chrooted there would see them.
//!
//! Every path a build names (a copy destination, a working directory, a file to remove) is
//! resolved here: `..` stops at the root and symlinks, absolute or relative, are followed
//! inside the root, so nothing a build does reaches outside its own snapshot.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Links followed before giving up, as Linux does (`ELOOP`).
const MAX_LINKS: usize = 40;

/// The host path of `path` inside `root`. With `follow_last` false a final symlink is not
/// followed (for `rm`, `symlink`, copying a link itself).
pub fn resolve(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    let mut pending: Vec<OsString> = components(Path::new(path));
    pending.reverse();
    let mut stack: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            stack.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&stack);
        candidate.push(&name);
        let last = pending.is_empty();
        let md = candidate.symlink_metadata();
        if md.as_ref().is_ok_and(|m| m.file_type().is_symlink()) && (!last || follow_last) {
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::other(format!(
                    "{path}: too many levels of symbolic links"
                )));
            }
            let target = std::fs::read_link(&candidate)?;
            if target.is_absolute() {
                stack.clear();
            }
            let mut more = components(&target);
            more.reverse();
            pending.extend(more);
            continue;
        }
        stack.push(name);
    }
    let mut out = root.to_path_buf();
    out.extend(&stack);
    Ok(out)
}

/// Normal and `..` components of a path; `.` and the root are dropped.
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// `path` made relative and clean (`/a/./b/../c` → `a/c`); `..` above the top is dropped.
pub fn clean(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../etc", root.join("a/rel")).unwrap();
        symlink("b", root.join("a/lb")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            resolve(root, "/abs/passwd", true).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(resolve(root, "a/rel/x", true).unwrap(), root.join("etc/x"));
        assert_eq!(resolve(root, "../../x", true).unwrap(), root.join("x"));
        assert_eq!(resolve(root, "a/lb/c", true).unwrap(), root.join("a/b/c"));
        assert_eq!(resolve(root, "a/lb", false).unwrap(), root.join("a/lb"));
        assert!(resolve(root, "loop", true).is_err());
        assert_eq!(clean("/a/./b/../c/"), "a/c");
        assert_eq!(clean("../../x"), "x");
    }
}
