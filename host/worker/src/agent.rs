//! SSH agent sockets in steps (`RUN --mount=type=ssh`). A step never gets the client's
//! socket itself: it gets a socket of its own, owned and moded as the mount asks, whose
//! connections are relayed to the agent. The relay lives as long as the step.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// Bind a unix socket at `path`, however long the path.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    short(path, |p| UnixListener::bind(p))
}

/// Connect to a unix socket at `path`, however long the path.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    short(path, |p| UnixStream::connect(p))
}

/// `sun_path` holds 108 bytes: a longer path is reached through `/proc/self/fd/N` of its
/// directory.
fn short<T>(path: &Path, f: impl Fn(&Path) -> io::Result<T>) -> io::Result<T> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return f(path);
    };
    if path.as_os_str().len() < 100 {
        return f(path);
    }
    let dir = std::fs::File::open(dir)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
    f(&Path::new("/proc/self/fd").join(fd.to_string()).join(name))
}

/// A socket at `path` that relays every connection to `agent`; closed when dropped.
pub struct AgentRelay {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// The listening socket, shut down to end the accept loop.
    listener: UnixListener,
    accept: Option<JoinHandle<()>>,
}

impl AgentRelay {
    /// Listen at `path` (owned by `uid`:`gid` with `mode`) and relay to `agent`.
    pub fn start(path: &Path, agent: &Path, uid: u32, gid: u32, mode: u32) -> io::Result<Self> {
        let listener = bind(path)?;
        // BuildKit's default for an ssh mount: the owner may connect.
        let mode = if mode == 0 { 0o600 } else { mode };
        crate::worker::chown_mode(path, uid, gid, mode)?;
        let stop = Arc::new(AtomicBool::new(false));
        let agent = agent.to_path_buf();
        let flag = stop.clone();
        let accepting = listener.try_clone()?;
        let accept = std::thread::Builder::new()
            .name("ssh-relay".into())
            .spawn(move || {
                loop {
                    let conn = accepting.accept();
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok((conn, _)) = conn else {
                        // Out of descriptors, say: try again, but not in a busy loop.
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        continue;
                    };
                    match connect(&agent) {
                        Ok(upstream) => relay(conn, upstream),
                        // The step sees its connection closed, as with a dead agent.
                        Err(e) => tracing::warn!(
                            "ssh agent {}: {e}; the step's connection is closed",
                            agent.display()
                        ),
                    }
                }
            })?;
        Ok(AgentRelay {
            path: path.to_path_buf(),
            stop,
            listener,
            accept: Some(accept),
        })
    }
}

/// Copy both ways on threads of their own; each direction closes the other's write side
/// when its reader ends.
fn relay(a: UnixStream, b: UnixStream) {
    let pairs = [(a.try_clone(), b.try_clone()), (Ok(b), Ok(a))];
    for pair in pairs {
        let (Ok(mut from), Ok(mut to)) = pair else {
            return;
        };
        let _ = std::thread::Builder::new()
            .name("ssh-relay-conn".into())
            .spawn(move || {
                let _ = io::copy(&mut from, &mut to);
                let _ = to.shutdown(std::net::Shutdown::Write);
            });
    }
}

impl Drop for AgentRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag: accept fails on a socket shut down.
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Both);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn relays_both_ways_with_the_mounts_owner_and_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let agent_path = tmp.path().join("agent.sock");
        let agent = UnixListener::bind(&agent_path).unwrap();
        let echo = std::thread::spawn(move || {
            let (mut c, _) = agent.accept().unwrap();
            let mut buf = [0; 5];
            c.read_exact(&mut buf).unwrap();
            c.write_all(&buf.map(|b| b.to_ascii_uppercase())).unwrap();
        });
        // Longer than sun_path holds.
        let deep = tmp.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("relay.sock");
        let relay = AgentRelay::start(&path, &agent_path, 1000, 1000, 0o600).unwrap();
        let md = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (1000, 1000, 0o600));
        let mut c = connect(&path).unwrap();
        c.write_all(b"hello").unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).unwrap();
        assert_eq!(back, "HELLO");
        echo.join().unwrap();
        drop(relay);
        assert!(!path.exists());
    }
}
