//! User and group names resolved from a root filesystem's `/etc/passwd` and `/etc/group`,
//! as BuildKit does for `USER name` and `--chown=name`.

use std::io;
use std::path::Path;

use crate::rootpath;

/// A resolved user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
}

fn read_db(root: &Path, file: &str) -> Vec<Vec<String>> {
    rootpath::resolve(root, file, true)
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

fn not_found(what: &str, name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("unable to find {what} {name}: no matching entries in {what} file"),
    )
}

/// A group name or number.
pub fn group_id(root: &Path, group: &str) -> io::Result<u32> {
    if let Ok(id) = group.parse() {
        return Ok(id);
    }
    read_db(root, "/etc/group")
        .iter()
        .find(|f| f.first().map(String::as_str) == Some(group))
        .and_then(|f| f.get(2)?.parse().ok())
        .ok_or_else(|| not_found("group", group))
}

/// A user name or number, without group.
pub fn user_id(root: &Path, user: &str) -> io::Result<(u32, Option<u32>)> {
    if let Ok(id) = user.parse::<u32>() {
        let gid = read_db(root, "/etc/passwd")
            .iter()
            .find(|f| f.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(id))
            .and_then(|f| f.get(3)?.parse().ok());
        return Ok((id, gid));
    }
    read_db(root, "/etc/passwd")
        .iter()
        .find(|f| f.first().map(String::as_str) == Some(user))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok())))
        .ok_or_else(|| not_found("user", user))
}

/// `user[:group]` as in `USER`: names looked up in the root filesystem; a user given alone
/// gets its primary group and its supplementary groups from `/etc/group`.
pub fn resolve(root: &Path, spec: &str) -> io::Result<User> {
    let mut user = resolve_ids(root, spec)?;
    // As BuildKit: the primary group is also a supplementary one, first.
    if !user.additional_gids.contains(&user.gid) {
        user.additional_gids.insert(0, user.gid);
    }
    Ok(user)
}

fn resolve_ids(root: &Path, spec: &str) -> io::Result<User> {
    if spec.is_empty() {
        return Ok(User::default());
    }
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = user_id(root, user)?;
    match group {
        Some(g) => Ok(User {
            uid,
            gid: group_id(root, g)?,
            additional_gids: Vec::new(),
        }),
        None => {
            let name = if user.parse::<u32>().is_ok() {
                None
            } else {
                Some(user)
            };
            let additional_gids = name
                .map(|n| {
                    read_db(root, "/etc/group")
                        .iter()
                        .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|x| x == n)))
                        .filter_map(|f| f.get(2)?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            Ok(User {
                uid,
                gid: primary.unwrap_or(0),
                additional_gids,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nstaff:x:1001:\nwheel:x:10:app,root\n",
        )
        .unwrap();
        let r = dir.path();
        assert_eq!(
            resolve(r, "app").unwrap(),
            User {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![1001, 10]
            }
        );
        assert_eq!(resolve(r, "app:wheel").unwrap().gid, 10);
        assert_eq!(resolve(r, "1000").unwrap().gid, 1001);
        assert_eq!(
            resolve(r, "5:7").unwrap(),
            User {
                uid: 5,
                gid: 7,
                additional_gids: vec![7]
            }
        );
        let e = resolve(r, "nobody").unwrap_err().to_string();
        assert!(e.contains("unable to find user nobody"), "{e}");
    }
}
