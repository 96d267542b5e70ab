//! The views `buildctl debug dump-llb` prints: one JSON object per op, and Graphviz.
//!
//! The JSON follows Go's `encoding/json` of BuildKit's types: keys are the proto field
//! names in declaration order, zero values are omitted, set-but-empty messages print as
//! `{}`, enums as numbers, bytes as base64, and the op's oneof sits under `"Op"` (a file
//! action's under `"Action"`, whose indexes are always printed).

use serde_json::{Map, Value, json};

use crate::{LlbError, decode_op, digest_of, pb};

/// A JSON object that skips zero values, like Go's `omitempty`.
struct Obj(Map<String, Value>);

impl Obj {
    fn new() -> Self {
        Obj(Map::new())
    }

    fn s(mut self, k: &str, v: &str) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), json!(v));
        }
        self
    }

    fn i(mut self, k: &str, v: i64) -> Self {
        if v != 0 {
            self.0.insert(k.into(), json!(v));
        }
        self
    }

    fn u(mut self, k: &str, v: u64) -> Self {
        if v != 0 {
            self.0.insert(k.into(), json!(v));
        }
        self
    }

    fn b(mut self, k: &str, v: bool) -> Self {
        if v {
            self.0.insert(k.into(), json!(true));
        }
        self
    }

    fn strs(mut self, k: &str, v: &[String]) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), json!(v));
        }
        self
    }

    fn list(mut self, k: &str, v: Vec<Value>) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), Value::Array(v));
        }
        self
    }

    fn map<V: serde::Serialize>(
        mut self,
        k: &str,
        v: &std::collections::BTreeMap<String, V>,
    ) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), json!(v));
        }
        self
    }

    fn opt(mut self, k: &str, v: Option<Value>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.into(), v);
        }
        self
    }

    fn always(mut self, k: &str, v: Value) -> Self {
        self.0.insert(k.into(), v);
        self
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn platform(p: &pb::Platform) -> Value {
    Obj::new()
        .s("Architecture", &p.architecture)
        .s("OS", &p.os)
        .s("Variant", &p.variant)
        .s("OSVersion", &p.os_version)
        .strs("OSFeatures", &p.os_features)
        .done()
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn secret_like(id: &str, uid: u32, gid: u32, mode: u32, optional: bool) -> Value {
    Obj::new()
        .s("ID", id)
        .i("uid", uid as i64)
        .i("gid", gid as i64)
        .i("mode", mode as i64)
        .b("optional", optional)
        .done()
}

fn exec(e: &pb::ExecOp) -> Value {
    let meta = e.meta.as_ref().map(|m| {
        Obj::new()
            .strs("args", &m.args)
            .strs("env", &m.env)
            .s("cwd", &m.cwd)
            .s("user", &m.user)
            .opt(
                "proxy_env",
                m.proxy_env.as_ref().map(|p| {
                    Obj::new()
                        .s("http_proxy", &p.http_proxy)
                        .s("https_proxy", &p.https_proxy)
                        .s("ftp_proxy", &p.ftp_proxy)
                        .s("no_proxy", &p.no_proxy)
                        .s("all_proxy", &p.all_proxy)
                        .done()
                }),
            )
            .list(
                "extraHosts",
                m.extra_hosts
                    .iter()
                    .map(|h| Obj::new().s("Host", &h.host).s("IP", &h.ip).done())
                    .collect(),
            )
            .s("hostname", &m.hostname)
            .list(
                "ulimit",
                m.ulimit
                    .iter()
                    .map(|u| {
                        Obj::new()
                            .s("Name", &u.name)
                            .i("Soft", u.soft)
                            .i("Hard", u.hard)
                            .done()
                    })
                    .collect(),
            )
            .s("cgroupParent", &m.cgroup_parent)
            .b("removeMountStubsRecursive", m.remove_mount_stubs_recursive)
            .list(
                "validExitCodes",
                m.valid_exit_codes.iter().map(|c| json!(c)).collect(),
            )
            .done()
    });
    let mounts = e
        .mounts
        .iter()
        .map(|m| {
            Obj::new()
                .i("input", m.input)
                .s("selector", &m.selector)
                .s("dest", &m.dest)
                .i("output", m.output)
                .b("readonly", m.readonly)
                .i("mountType", m.mount_type as i64)
                .opt(
                    "TmpfsOpt",
                    m.tmpfs_opt
                        .as_ref()
                        .map(|t| Obj::new().i("size", t.size).done()),
                )
                .opt(
                    "cacheOpt",
                    m.cache_opt.as_ref().map(|c| {
                        Obj::new()
                            .s("ID", &c.id)
                            .i("sharing", c.sharing as i64)
                            .done()
                    }),
                )
                .opt(
                    "secretOpt",
                    m.secret_opt
                        .as_ref()
                        .map(|s| secret_like(&s.id, s.uid, s.gid, s.mode, s.optional)),
                )
                .opt(
                    "SSHOpt",
                    m.ssh_opt
                        .as_ref()
                        .map(|s| secret_like(&s.id, s.uid, s.gid, s.mode, s.optional)),
                )
                .s("resultID", &m.result_id)
                .i("contentCache", m.content_cache as i64)
                .done()
        })
        .collect();
    Obj::new()
        .opt("meta", meta)
        .list("mounts", mounts)
        .i("network", e.network as i64)
        .i("security", e.security as i64)
        .list(
            "secretenv",
            e.secretenv
                .iter()
                .map(|s| {
                    Obj::new()
                        .s("ID", &s.id)
                        .s("name", &s.name)
                        .b("optional", s.optional)
                        .done()
                })
                .collect(),
        )
        .list(
            "cdiDevices",
            e.cdi_devices
                .iter()
                .map(|d| {
                    Obj::new()
                        .s("name", &d.name)
                        .b("optional", d.optional)
                        .done()
                })
                .collect(),
        )
        .done()
}

fn user(u: &pb::UserOpt) -> Value {
    let inner = match &u.user {
        Some(pb::user_opt::User::ByName(n)) => {
            Some(json!({ "byName": Obj::new().s("name", &n.name).i("input", n.input).done() }))
        }
        Some(pb::user_opt::User::ById(id)) => Some(Obj::new().i("byId", *id as i64).done()),
        None => None,
    };
    Obj::new().opt("User", inner).done()
}

fn chown(c: &pb::ChownOpt) -> Value {
    Obj::new()
        .opt("user", c.user.as_ref().map(user))
        .opt("group", c.group.as_ref().map(user))
        .done()
}

fn file_action(a: &pb::FileAction) -> Value {
    use pb::file_action::Action;
    let action = match &a.action {
        Some(Action::Copy(c)) => json!({ "copy": Obj::new()
            .s("src", &c.src)
            .s("dest", &c.dest)
            .opt("owner", c.owner.as_ref().map(chown))
            .i("mode", c.mode as i64)
            .b("followSymlink", c.follow_symlink)
            .b("dirCopyContents", c.dir_copy_contents)
            .b("attemptUnpackDockerCompatibility", c.attempt_unpack_docker_compatibility)
            .b("createDestPath", c.create_dest_path)
            .b("allowWildcard", c.allow_wildcard)
            .b("allowEmptyWildcard", c.allow_empty_wildcard)
            .i("timestamp", c.timestamp)
            .strs("include_patterns", &c.include_patterns)
            .strs("exclude_patterns", &c.exclude_patterns)
            .b("alwaysReplaceExistingDestPaths", c.always_replace_existing_dest_paths)
            .s("modeStr", &c.mode_str)
            .strs("required_paths", &c.required_paths)
            .done() }),
        Some(Action::Mkfile(m)) => json!({ "mkfile": Obj::new()
            .s("path", &m.path)
            .i("mode", m.mode as i64)
            .s("data", &base64(&m.data))
            .opt("owner", m.owner.as_ref().map(chown))
            .i("timestamp", m.timestamp)
            .done() }),
        Some(Action::Mkdir(m)) => json!({ "mkdir": Obj::new()
            .s("path", &m.path)
            .i("mode", m.mode as i64)
            .b("makeParents", m.make_parents)
            .opt("owner", m.owner.as_ref().map(chown))
            .i("timestamp", m.timestamp)
            .done() }),
        Some(Action::Rm(r)) => json!({ "rm": Obj::new()
            .s("path", &r.path)
            .b("allowNotFound", r.allow_not_found)
            .b("allowWildcard", r.allow_wildcard)
            .done() }),
        Some(Action::Symlink(s)) => json!({ "symlink": Obj::new()
            .s("oldpath", &s.oldpath)
            .s("newpath", &s.newpath)
            .opt("owner", s.owner.as_ref().map(chown))
            .i("timestamp", s.timestamp)
            .done() }),
        None => json!({}),
    };
    Obj::new()
        .always("input", json!(a.input))
        .always("secondaryInput", json!(a.secondary_input))
        .always("output", json!(a.output))
        .always("Action", action)
        .done()
}

fn op_kind(op: &pb::op::Op) -> Value {
    use pb::op::Op;
    match op {
        Op::Exec(e) => json!({ "exec": exec(e) }),
        Op::Source(s) => {
            json!({ "source": Obj::new().s("identifier", &s.identifier).map("attrs", &s.attrs).done() })
        }
        Op::File(f) => json!({ "file": Obj::new()
            .list("actions", f.actions.iter().map(file_action).collect())
            .done() }),
        Op::Build(b) => json!({ "build": Obj::new()
            .i("builder", b.builder)
            .opt(
                "inputs",
                (!b.inputs.is_empty()).then(|| {
                    Value::Object(b.inputs.iter().map(|(k, v)| (k.clone(), Obj::new().i("input", v.input).done())).collect())
                }),
            )
            .opt("def", b.def.as_ref().map(definition_json))
            .map("attrs", &b.attrs)
            .done() }),
        Op::Merge(m) => json!({ "merge": Obj::new()
            .list("inputs", m.inputs.iter().map(|i| Obj::new().i("input", i.input).done()).collect())
            .done() }),
        Op::Diff(d) => json!({ "diff": Obj::new()
            .opt("lower", d.lower.as_ref().map(|l| Obj::new().i("input", l.input).done()))
            .opt("upper", d.upper.as_ref().map(|u| Obj::new().i("input", u.input).done()))
            .done() }),
        Op::Passthrough(p) => json!({ "passthrough": Obj::new()
            .s("id", &p.id)
            .list("outputs", p.outputs.iter().map(|o| json!(o)).collect())
            .done() }),
    }
}

fn op_json(op: &pb::Op) -> Value {
    Obj::new()
        .list(
            "inputs",
            op.inputs
                .iter()
                .map(|i| Obj::new().s("digest", &i.digest).i("index", i.index).done())
                .collect(),
        )
        .always("Op", op.op.as_ref().map_or(json!({}), op_kind))
        .opt("platform", op.platform.as_ref().map(platform))
        .opt(
            "constraints",
            op.constraints
                .as_ref()
                .map(|c| Obj::new().strs("filter", &c.filter).done()),
        )
        .done()
}

fn metadata_json(m: &pb::OpMetadata) -> Value {
    Obj::new()
        .b("ignore_cache", m.ignore_cache)
        .map("description", &m.description)
        .opt(
            "export_cache",
            m.export_cache
                .as_ref()
                .map(|e| Obj::new().b("Value", e.value).done()),
        )
        .map("caps", &m.caps)
        .opt(
            "progress_group",
            m.progress_group.as_ref().map(|g| {
                Obj::new()
                    .s("id", &g.id)
                    .s("name", &g.name)
                    .b("weak", g.weak)
                    .done()
            }),
        )
        .opt(
            "linux_resources",
            m.linux_resources.as_ref().map(|r| {
                Obj::new()
                    .i("memory", r.memory)
                    .i("memorySwap", r.memory_swap)
                    .u("cpuShares", r.cpu_shares)
                    .u("cpuPeriod", r.cpu_period)
                    .i("cpuQuota", r.cpu_quota)
                    .s("cpusetCpus", &r.cpuset_cpus)
                    .s("cpusetMems", &r.cpuset_mems)
                    .done()
            }),
        )
        .done()
}

/// Go's encoder escapes `<`, `>`, `&` and the JSON-unsafe line separators.
fn go_escape(s: String) -> String {
    if !s.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return s;
    }
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn position(p: &pb::Position) -> Value {
    Obj::new()
        .i("line", p.line as i64)
        .i("character", p.character as i64)
        .done()
}

fn source_json(s: &pb::Source) -> Value {
    let locations = (!s.locations.is_empty()).then(|| {
        let map = s.locations.iter().map(|(k, l)| {
            let list = l
                .locations
                .iter()
                .map(|loc| {
                    let ranges = loc
                        .ranges
                        .iter()
                        .map(|r| {
                            Obj::new()
                                .opt("start", r.start.as_ref().map(position))
                                .opt("end", r.end.as_ref().map(position))
                                .done()
                        })
                        .collect();
                    Obj::new()
                        .i("sourceIndex", loc.source_index as i64)
                        .list("ranges", ranges)
                        .done()
                })
                .collect();
            (k.clone(), Obj::new().list("locations", list).done())
        });
        Value::Object(map.collect())
    });
    let infos = s
        .infos
        .iter()
        .map(|i| {
            Obj::new()
                .s("filename", &i.filename)
                .s("data", &base64(&i.data))
                .opt("definition", i.definition.as_ref().map(definition_json))
                .s("language", &i.language)
                .done()
        })
        .collect();
    Obj::new()
        .opt("locations", locations)
        .list("infos", infos)
        .done()
}

/// A whole `Definition` as Go's `encoding/json` prints it (inside a `BuildOp`).
fn definition_json(d: &pb::Definition) -> Value {
    let metadata = (!d.metadata.is_empty()).then(|| {
        Value::Object(
            d.metadata
                .iter()
                .map(|(k, m)| (k.clone(), metadata_json(m)))
                .collect(),
        )
    });
    Obj::new()
        .list("def", d.def.iter().map(|x| json!(base64(x))).collect())
        .opt("metadata", metadata)
        .opt("Source", d.source.as_ref().map(source_json))
        .done()
}

/// One line per element of `def`, in order, as `buildctl debug dump-llb` prints it:
/// `{"Op":…,"Digest":"sha256:…","OpMetadata":…}`. An op without metadata gets `{}`.
pub fn dump_json_lines(def: &pb::Definition) -> Result<Vec<String>, LlbError> {
    def.def
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let op = decode_op(i, bytes)?;
            let digest = digest_of(bytes);
            let mut line = Map::new();
            line.insert("Op".into(), op_json(&op));
            line.insert("Digest".into(), json!(digest.as_str()));
            let meta = def
                .metadata
                .get(digest.as_str())
                .map_or(json!({}), metadata_json);
            line.insert("OpMetadata".into(), meta);
            Ok(go_escape(Value::Object(line).to_string()))
        })
        .collect()
}

