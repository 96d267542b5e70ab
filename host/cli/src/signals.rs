//! Signals during a build. In process, its steps are runc containers started by this
//! process, which would outlive it: SIGINT, SIGTERM and SIGHUP cancel the build instead, so
//! its containers are killed, its mounts undone and nothing half-written is kept; a second
//! signal kills the containers and exits at once. (What a SIGKILL leaves, the next start
//! reclaims: see `buildwit_worker::Worker::open`.) Through buildwitd, the first signal
//! closes the build's stream, which the daemon takes as a cancellation, and the CLI exits
//! with 128 + the signal, as it does in process, even when the shell that started it
//! ignores SIGINT.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The first signal received, 0 before one.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// The signal that cancelled the build, if one did.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// Set `cancelled` on the first SIGINT, SIGTERM or SIGHUP; exit on the second.
pub fn cancel_on_signals(cancelled: Arc<AtomicBool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("cannot watch signals: {e}");
            return;
        }
    };
    // Registered before the build starts, so no signal falls between.
    let watched = runtime.block_on(async {
        [
            (SignalKind::interrupt(), 2),
            (SignalKind::terminate(), 15),
            (SignalKind::hangup(), 1),
        ]
        .into_iter()
        .filter_map(|(kind, number)| signal(kind).ok().map(|s| (s, number)))
        .collect::<Vec<_>>()
    });
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            for (mut s, number) in watched {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while s.recv().await.is_some() {
                        if tx.send(number).is_err() {
                            return;
                        }
                    }
                });
            }
            while let Some(number) = rx.recv().await {
                if RECEIVED
                    .compare_exchange(0, number, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    eprintln!("cancelling the build (a second signal stops at once)");
                    cancelled.store(true, Ordering::Relaxed);
                } else {
                    buildwit_worker::exec::kill_running();
                    std::process::exit(128 + RECEIVED.load(Ordering::Relaxed));
                }
            }
        });
    });
}
