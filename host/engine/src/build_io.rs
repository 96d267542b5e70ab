//! The engine's async runtime as one build uses it: a push or pull stops as soon as the
//! build is cancelled (its client went away, or the daemon is stopping), rather than
//! running to its end. What it wrote so far is never named by a manifest: blobs are
//! committed by digest, and a manifest is written last.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The build was cancelled while it waited.
#[derive(Debug)]
pub(crate) struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the build was cancelled")
    }
}

impl From<Cancelled> for String {
    fn from(c: Cancelled) -> String {
        c.to_string()
    }
}

/// A runtime and the cancel flag of the build using it.
#[derive(Clone, Copy)]
pub(crate) struct BuildIo<'a> {
    pub rt: &'a tokio::runtime::Runtime,
    pub cancelled: &'a AtomicBool,
}

impl BuildIo<'_> {
    /// Fail if the build was cancelled.
    pub fn check(&self) -> Result<(), crate::DaemonError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(crate::DaemonError::Export(Cancelled.to_string()));
        }
        Ok(())
    }

    /// Run `f` to its end, or until the build is cancelled (checked every 50 ms).
    pub fn block_on<F: Future>(&self, f: F) -> Result<F::Output, Cancelled> {
        let cancelled = self.cancelled;
        self.rt.block_on(async {
            tokio::select! {
                out = f => Ok(out),
                () = async {
                    while !cancelled.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                } => Err(Cancelled),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_ends_when_the_build_is_cancelled() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let cancelled = AtomicBool::new(false);
        let io = BuildIo {
            rt: &rt,
            cancelled: &cancelled,
        };
        assert_eq!(io.block_on(async { 7 }).unwrap(), 7);
        cancelled.store(true, Ordering::Relaxed);
        let forever = std::future::pending::<()>();
        assert!(io.block_on(forever).is_err());
    }
}