/// A string quoted like Go's `%q` (`strconv.Quote`), which Graphviz reads as well.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What `buildctl debug dump-llb --dot` shows for an op: a description and a node shape.
fn describe(op: &pb::Op) -> Option<(String, &'static str)> {
    use pb::file_action::Action;
    use pb::op::Op;
    Some(match op.op.as_ref()? {
        Op::Source(s) => (s.identifier.clone(), "ellipse"),
        Op::Exec(e) => (
            e.meta
                .as_ref()
                .map(|m| m.args.join(" "))
                .unwrap_or_default(),
            "box",
        ),
        Op::Build(_) => ("build".into(), "box3d"),
        Op::Merge(_) => ("merge".into(), "invtriangle"),
        Op::Diff(_) => ("diff".into(), "doublecircle"),
        Op::Passthrough(p) => (format!("passthrough{{id={}}}", p.id), "box"),
        Op::File(f) => {
            let names: Vec<String> = f
                .actions
                .iter()
                .map(|a| match &a.action {
                    Some(Action::Copy(c)) => format!("copy{{src={}, dest={}}}", c.src, c.dest),
                    Some(Action::Mkfile(m)) => format!("mkfile{{path={}}}", m.path),
                    Some(Action::Mkdir(m)) => format!("mkdir{{path={}}}", m.path),
                    Some(Action::Rm(r)) => format!("rm{{path={}}}", r.path),
                    Some(Action::Symlink(s)) => {
                        format!("symlink{{oldpath={}, newpath={}}}", s.oldpath, s.newpath)
                    }
                    None => String::new(),
                })
                .collect();
            (names.join(","), "note")
        }
    })
}

