//! Network namespaces kept alive by a bind mount on a file, as `ip netns` and BuildKit make
//! them: a throw-away thread unshares its network namespace and mounts
//! `/proc/self/task/<tid>/ns/net` on the file; runc then joins it by that path.

use std::io;
use std::path::Path;

/// Make a new network namespace at `path` (an empty file is created there).
pub(crate) fn create(path: &Path) -> io::Result<()> {
    std::fs::File::create(path)?;
    let target = path.to_path_buf();
    // A thread of its own: unshare changes the namespace of the calling thread only, and
    // that thread is never used for anything else.
    let made = std::thread::spawn(move || -> io::Result<()> {
        // SAFETY: CLONE_NEWNET does not touch the file descriptor table (the hazard the
        // function is unsafe for); it changes only this thread's network namespace.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }?;
        let tid = rustix::thread::gettid().as_raw_nonzero();
        rustix::mount::mount_bind(format!("/proc/self/task/{tid}/ns/net"), &target)?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")));
    if let Err(e) = made {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Unmount and remove the namespace at `path` (what is gone already is no error).
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    use rustix::io::Errno;
    match rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
