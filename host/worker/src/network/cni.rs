//! Running CNI plugins as libcni runs them (the CNI spec's "network configuration list"
//! semantics): ADD runs each plugin of a list in order, handing each the previous one's
//! result; DEL runs them in reverse with the cached result. A plugin is an executable found
//! in the plugin directories, driven by `CNI_*` variables, its config on stdin and its
//! result (or error) on stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// A network: a list of plugin configs, attached as one interface.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct NetworkList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
    /// The interface it is attached as (`lo`, `eth0`, ...).
    pub ifname: String,
}

/// Where one namespace is attached.
pub(crate) struct Attachment<'a> {
    /// `CNI_CONTAINERID`.
    pub id: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a Path,
    /// `CNI_ARGS`.
    pub args: &'a str,
}

/// The plugin directories (`CNI_PATH`).
#[derive(Clone, Debug)]
pub(crate) struct Plugins {
    pub dirs: Vec<PathBuf>,
}

impl Plugins {
    /// The executable of plugin `kind`.
    pub fn find(&self, kind: &str) -> Result<PathBuf, String> {
        if kind.is_empty() || kind.contains('/') {
            return Err(format!("invalid CNI plugin type {kind:?}"));
        }
        self.dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "failed to find CNI plugin {kind:?} in {} (apt-get install containernetworking-plugins, and set cniBinaryPath = \"/usr/lib/cni\")",
                    self.path()
                )
            })
    }

    fn path(&self) -> String {
        self.dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl NetworkList {
    /// Read a config file: a `.conflist` is a list; anything else is one plugin's config,
    /// taken as a list of one (as libcni upgrades it).
    pub fn from_file(path: &Path, ifname: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("failed to read cni config {:?}: {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("cni config {:?}: {e}", path.display()))?;
        let field = |key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default();
        let (name, version) = (field("name").to_string(), field("cniVersion").to_string());
        let plugins = if path.extension().is_some_and(|e| e == "conflist") {
            v.get("plugins")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| format!("cni config {:?} has no plugins list", path.display()))?
        } else {
            if v.get("plugins").is_some() {
                return Err(format!(
                    "cni config {:?} is a list of plugins: name it .conflist",
                    path.display()
                ));
            }
            vec![v.clone()]
        };
        if name.is_empty() || plugins.is_empty() {
            return Err(format!(
                "cni config {:?} needs a name and a plugin",
                path.display()
            ));
        }
        Ok(NetworkList {
            name,
            cni_version: if version.is_empty() {
                "0.4.0".into()
            } else {
                version
            },
            plugins,
            ifname: ifname.to_string(),
        })
    }

    /// The config a plugin gets on stdin.
    fn plugin_config(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        conf["name"] = json!(self.name);
        conf["cniVersion"] = json!(self.cni_version);
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        conf
    }

    /// Attach: every plugin in order. On failure, what was done is undone (DEL), so
    /// nothing half set up is left behind.
    pub fn add(&self, plugins: &Plugins, at: &Attachment<'_>) -> Result<Value, String> {
        let mut result: Option<Value> = None;
        for plugin in &self.plugins {
            let conf = self.plugin_config(plugin, result.as_ref());
            match exec(plugins, &conf, "ADD", at, &self.ifname) {
                Ok(out) => result = out.or(result),
                Err(e) => {
                    let _ = self.del(plugins, at, result.as_ref());
                    return Err(e);
                }
            }
        }
        Ok(result.unwrap_or_else(|| json!({"cniVersion": self.cni_version})))
    }

    /// Detach: every plugin in reverse order, with the result of the ADD; all are tried.
    pub fn del(
        &self,
        plugins: &Plugins,
        at: &Attachment<'_>,
        result: Option<&Value>,
    ) -> Result<(), String> {
        let mut first = None;
        for plugin in self.plugins.iter().rev() {
            let conf = self.plugin_config(plugin, result);
            if let Err(e) = exec(plugins, &conf, "DEL", at, &self.ifname)
                && first.is_none()
            {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Run one plugin; its result, if it printed one.
fn exec(
    plugins: &Plugins,
    conf: &Value,
    command: &str,
    at: &Attachment<'_>,
    ifname: &str,
) -> Result<Option<Value>, String> {
    let kind = conf.get("type").and_then(Value::as_str).unwrap_or_default();
    let binary = plugins.find(kind)?;
    let mut child = Command::new(&binary)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", at.id)
        .env("CNI_NETNS", at.netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_ARGS", at.args)
        .env("CNI_PATH", plugins.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("CNI plugin {}: {e}", binary.display()))?;
    let input = serde_json::to_vec(conf).map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("CNI plugin {}: {e}", binary.display()))?;
    let stdout: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if out.status.success() {
        return Ok(stdout.filter(|v| !v.is_null()));
    }
    // The spec's error object: {"code", "msg", "details"}.
    let message = stdout
        .as_ref()
        .map(|v| {
            let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
            match (field("msg"), field("details")) {
                (m, "") => m.to_string(),
                (m, d) => format!("{m}: {d}"),
            }
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
    let not_found = message.contains("not found") || message.contains("no such");
    if command == "DEL" && not_found {
        return Ok(None);
    }
    Err(format!(
        "plugin type={kind:?} failed ({command}): {message}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_plugin_config_is_a_list_of_one() {
        let dir = tempfile::tempdir().unwrap();
        let single = dir.path().join("cni.json");
        std::fs::write(
            &single,
            r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#,
        )
        .unwrap();
        let l = NetworkList::from_file(&single, "eth0").unwrap();
        assert_eq!((l.name.as_str(), l.plugins.len()), ("n", 1));
        let list = dir.path().join("x.conflist");
        std::fs::write(
            &list,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"loopback"},{"type":"bridge"}]}"#,
        )
        .unwrap();
        assert_eq!(
            NetworkList::from_file(&list, "eth1").unwrap().plugins.len(),
            2
        );
        std::fs::write(&single, r#"{"name":"n","plugins":[]}"#).unwrap();
        assert!(
            NetworkList::from_file(&single, "eth0")
                .unwrap_err()
                .contains(".conflist")
        );
        assert!(
            NetworkList::from_file(&dir.path().join("none.json"), "eth0")
                .unwrap_err()
                .contains("failed to read cni config")
        );
    }

    #[test]
    fn plugins_are_chained_and_removed_in_reverse() {
        // Two fake plugins that log their calls and pass a result along.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        for name in ["one", "two"] {
            let script = format!(
                "#!/bin/sh\nconf=$(cat)\necho \"$CNI_COMMAND {name} $CNI_IFNAME $CNI_CONTAINERID $conf\" >> {}\n\
                 [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.1.0.2/16\"}}],\"by\":\"{name}\"}}'\nexit 0\n",
                log.display()
            );
            let p = dir.path().join(name);
            std::fs::write(&p, script).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let list = NetworkList {
            name: "net".into(),
            cni_version: "1.0.0".into(),
            plugins: vec![json!({"type": "one"}), json!({"type": "two"})],
            ifname: "eth0".into(),
        };
        let plugins = Plugins {
            dirs: vec![dir.path().to_path_buf()],
        };
        let at = Attachment {
            id: "abc",
            netns: Path::new("/nonexistent"),
            args: "",
        };
        let result = list.add(&plugins, &at).unwrap();
        assert_eq!(result["by"], "two");
        list.del(&plugins, &at, Some(&result)).unwrap();
        let calls = std::fs::read_to_string(&log).unwrap();
        let order: Vec<String> = calls
            .lines()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(order, ["ADD one", "ADD two", "DEL two", "DEL one"]);
        // The second plugin got the first one's result; DEL got the final result.
        let second: Value =
            serde_json::from_str(calls.lines().nth(1).unwrap().splitn(5, ' ').nth(4).unwrap())
                .unwrap();
        assert_eq!(second["prevResult"]["by"], "one");
        assert_eq!(second["name"], "net");
        assert!(calls.lines().all(|l| l.contains(" eth0 abc ")));
        // A missing plugin names itself and the fix.
        let missing = NetworkList {
            plugins: vec![json!({"type": "nope"})],
            ..list
        };
        let e = missing.add(&plugins, &at).unwrap_err();
        assert!(e.contains("failed to find CNI plugin \"nope\""), "{e}");
    }
}
