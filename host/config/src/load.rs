//! Reading `buildkitd.toml`: positions for errors, warnings for unknown keys.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use crate::{Config, ENTITLEMENTS};

/// A configuration problem that does not stop loading (today: an unknown key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Full dotted key, e.g. `ghacache.sign.cmd` or `worker.oci.gcpolicy[0].keep`.
    pub key: String,
    /// 1-based line (0 if unknown).
    pub line: usize,
    /// The whole message, e.g. `b.toml: unknown key "x.y" at line 3 (ignored)`.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, a value of the wrong type or form, or a bad entitlement.
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        /// The file (or the `origin` given to [`load_str`]).
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// The full dotted key, when known.
        key: Option<String>,
        /// `key: problem`, or just the problem for syntax errors.
        message: String,
    },
}

/// A loaded configuration.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The configuration as written (see [`Config::effective`] for defaults).
    pub config: Config,
    /// Unknown keys (BuildKit ignores them silently).
    pub warnings: Vec<ConfigWarning>,
    /// The file it came from; `None` when there was no file.
    pub source: Option<PathBuf>,
}

/// `/etc/buildkit/buildkitd.toml` as root (effective uid 0),
/// `$XDG_CONFIG_HOME/buildkit/buildkitd.toml` (or `~/.config/buildkit/buildkitd.toml`)
/// otherwise.
pub fn default_path() -> PathBuf {
    default_path_for(
        is_root(),
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`default_path`] for a given euid-is-0, `$XDG_CONFIG_HOME` and `$HOME`.
pub fn default_path_for(
    root: bool,
    xdg_config_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    if root {
        return PathBuf::from("/etc/buildkit/buildkitd.toml");
    }
    let base = xdg_config_home
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            home.filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })
        .unwrap_or_else(|| PathBuf::from(".config"));
    base.join("buildkit").join("buildkitd.toml")
}

/// buildwit's state directory when the config names none: [`crate::DEFAULT_ROOT`] as
/// root, `$XDG_DATA_HOME/buildwit` (or `~/.local/share/buildwit`) otherwise.
pub fn default_root() -> PathBuf {
    if is_root() {
        return PathBuf::from(crate::DEFAULT_ROOT);
    }
    std::env::var_os("XDG_DATA_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        })
        .map_or_else(
            || PathBuf::from(crate::DEFAULT_ROOT),
            |base| base.join("buildwit"),
        )
}

/// Whether the effective uid is 0 (the `Uid:` line of `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Load a config file; a missing file is the empty configuration (as BuildKit).
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Loaded::default()),
        other => from_read(path, other),
    }
}

/// Load a config file named on the command line (`--config FILE`): it must exist.
pub fn load_explicit(path: &Path) -> Result<Loaded, ConfigError> {
    from_read(path, std::fs::read_to_string(path))
}

fn from_read(path: &Path, read: std::io::Result<String>) -> Result<Loaded, ConfigError> {
    let text = read.map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut loaded = load_str(&text, &path.display().to_string())?;
    loaded.source = Some(path.to_path_buf());
    Ok(loaded)
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    out.push_str(k);
                } else {
                    out.push_str(&format!("{k:?}"));
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn segments(path: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            segments(parent, out);
            out.push(Seg::Index(*index));
        }
        Path::Map { parent, key } => {
            segments(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent, out),
    }
}

