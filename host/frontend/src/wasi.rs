//! WASI 0.2 for frontends that import it: a `wasm32-wasip2` Rust std, or a language runtime
//! such as CPython in a `componentize-py` component, which imports all of `wasi:cli`.
//!
//! Nothing of the host is reachable through it: no preopened directories, no environment or
//! arguments, no sockets or name lookups (wasmtime-wasi's defaults), an empty stdin. What
//! would make a frontend's output depend on something other than its inputs is fixed: both
//! clocks stand still at the Unix epoch (a timer is due at once), and the random sources
//! (secure and insecure) and the hash seed come from fixed seeds. stdout and stderr are kept
//! in bounded buffers and go to the build's log when the call returns; stderr explains a
//! trap (a Python traceback).

use rand::SeedableRng as _;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::host::HostState;

/// WASI packages a frontend may import: those of `wasi:cli/command` that wasmtime-wasi
/// implements as above. Anything else (`wasi:http`, `wasi:keyvalue`, ...) is refused when
/// the component is loaded.
pub(crate) const PACKAGES: &[&str] = &[
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
];

/// The WASI version this host implements; a component's imports must be 0.2.x.
pub(crate) const VERSION: &str = "0.2.";

/// The hash seed (`wasi:random/insecure-seed`) of every frontend: with it a Rust std's
/// `HashMap` iterates in the same order on every run.
const FIXED_SEED: u128 = 0x6672_6f6e_7465_6e64_6275_696c_6477_6974;

/// Bytes of stdout, and of stderr, kept per call; a frontend writing more gets an error
/// from its write (an `OSError` in Python).
const OUTPUT_CAPACITY: usize = 1 << 20;

/// A WASI context that grants nothing, and the buffers its stdout and stderr write to.
pub(crate) struct Wasi {
    ctx: WasiCtx,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl Wasi {
    pub(crate) fn new() -> Self {
        let stdout = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let ctx = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(Epoch)
            .monotonic_clock(Epoch)
            .secure_random(rand::rngs::StdRng::seed_from_u64(FIXED_SEED as u64))
            .insecure_random(rand::rngs::StdRng::seed_from_u64((FIXED_SEED >> 64) as u64))
            .insecure_random_seed(FIXED_SEED)
            .build();
        Wasi {
            ctx,
            stdout,
            stderr,
        }
    }

    /// What the frontend wrote to stdout and to stderr.
    pub(crate) fn output(&self) -> (String, String) {
        let text = |pipe: &MemoryOutputPipe| String::from_utf8_lossy(&pipe.contents()).into_owned();
        (text(&self.stdout), text(&self.stderr))
    }

    /// The end of what it wrote to stderr before a trap (a language runtime's last error,
    /// such as a Python traceback), if anything.
    pub(crate) fn last_words(&self) -> Option<String> {
        const TAIL: usize = 4096;
        let text = String::from_utf8_lossy(&self.stderr.contents()).into_owned();
        let text = text.trim_end();
        let start = text.len().saturating_sub(TAIL);
        let start = (start..=text.len()).find(|&i| text.is_char_boundary(i))?;
        (!text.is_empty()).then(|| text[start..].to_string())
    }
}

// WASI's resources (streams, pollables) live in the same table as the gateway's references.
impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.table,
        }
    }
}

/// wasmtime-wasi's `wasi:clocks/monotonic-clock`, whose timers are replaced below.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Link WASI 0.2 into a linker (a second one: a frontend without WASI imports keeps a
/// linker with nothing but the gateway).
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    // The clock stands still, so a timer on it is due at once: a sleep returns, and no wait
    // in host code escapes the deadline (which interrupts only running Wasm).
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", |mut store, (_,): (u64,)| {
        due(&mut store)
    })?;
    clock.func_wrap("subscribe-instant", |mut store, (_,): (u64,)| {
        due(&mut store)
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A pollable that is ready now.
fn due(store: &mut StoreContextMut<'_, HostState>) -> wasmtime::Result<(Resource<DynPollable>,)> {
    let table = &mut store.data_mut().table;
    let now = table.push(Due)?;
    Ok((subscribe(table, now)?,))
}

struct Due;

#[wasmtime_wasi::async_trait]
impl Pollable for Due {
    async fn ready(&mut self) {}
}

/// Whether a component may import `name` (such as `wasi:cli/stdout@0.2.4`).
pub(crate) fn provides(name: &str) -> bool {
    PACKAGES.iter().any(|p| name.starts_with(p))
        && name
            .split_once('@')
            .is_some_and(|(_, v)| v.starts_with(VERSION))
}

/// A clock that stands at the Unix epoch.
struct Epoch;

impl HostWallClock for Epoch {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl HostMonotonicClock for Epoch {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_command_world_of_wasi_0_2_is_provided() {
        for name in [
            "wasi:cli/stdout@0.2.0",
            "wasi:filesystem/types@0.2.4",
            "wasi:random/insecure-seed@0.2.6",
            "wasi:sockets/tcp@0.2.4",
        ] {
            assert!(provides(name), "{name}");
        }
        for name in [
            "wasi:http/types@0.2.4",
            "wasi:cli/stdout@0.3.0",
            "wasi:cli/stdout",
            "wasi:keyvalue/store@0.2.0",
        ] {
            assert!(!provides(name), "{name}");
        }
    }

    #[test]
    fn a_frontend_output_is_read_back_and_a_traceback_tail_explains_a_trap() {
        let wasi = Wasi::new();
        assert_eq!(wasi.last_words(), None);
        use wasmtime_wasi::p2::OutputStream as _;
        let mut err = wasi.stderr.clone();
        err.write(bytes::Bytes::from("Traceback: é\n".repeat(1000)))
            .unwrap();
        let words = wasi.last_words().unwrap();
        assert!(
            words.len() <= 4096 && words.ends_with("Traceback: é"),
            "{words}"
        );
        assert_eq!(wasi.output().0, "");
    }
}
