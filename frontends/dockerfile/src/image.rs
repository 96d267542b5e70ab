//! The OCI image config the Dockerfile frontend produces (`containerimage.config`), in the
//! shape BuildKit's `dockerspec.DockerOCIImage` has, written as Go's `encoding/json` writes it:
//! the same field order, the same `omitempty` rules, sorted map keys and `<`, `>`, `&`
//! escaped.

// Plain data mirroring BuildKit's Go structs; the field names say what they hold.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use serde_json::Value;

/// `HEALTHCHECK` settings; durations in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: i64,
}

/// The runtime part of the config (`config`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageConfig {
    pub user: String,
    pub exposed_ports: Option<BTreeMap<String, ()>>,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub volumes: Option<BTreeMap<String, ()>>,
    pub working_dir: String,
    pub labels: Option<BTreeMap<String, String>>,
    pub stop_signal: String,
    pub args_escaped: bool,
    pub healthcheck: Option<Healthcheck>,
    pub on_build: Vec<String>,
    pub shell: Vec<String>,
}

/// One `history` entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub created: Option<String>,
    pub created_by: String,
    pub author: String,
    pub comment: String,
    pub empty_layer: bool,
}

/// An image config (`DockerOCIImage`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Image {
    pub created: Option<String>,
    pub author: String,
    pub architecture: String,
    pub os: String,
    pub os_version: String,
    pub os_features: Vec<String>,
    pub variant: String,
    pub config: ImageConfig,
    pub rootfs_type: String,
    pub diff_ids: Option<Vec<String>>,
    pub history: Vec<History>,
}

