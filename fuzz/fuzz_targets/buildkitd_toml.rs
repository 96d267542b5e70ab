//! `buildkitd.toml`: TOML parsing, the schema, unknown-key warnings and effective values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(loaded) = buildwit_config::load_str(text, "fuzz.toml") {
        let effective = loaded.config.effective();
        let _ = effective.to_toml();
    }
});
