//! The settings that shape compiled frontend code. The runtime's engine and the build
//! script that compiles the built-in frontends ahead of time both start from here, so an
//! artifact made when buildwit was built fits the engine it runs on.

/// A wasmtime config with every setting that changes the compiled code.
pub fn config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    // Deadlines interrupt guest code at epoch checks compiled into it; NaN bits are made
    // canonical so a frontend's LLB never depends on the host CPU.
    config
        .epoch_interruption(true)
        .cranelift_nan_canonicalization(true);
    config
}
