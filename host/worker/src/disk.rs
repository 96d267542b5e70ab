//! Sizes on disk: what a tree of files takes (for `du` and GC), and what the filesystem
//! holding the state has left (for GC and to bound what an input may expand to).

use std::collections::HashSet;
use std::io;
use std::path::Path;

use crate::beneath::{Entry, Visit, walk};

/// Bytes of the files below `dir`, a file with several links counted once. Walked through
/// descriptors, so a tree deeper than `PATH_MAX` (a step can make one) is measured too.
pub fn tree_size(dir: &Path) -> io::Result<u64> {
    struct Sum {
        total: u64,
        seen: HashSet<(u64, u64)>,
    }
    impl Visit for Sum {
        fn enter(&mut self, e: &Entry<'_>) -> io::Result<bool> {
            let st = e.stat;
            if !e.is_dir() && (st.st_nlink <= 1 || self.seen.insert((st.st_dev, st.st_ino))) {
                self.total += st.st_size as u64;
            }
            Ok(true)
        }
    }
    let mut sum = Sum {
        total: 0,
        seen: HashSet::new(),
    };
    walk(dir, &mut sum)?;
    Ok(sum.total)
}

/// Bytes a process without privileges may still write on the filesystem holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Total bytes of the filesystem holding `path`.
pub fn disk_total(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_blocks.saturating_mul(st.f_frsize))
}