/// Line and column (1-based, column in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// Load configuration text; `origin` names it in messages.
pub fn load_str(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    let invalid = |offset: usize, key: Option<String>, message: String| {
        let (line, column) = position(text, offset);
        ConfigError::Invalid {
            origin: origin.to_string(),
            line,
            column,
            message: match &key {
                Some(k) => format!("{k}: {message}"),
                None => message,
            },
            key,
        }
    };
    let tree = DeTable::parse(text).map_err(|e| {
        invalid(
            e.span().map_or(0, |s| s.start),
            None,
            e.message().trim().to_string(),
        )
    })?;

    let mut ignored: Vec<Vec<Seg>> = Vec::new();
    let config: Config =
        serde_ignored::deserialize(toml::de::Deserializer::from(tree.clone()), |path| {
            let mut segs = Vec::new();
            segments(&path, &mut segs);
            ignored.push(segs);
        })
        .map_err(|e: toml::de::Error| {
            // The unknown-key tracker hides the error's span: deserialize again without it.
            let e = toml::from_str::<Config>(text).err().unwrap_or(e);
            let offset = e.span().map_or(0, |s| s.start);
            let key = key_at(tree.get_ref(), offset).map(|p| dotted(&p));
            invalid(offset, key, humanize(e.message().trim()))
        })?;

    let mut warnings = Vec::new();
    for path in ignored {
        let mut leaves = Vec::new();
        match lookup(tree.get_ref(), &path) {
            Some((offset, value)) => unknown_leaves(&path, offset, value, &mut leaves),
            None => leaves.push((path, None)),
        }
        for (path, offset) in leaves {
            let key = dotted(&path);
            let line = offset.map_or(0, |o| position(text, o).0);
            warnings.push(ConfigWarning {
                message: format!("{origin}: unknown key \"{key}\" at line {line} (ignored)"),
                key,
                line,
            });
        }
    }
    warnings.sort_by_key(|w| w.line);

    if let Some((index, bad)) = config
        .insecure_entitlements
        .iter()
        .enumerate()
        .find(|(_, e)| !ENTITLEMENTS.contains(&e.as_str()))
    {
        let offset = lookup(
            tree.get_ref(),
            &[Seg::Key("insecure-entitlements".into()), Seg::Index(index)],
        )
        .map_or(0, |(o, _)| o);
        return Err(invalid(
            offset,
            Some("insecure-entitlements".into()),
            format!(
                "invalid entitlement {bad:?} (allowed: {})",
                ENTITLEMENTS.join(", ")
            ),
        ));
    }

    Ok(Loaded {
        config,
        warnings,
        source: None,
    })
}