/// The graph in Graphviz, in the style of `buildctl debug dump-llb --dot`: a `digraph`
/// with one node per element of `def` (id: the digest; label: the short digest and a
/// description of the op; shape by kind; the input-only terminal op as plain text), then
/// one edge per input, from the producing op to its user, labelled with the mount point
/// when an exec mounts that input somewhere other than `/`.
pub fn to_dot(def: &pb::Definition) -> Result<String, LlbError> {
    use std::fmt::Write;
    let mut ops = Vec::with_capacity(def.def.len());
    for (i, bytes) in def.def.iter().enumerate() {
        ops.push((digest_of(bytes), decode_op(i, bytes)?));
    }
    let mut out = String::from("digraph {\n");
    for (digest, op) in &ops {
        let (label, shape) = match describe(op) {
            Some((text, shape)) => (format!("{}\n{text}", digest.short()), shape),
            None => (digest.to_string(), "plaintext"),
        };
        let _ = writeln!(
            out,
            "  {} [label={} shape={}];",
            go_quote(digest.as_str()),
            go_quote(&label),
            go_quote(shape)
        );
    }
    for (digest, op) in &ops {
        for (i, input) in op.inputs.iter().enumerate() {
            let mut label = "";
            if let Some(pb::op::Op::Exec(e)) = &op.op {
                for m in &e.mounts {
                    if m.input == i as i64 && m.dest != "/" {
                        label = &m.dest;
                    }
                }
            }
            let _ = writeln!(
                out,
                "  {} -> {} [label={}];",
                go_quote(&input.digest),
                go_quote(digest.as_str()),
                go_quote(label)
            );
        }
    }
    out.push_str("}\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_like_go() {
        assert_eq!(base64(b"hi there\n"), "aGkgdGhlcmUK");
        assert_eq!(base64(b"file b\n"), "ZmlsZSBiCg==");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
