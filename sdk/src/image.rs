//! The OCI image config a frontend returns as `containerimage.config`: start from the base
//! image's (what [`crate::Client::resolve_image_config`] gave) or from scratch, carry its
//! environment, working directory and user into the steps ([`ImageConfig::apply`]), change
//! what the build changes, and return it ([`crate::BuildResult::with_image_config`]).
//! Fields this type does not name (`rootfs`, `created`, healthchecks, ...) are kept as the
//! base image had them.

use serde_json::{Map, Value, json};

use crate::Error;
use crate::llb::{Platform, State};

/// An image config (`application/vnd.oci.image.config.v1+json`).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageConfig(Value);

impl ImageConfig {
    /// The config of an image with no base (`FROM scratch`) for `platform`.
    pub fn scratch(platform: &Platform) -> Self {
        let mut config = json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        if !platform.variant.is_empty() {
            config["variant"] = json!(platform.variant);
        }
        ImageConfig(config)
    }

    /// A base image's config, as the registry holds it.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v @ Value::Object(_)) => Ok(ImageConfig(v)),
            Ok(_) => Err(Error::invalid("an image config must be a JSON object")),
            Err(e) => Err(Error::invalid(format!("image config: {e}"))),
        }
    }

    /// The JSON the result carries as `containerimage.config`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).expect("a JSON value serializes")
    }

    /// The whole config, for fields this type does not name.
    pub fn value_mut(&mut self) -> &mut Value {
        &mut self.0
    }

    /// The runtime part (`config`), created when missing.
    fn runtime(&mut self) -> &mut Map<String, Value> {
        let root = self
            .0
            .as_object_mut()
            .expect("an image config is an object");
        let config = root.entry("config").or_insert_with(|| json!({}));
        if !config.is_object() {
            *config = json!({});
        }
        config.as_object_mut().expect("made an object above")
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get("config").and_then(|c| c.get(key))
    }

    /// `Env` as `(name, value)` pairs, in order.
    pub fn env(&self) -> Vec<(String, String)> {
        self.get("Env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.to_string(), String::new()),
            })
            .collect()
    }

    /// Set one variable of `Env`, in place if it is there, else at the end.
    pub fn set_env(&mut self, name: &str, value: &str) {
        let mut env = self.env();
        match env.iter_mut().find(|(k, _)| k == name) {
            Some(entry) => entry.1 = value.to_string(),
            None => env.push((name.to_string(), value.to_string())),
        }
        let list: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.runtime().insert("Env".into(), json!(list));
    }

    /// `WorkingDir` (empty when unset).
    pub fn working_dir(&self) -> &str {
        self.get("WorkingDir").and_then(Value::as_str).unwrap_or("")
    }

    /// Set `WorkingDir`.
    pub fn set_working_dir(&mut self, dir: &str) {
        self.runtime().insert("WorkingDir".into(), json!(dir));
    }

    /// `User` (empty when unset: root).
    pub fn user(&self) -> &str {
        self.get("User").and_then(Value::as_str).unwrap_or("")
    }

    /// Set `User`.
    pub fn set_user(&mut self, user: &str) {
        self.runtime().insert("User".into(), json!(user));
    }

    /// Set `Entrypoint`; as with Docker's `ENTRYPOINT`, the base image's `Cmd` goes.
    pub fn set_entrypoint(&mut self, entrypoint: &[&str]) {
        let runtime = self.runtime();
        runtime.insert("Entrypoint".into(), json!(entrypoint));
        runtime.insert("Cmd".into(), Value::Null);
    }

    /// Set `Cmd`.
    pub fn set_cmd(&mut self, cmd: &[&str]) {
        self.runtime().insert("Cmd".into(), json!(cmd));
    }

    /// Add or replace a label.
    pub fn set_label(&mut self, name: &str, value: &str) {
        let runtime = self.runtime();
        let labels = runtime.entry("Labels").or_insert_with(|| json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        labels
            .as_object_mut()
            .expect("made an object above")
            .insert(name.into(), json!(value));
    }

    /// Record a step in `history`. `empty_layer` is true for a step that changes only the
    /// config (as `ENV` does), so that history and layers stay paired as OCI requires.
    pub fn add_history(&mut self, created_by: &str, comment: &str, empty_layer: bool) {
        let mut entry = json!({"created_by": created_by});
        if !comment.is_empty() {
            entry["comment"] = json!(comment);
        }
        if empty_layer {
            entry["empty_layer"] = json!(true);
        }
        let root = self
            .0
            .as_object_mut()
            .expect("an image config is an object");
        let history = root.entry("history").or_insert_with(|| json!([]));
        match history.as_array_mut() {
            Some(list) => list.push(entry),
            None => *history = json!([entry]),
        }
    }

    /// `state` with this config's environment, working directory and user, as the steps of
    /// an image built on it see them.
    pub fn apply(&self, mut state: State) -> State {
        for (k, v) in self.env() {
            state = state.env(k, v);
        }
        if !self.working_dir().is_empty() {
            state = state.dir(self.working_dir());
        }
        if !self.user().is_empty() {
            state = state.user(self.user());
        }
        state
    }
}

/// Unix seconds as an image config writes times (`2024-01-01T00:00:00Z`), for a frontend
/// that dates its history entries with `SOURCE_DATE_EPOCH` as BuildKit's frontends do.
pub fn rfc3339_utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date, counting from 0000-03-01 so each leap day ends its cycle.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates_cross_leap_days_and_centuries() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_704_067_200), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59Z");
    }

    const BASE: &[u8] = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin","LANG=C"],"Cmd":["sh"],"WorkingDir":"/srv","User":"app"},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"base"}]}"#;

    #[test]
    fn starts_from_the_base_and_keeps_what_it_does_not_name() {
        let mut config = ImageConfig::parse(BASE).unwrap();
        config.set_env("LANG", "C.UTF-8");
        config.set_env("APP", "1");
        config.set_entrypoint(&["/app"]);
        config.set_label("org.example", "yes");
        config.add_history("RUN make", "", false);
        config.add_history("ENV APP=1", "", true);
        let out: Value = serde_json::from_slice(&config.to_json()).unwrap();
        assert_eq!(
            out["config"]["Env"],
            json!(["PATH=/usr/bin", "LANG=C.UTF-8", "APP=1"])
        );
        assert_eq!(out["config"]["Entrypoint"], json!(["/app"]));
        assert_eq!(out["config"]["Cmd"], Value::Null);
        assert_eq!(out["config"]["Labels"]["org.example"], "yes");
        assert_eq!(out["rootfs"]["diff_ids"], json!(["sha256:aa"]));
        assert_eq!(out["history"].as_array().unwrap().len(), 3);
        assert_eq!(out["history"][2]["empty_layer"], true);
    }

    #[test]
    fn steps_see_the_base_environment_directory_and_user() {
        let config = ImageConfig::parse(BASE).unwrap();
        let state = config.apply(crate::llb::scratch());
        assert_eq!(state.get_env("LANG"), Some("C"));
        assert_eq!(state.get_dir(), "/srv");
        let scratch = ImageConfig::scratch(&Platform::linux_amd64());
        assert_eq!(scratch.working_dir(), "");
        assert!(scratch.env().is_empty());
        assert!(ImageConfig::parse(b"[1]").is_err());
    }
}