/// The value at `path` and the byte offset of its key (or array element).
fn lookup<'a, 'i>(table: &'a DeTable<'i>, path: &[Seg]) -> Option<(usize, &'a DeValue<'i>)> {
    let (Seg::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let (k, v) = table.iter().find(|(k, _)| k.get_ref() == first)?;
    let mut offset = k.span().start;
    let mut value = v.get_ref();
    for (i, seg) in rest.iter().enumerate() {
        match (seg, value) {
            (Seg::Key(_), DeValue::Table(t)) => {
                return lookup(t, &rest[i..]).or(Some((offset, value)));
            }
            (Seg::Index(n), DeValue::Array(items)) => {
                let item = items.get(*n)?;
                offset = item.span().start;
                value = item.get_ref();
            }
            _ => return Some((offset, value)),
        }
    }
    Some((offset, value))
}

/// Expand an unknown key into its leaf keys (an unknown table reports each key inside).
fn unknown_leaves(
    path: &[Seg],
    offset: usize,
    value: &DeValue<'_>,
    out: &mut Vec<(Vec<Seg>, Option<usize>)>,
) {
    match value {
        DeValue::Table(t) if !t.is_empty() => {
            for (k, v) in t.iter() {
                let mut p = path.to_vec();
                p.push(Seg::Key(k.get_ref().to_string()));
                unknown_leaves(&p, k.span().start, v.get_ref(), out);
            }
        }
        DeValue::Array(items)
            if !items.is_empty()
                && items
                    .iter()
                    .all(|i| matches!(i.get_ref(), DeValue::Table(_))) =>
        {
            for (n, item) in items.iter().enumerate() {
                let mut p = path.to_vec();
                p.push(Seg::Index(n));
                unknown_leaves(&p, item.span().start, item.get_ref(), out);
            }
        }
        _ => out.push((path.to_vec(), Some(offset))),
    }
}

/// The path of the deepest key whose key or value contains byte `offset`. Tables are
/// searched whatever their own span (a `[table]` header's span does not cover its body).
fn key_at(table: &DeTable<'_>, offset: usize) -> Option<Vec<Seg>> {
    for (k, v) in table.iter() {
        let here = Seg::Key(k.get_ref().to_string());
        let deeper = match v.get_ref() {
            DeValue::Table(t) => key_at(t, offset),
            DeValue::Array(items) => items.iter().enumerate().find_map(|(n, i)| {
                let inner = match i.get_ref() {
                    DeValue::Table(t) => key_at(t, offset),
                    _ => None,
                };
                match inner {
                    Some(mut p) => {
                        p.insert(0, Seg::Index(n));
                        Some(p)
                    }
                    None if i.span().contains(&offset) => Some(vec![Seg::Index(n)]),
                    None => None,
                }
            }),
            _ => None,
        };
        match deeper {
            Some(mut d) => {
                d.insert(0, here);
                return Some(d);
            }
            None if v.span().contains(&offset) || k.span().contains(&offset) => {
                return Some(vec![here]);
            }
            None => {}
        }
    }
    None
}

/// serde's `invalid type: string "x", expected i64` as `expected an integer, found a string`.
fn humanize(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_string();
    };
    let Some((found, expected)) = rest.rsplit_once(", expected ") else {
        return message.to_string();
    };
    let found = match found.split([' ', '`']).next().unwrap_or(found) {
        "string" => "a string",
        "integer" => "an integer",
        "floating" => "a float",
        "boolean" => "a boolean",
        "map" => "a table",
        "sequence" => "an array",
        _ => found,
    };
    let expected = match expected {
        e if [
            "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "usize", "isize",
        ]
        .contains(&e) =>
        {
            "an integer"
        }
        "a string" | "a borrowed string" => "a string",
        "a boolean" => "a boolean",
        "a sequence" => "an array",
        "a map" => "a table",
        e if e.starts_with("struct ") => "a table",
        e => e,
    };
    format!("expected {expected}, found {found}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_selection() {
        let p = |root, xdg: Option<&str>, home: Option<&str>| {
            default_path_for(root, xdg.map(Into::into), home.map(Into::into))
        };
        assert_eq!(
            p(true, Some("/x"), Some("/home/u")),
            PathBuf::from("/etc/buildkit/buildkitd.toml")
        );
        assert_eq!(
            p(false, Some("/x"), Some("/home/u")),
            PathBuf::from("/x/buildkit/buildkitd.toml")
        );
        assert_eq!(
            p(false, None, Some("/home/u")),
            PathBuf::from("/home/u/.config/buildkit/buildkitd.toml")
        );
        assert_eq!(
            p(false, Some(""), Some("/home/u")),
            PathBuf::from("/home/u/.config/buildkit/buildkitd.toml")
        );
    }

    #[test]
    fn messages_are_human() {
        assert_eq!(
            humanize("invalid type: string \"four\", expected i64"),
            "expected an integer, found a string"
        );
        assert_eq!(
            humanize("invalid type: integer `3`, expected a sequence"),
            "expected an array, found an integer"
        );
        assert_eq!(humanize("missing field `x`"), "missing field `x`");
    }

    #[test]
    fn positions_count_characters() {
        assert_eq!(position("a\nµb = 1", 4), (2, 2));
        assert_eq!(position("", 0), (1, 1));
    }

    #[test]
    fn dotted_keys_quote_when_needed() {
        let p = [
            Seg::Key("registry".into()),
            Seg::Key("docker.io".into()),
            Seg::Key("keypair".into()),
            Seg::Index(0),
            Seg::Key("x".into()),
        ];
        assert_eq!(dotted(&p), "registry.\"docker.io\".keypair[0].x");
    }
}