/// BuildKit's history comment for Dockerfile steps.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// The default `PATH` of Linux images (BuildKit's `system.DefaultPathEnvUnix`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Image {
    /// The config of a `FROM scratch` stage for a platform.
    pub fn empty(os: &str, architecture: &str, variant: &str) -> Image {
        let mut img = Image {
            architecture: architecture.into(),
            os: os.into(),
            variant: variant.into(),
            rootfs_type: "layers".into(),
            ..Image::default()
        };
        img.config.working_dir = "/".into();
        if os != "windows" {
            img.config.env = vec![format!("PATH={DEFAULT_PATH}")];
        }
        img
    }

    /// Parse a raw image config; unknown fields are dropped as Go's decoder does.
    pub fn parse(raw: &[u8]) -> Result<Image, String> {
        let v: Value = serde_json::from_slice(raw)
            .map_err(|e| format!("failed to parse image config: {e}"))?;
        let s = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let strs = |v: Option<&Value>| -> Option<Vec<String>> {
            v.and_then(Value::as_array).map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or_default().to_string())
                    .collect()
            })
        };
        let keys = |v: Option<&Value>| -> Option<BTreeMap<String, ()>> {
            v.and_then(Value::as_object)
                .map(|m| m.keys().map(|k| (k.clone(), ())).collect())
        };
        let c = v.get("config").cloned().unwrap_or(Value::Null);
        let config = ImageConfig {
            user: s(&c, "User"),
            exposed_ports: keys(c.get("ExposedPorts")),
            env: strs(c.get("Env")).unwrap_or_default(),
            entrypoint: strs(c.get("Entrypoint")),
            cmd: strs(c.get("Cmd")),
            volumes: keys(c.get("Volumes")),
            working_dir: s(&c, "WorkingDir"),
            labels: c.get("Labels").and_then(Value::as_object).map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            }),
            stop_signal: s(&c, "StopSignal"),
            args_escaped: c
                .get("ArgsEscaped")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            healthcheck: c
                .get("Healthcheck")
                .filter(|h| h.is_object())
                .map(|h| Healthcheck {
                    test: strs(h.get("Test")).unwrap_or_default(),
                    interval: h.get("Interval").and_then(Value::as_i64).unwrap_or(0),
                    timeout: h.get("Timeout").and_then(Value::as_i64).unwrap_or(0),
                    start_period: h.get("StartPeriod").and_then(Value::as_i64).unwrap_or(0),
                    start_interval: h.get("StartInterval").and_then(Value::as_i64).unwrap_or(0),
                    retries: h.get("Retries").and_then(Value::as_i64).unwrap_or(0),
                }),
            on_build: strs(c.get("OnBuild")).unwrap_or_default(),
            shell: strs(c.get("Shell")).unwrap_or_default(),
        };
        let rootfs = v.get("rootfs").cloned().unwrap_or(Value::Null);
        let history = v
            .get("history")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|h| History {
                        created: h.get("created").and_then(Value::as_str).map(str::to_string),
                        created_by: s(h, "created_by"),
                        author: s(h, "author"),
                        comment: s(h, "comment"),
                        empty_layer: h
                            .get("empty_layer")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Image {
            created: v.get("created").and_then(Value::as_str).map(str::to_string),
            author: s(&v, "author"),
            architecture: s(&v, "architecture"),
            os: s(&v, "os"),
            os_version: s(&v, "os.version"),
            os_features: strs(v.get("os.features")).unwrap_or_default(),
            variant: s(&v, "variant"),
            config,
            rootfs_type: s(&rootfs, "type"),
            diff_ids: strs(rootfs.get("diff_ids")),
            history,
        })
    }

    /// Whether the image has no layers (BuildKit then uses scratch for it).
    pub fn is_scratch(&self) -> bool {
        self.diff_ids.as_ref().is_none_or(Vec::is_empty)
            && self.history.iter().all(|h| h.empty_layer)
    }

    /// Append a history entry the way BuildKit's `commitToHistory` does, dated
    /// `SOURCE_DATE_EPOCH` when the build has one (else the exporter dates it).
    pub fn commit(
        &mut self,
        msg: &str,
        with_layer: bool,
        buildkit_suffix: bool,
        epoch: Option<i64>,
    ) {
        let created_by = if buildkit_suffix {
            format!("{msg} # buildkit")
        } else {
            msg.to_string()
        };
        self.history.push(History {
            created: epoch.map(buildwit_sdk::image::rfc3339_utc),
            created_by,
            author: String::new(),
            comment: HISTORY_COMMENT.into(),
            empty_layer: !with_layer,
        });
    }

    /// Set or replace an environment variable in `config.Env`, keeping its position.
    pub fn add_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        for e in self.config.env.iter_mut() {
            if e.split_once('=').map(|(k, _)| k).unwrap_or(e) == key {
                *e = entry;
                return;
            }
        }
        self.config.env.push(entry);
    }

    /// The JSON text, byte for byte as Go's `json.Marshal` writes it.
    pub fn to_json(&self) -> String {
        let mut w = JsonWriter::default();
        w.open('{');
        if let Some(c) = &self.created {
            w.key("created");
            w.string(c);
        }
        if !self.author.is_empty() {
            w.key("author");
            w.string(&self.author);
        }
        w.key("architecture");
        w.string(&self.architecture);
        w.key("os");
        w.string(&self.os);
        if !self.os_version.is_empty() {
            w.key("os.version");
            w.string(&self.os_version);
        }
        if !self.os_features.is_empty() {
            w.key("os.features");
            w.strings(&self.os_features);
        }
        if !self.variant.is_empty() {
            w.key("variant");
            w.string(&self.variant);
        }
        w.key("rootfs");
        w.open('{');
        w.key("type");
        w.string(&self.rootfs_type);
        w.key("diff_ids");
        match &self.diff_ids {
            Some(d) => w.strings(d),
            None => w.raw("null"),
        }
        w.close('}');
        if !self.history.is_empty() {
            w.key("history");
            w.open('[');
            for h in &self.history {
                w.item();
                w.open('{');
                if let Some(c) = &h.created {
                    w.key("created");
                    w.string(c);
                }
                if !h.created_by.is_empty() {
                    w.key("created_by");
                    w.string(&h.created_by);
                }
                if !h.author.is_empty() {
                    w.key("author");
                    w.string(&h.author);
                }
                if !h.comment.is_empty() {
                    w.key("comment");
                    w.string(&h.comment);
                }
                if h.empty_layer {
                    w.key("empty_layer");
                    w.raw("true");
                }
                w.close('}');
            }
            w.close(']');
        }
        w.key("config");
        self.config.write(&mut w);
        w.close('}');
        w.out
    }
}

