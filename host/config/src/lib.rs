//! `buildkitd.toml`: BuildKit's whole configuration schema (v0.32), with its size and
//! duration syntax, its defaults and its default GC policy.
//!
//! BuildKit ignores unknown keys silently; [`load`] also accepts them, but reports each one
//! as a [`ConfigWarning`] naming the full dotted key and its line. A value of the wrong type
//! is a [`ConfigError`] naming the key, the line and the column.
//!
//! Differences from BuildKit, on purpose: the default root and address are buildwit's
//! ([`DEFAULT_ROOT`], [`DEFAULT_ADDRESS`]); unknown `insecure-entitlements` values, negative
//! durations and negative percentages are errors; keys are matched case-sensitively (go-toml
//! v2 falls back to case-insensitive field names).

#![warn(missing_docs)]

mod defaults;
mod load;
mod schema;
mod size;

pub use defaults::*;
pub use load::{
    ConfigError, ConfigWarning, Loaded, default_path, default_path_for, default_root, load,
    load_explicit, load_str,
};
pub use schema::*;
pub use size::{DiskSpace, Duration};

/// buildwit's default state directory (BuildKit: `/var/lib/buildkit`).
pub const DEFAULT_ROOT: &str = "/var/lib/buildwit";
/// buildwit's default gRPC address (BuildKit: `unix:///run/buildkit/buildkitd.sock`).
pub const DEFAULT_ADDRESS: &str = "unix:///run/buildwit/buildwitd.sock";
/// Entitlements a daemon may allow.
pub const ENTITLEMENTS: &[&str] = &["security.insecure", "network.host", "device"];

impl Config {
    /// Print as TOML (for `buildwit debug config`); the text loads back to the same value.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }
}