impl ImageConfig {
    fn write(&self, w: &mut JsonWriter) {
        w.open('{');
        if !self.user.is_empty() {
            w.key("User");
            w.string(&self.user);
        }
        if let Some(p) = self.exposed_ports.as_ref().filter(|p| !p.is_empty()) {
            w.key("ExposedPorts");
            w.empty_objects(p.keys());
        }
        if !self.env.is_empty() {
            w.key("Env");
            w.strings(&self.env);
        }
        if let Some(e) = self.entrypoint.as_ref().filter(|e| !e.is_empty()) {
            w.key("Entrypoint");
            w.strings(e);
        }
        if let Some(c) = self.cmd.as_ref().filter(|c| !c.is_empty()) {
            w.key("Cmd");
            w.strings(c);
        }
        if let Some(v) = self.volumes.as_ref().filter(|v| !v.is_empty()) {
            w.key("Volumes");
            w.empty_objects(v.keys());
        }
        if !self.working_dir.is_empty() {
            w.key("WorkingDir");
            w.string(&self.working_dir);
        }
        if let Some(l) = self.labels.as_ref().filter(|l| !l.is_empty()) {
            w.key("Labels");
            w.open('{');
            for (k, v) in l {
                w.key(k);
                w.string(v);
            }
            w.close('}');
        }
        if !self.stop_signal.is_empty() {
            w.key("StopSignal");
            w.string(&self.stop_signal);
        }
        if self.args_escaped {
            w.key("ArgsEscaped");
            w.raw("true");
        }
        if let Some(h) = &self.healthcheck {
            w.key("Healthcheck");
            w.open('{');
            if !h.test.is_empty() {
                w.key("Test");
                w.strings(&h.test);
            }
            for (k, v) in [
                ("Interval", h.interval),
                ("Timeout", h.timeout),
                ("StartPeriod", h.start_period),
                ("StartInterval", h.start_interval),
                ("Retries", h.retries),
            ] {
                if v != 0 {
                    w.key(k);
                    w.raw(&v.to_string());
                }
            }
            w.close('}');
        }
        if !self.on_build.is_empty() {
            w.key("OnBuild");
            w.strings(&self.on_build);
        }
        if !self.shell.is_empty() {
            w.key("Shell");
            w.strings(&self.shell);
        }
        w.close('}');
    }
}

/// A tiny JSON writer with Go's escaping rules.
#[derive(Default)]
struct JsonWriter {
    out: String,
    first: Vec<bool>,
}

impl JsonWriter {
    fn open(&mut self, c: char) {
        self.out.push(c);
        self.first.push(true);
    }

    fn close(&mut self, c: char) {
        self.out.push(c);
        self.first.pop();
    }

    fn item(&mut self) {
        if let Some(first) = self.first.last_mut() {
            if !*first {
                self.out.push(',');
            }
            *first = false;
        }
    }

    fn key(&mut self, k: &str) {
        self.item();
        go_quote_into(&mut self.out, k);
        self.out.push(':');
    }

    fn string(&mut self, s: &str) {
        go_quote_into(&mut self.out, s);
    }

    fn raw(&mut self, s: &str) {
        self.out.push_str(s);
    }

    fn strings(&mut self, v: &[String]) {
        self.open('[');
        for s in v {
            self.item();
            go_quote_into(&mut self.out, s);
        }
        self.close(']');
    }

    fn empty_objects<'a>(&mut self, keys: impl Iterator<Item = &'a String>) {
        self.open('{');
        for k in keys {
            self.key(k);
            self.raw("{}");
        }
        self.close('}');
    }
}

/// Quote a string as Go's `encoding/json` does (HTML-safe escaping).
pub fn go_quote_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON array of strings as Go writes it (`json.Marshal([]string)`).
pub fn go_json_strings(v: &[String]) -> String {
    let mut w = JsonWriter::default();
    w.strings(v);
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_config_in_go_order() {
        let raw = r#"{"created":"2023-11-14T22:13:20Z","architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:00"]},"history":[{"created":"2023-11-14T22:13:20Z","created_by":"x <y>"}]}"#;
        let img = Image::parse(raw.as_bytes()).unwrap();
        assert_eq!(
            img.to_json(),
            r#"{"created":"2023-11-14T22:13:20Z","architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:00"]},"history":[{"created":"2023-11-14T22:13:20Z","created_by":"x \u003cy\u003e"}],"config":{"Env":["PATH=/bin"],"Cmd":["sh"]}}"#
        );
        assert!(!img.is_scratch());
        let empty = Image::empty("linux", "amd64", "");
        assert!(empty.to_json().contains(r#""diff_ids":null"#));
    }
}
