//! Conformance with BuildKit's Dockerfile frontend (`dockerfile2llb`), using the golden
//! corpus in `shared/conformance/dockerfile`.
//!
//! Every case runs natively against `buildwit_sdk::testing::MemoryGateway`. The SDK yields
//! WIT types, not protobuf, so the definition is turned into the JSON shape of
//! `buildctl debug dump-llb` (with op positions instead of digests, on both sides) and
//! compared op by op; the image configs are compared as JSON values; invalid cases compare
//! the error message.
//!
//! The test prints a summary table and fails only when a case that is not listed in
//! `KNOWN_DIFFERENT` differs, so it is honest about the gaps and stable in CI.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use buildwit_dockerfile::frontend::Dockerfile;
use buildwit_sdk::llb::{
    ChownOpt, Definition, FileActionKind, MountContentCache, MountType, NetMode, OpKind,
    OpMetadata, Platform, SecurityMode, UserOpt,
};
use buildwit_sdk::testing::{MemoryGateway, run};
use serde_json::{Map, Value, json};

/// Cases that do not match yet, with the reason.
const KNOWN_DIFFERENT: &[(&str, &str)] = &[];

fn corpus() -> PathBuf {
    PathBuf::from(concat!(
        env!("BUILDWIT_SHARED_DIR"),
        "/conformance/dockerfile"
    ))
}

#[derive(Default)]
struct Tally {
    llb: (usize, usize),
    config: (usize, usize),
    invalid: (usize, usize),
    failures: Vec<(String, String)>,
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn conformance_corpus() {
    let root = corpus();
    if !root.exists() {
        eprintln!(
            "conformance corpus not found at {}; skipping",
            root.display()
        );
        return;
    }
    let images = std::fs::read_to_string(root.join("images.json")).expect("images.json");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Dockerfile").exists())
        .collect();
    cases.sort();

    let only = std::env::var("CONFORMANCE_CASE").ok();
    let verbose = std::env::var("CONFORMANCE_VERBOSE").is_ok() || only.is_some();
    let mut t = Tally::default();
    let mut rows = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let (status, detail) = run_case(case, &images, &mut t);
        if verbose && !detail.is_empty() {
            eprintln!("--- {name}: {detail}");
        }
        if status != "ok" {
            t.failures.push((
                name.clone(),
                detail.lines().next().unwrap_or_default().to_string(),
            ));
        }
        rows.push((name, status));
    }

    eprintln!("\n{:<40} result", "case");
    for (name, status) in &rows {
        eprintln!("{name:<40} {status}");
    }
    eprintln!("\nDockerfile conformance summary");
    eprintln!("  exact LLB matches:      {}/{}", t.llb.0, t.llb.1);
    eprintln!("  image-config matches:   {}/{}", t.config.0, t.config.1);
    eprintln!("  invalid-message matches: {}/{}", t.invalid.0, t.invalid.1);

    let known: HashMap<&str, &str> = KNOWN_DIFFERENT.iter().copied().collect();
    let regressions: Vec<&(String, String)> = t
        .failures
        .iter()
        .filter(|(n, _)| !known.contains_key(n.as_str()))
        .collect();
    let fixed: Vec<&str> = known
        .keys()
        .filter(|k| rows.iter().any(|(n, s)| n == *k && *s == "ok"))
        .copied()
        .collect();
    if !fixed.is_empty() {
        eprintln!("\nnow matching (remove from KNOWN_DIFFERENT): {fixed:?}");
    }
    assert!(
        regressions.is_empty(),
        "conformance regressions (not in KNOWN_DIFFERENT):\n{}",
        regressions
            .iter()
            .map(|(n, d)| format!("  {n}: {d}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn run_case(case: &Path, images: &str, t: &mut Tally) -> (&'static str, String) {
    let dockerfile = std::fs::read(case.join("Dockerfile")).unwrap();
    // dockerfile2llb converts in place and never forwards `# syntax=`; `cmdline` tells the
    // frontend it was already forwarded to.
    let mut gw = MemoryGateway::new()
        .option("cmdline", "dockerfile2llb")
        .file("dockerfile", "Dockerfile", dockerfile)
        .images_json(images)
        .unwrap();
    if let Ok(target) = std::fs::read_to_string(case.join("target")) {
        gw = gw.option("target", target.lines().next().unwrap_or_default().trim());
    }
    let expected_llb = std::fs::read_to_string(case.join("expected.llb.jsonl")).ok();
    if let Some(unique) = expected_llb.as_deref().and_then(local_unique) {
        gw = gw.option("buildwit:local-unique", &unique);
    }
    let result = run::<Dockerfile>(&gw);

    if let Ok(msg) = std::fs::read_to_string(case.join("expected.error-message.txt")) {
        t.invalid.1 += 1;
        let msg = msg.trim_end_matches('\n');
        return match result {
            Err(e) if e.message == msg => {
                t.invalid.0 += 1;
                ("ok", String::new())
            }
            Err(e) => (
                "message",
                format!("error {:?}, expected {:?}", e.message, msg),
            ),
            Ok(_) => ("no-error", format!("succeeded, expected error {msg:?}")),
        };
    }

    t.llb.1 += 1;
    t.config.1 += 1;
    let out = match result {
        Ok(out) => out,
        Err(e) => return ("error", format!("unexpected error: {}", e.message)),
    };

    // LLB
    let expected: Vec<Value> = expected_llb
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected = normalize_expected(expected);
    let actual = out.definition.as_ref().map(dump).unwrap_or_default();
    let mut detail = String::new();
    let llb_ok = if expected == actual {
        true
    } else {
        detail.push_str(&format!(
            "LLB: {} ops expected, {} produced\n",
            expected.len(),
            actual.len()
        ));
        for i in 0..expected.len().max(actual.len()) {
            let (e, a) = (expected.get(i), actual.get(i));
            if e != a {
                detail.push_str(&format!(
                    "  op {i}:\n    expected {}\n    actual   {}\n",
                    e.map(Value::to_string).unwrap_or_default(),
                    a.map(Value::to_string).unwrap_or_default()
                ));
                break;
            }
        }
        false
    };
    if llb_ok {
        t.llb.0 += 1;
    }

    // Image config (and the base image config)
    let expected_config: Value = serde_json::from_str(
        &std::fs::read_to_string(case.join("expected.image-config.json")).unwrap(),
    )
    .unwrap();
    let expected_base: Value = serde_json::from_str(
        &std::fs::read_to_string(case.join("expected.base-image-config.json")).unwrap(),
    )
    .unwrap();
    let config: Value = out
        .metadata_str("containerimage.config")
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let base: Value = out
        .metadata_str("containerimage.base.config")
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let config_ok = config == expected_config && base == expected_base;
    if config_ok {
        t.config.0 += 1;
    } else if config != expected_config {
        detail.push_str(&format!(
            "config:\n    expected {expected_config}\n    actual   {config}\n"
        ));
    } else {
        detail.push_str(&format!(
            "base config:\n    expected {expected_base}\n    actual   {base}\n"
        ));
    }
    match (llb_ok, config_ok) {
        (true, true) => ("ok", detail),
        (false, true) => ("llb", detail),
        (true, false) => ("config", detail),
        (false, false) => ("llb+config", detail),
    }
}

/// The `local.unique` value of the expected context source, if any.
fn local_unique(jsonl: &str) -> Option<String> {
    let i = jsonl.find("\"local.unique\":\"")? + "\"local.unique\":\"".len();
    Some(jsonl[i..].split('"').next()?.to_string())
}

/// Expected ops with digests replaced by positions and random ids by placeholders.
fn normalize_expected(lines: Vec<Value>) -> Vec<Value> {
    let positions: HashMap<String, usize> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (l["Digest"].as_str().unwrap_or_default().to_string(), i))
        .collect();
    lines
        .into_iter()
        .map(|mut l| {
            if let Some(obj) = l.as_object_mut() {
                obj.remove("Digest");
            }
            if let Some(inputs) = l
                .get_mut("Op")
                .and_then(|o| o.get_mut("inputs"))
                .and_then(Value::as_array_mut)
            {
                for input in inputs {
                    let d = input["digest"].as_str().unwrap_or_default().to_string();
                    input["digest"] = json!(format!(
                        "<op{}>",
                        positions.get(&d).copied().unwrap_or(usize::MAX)
                    ));
                }
            }
            if let Some(pg) = l["OpMetadata"]
                .get_mut("progress_group")
                .and_then(Value::as_object_mut)
            {
                pg.insert("id".into(), json!("<pgid>"));
            }
            l
        })
        .collect()
}

/// Put `value` under `key` unless it is a JSON zero value (Go's `omitempty`).
fn put(m: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0) || n.as_u64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    };
    if !empty {
        m.insert(key.into(), value);
    }
}

fn obj(f: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut m = Map::new();
    f(&mut m);
    Value::Object(m)
}

fn platform_json(p: &Platform) -> Value {
    obj(|m| {
        put(m, "Architecture", json!(p.architecture));
        put(m, "OS", json!(p.os));
        put(m, "Variant", json!(p.variant));
        put(m, "OSVersion", json!(p.os_version));
        put(m, "OSFeatures", json!(p.os_features));
    })
}

fn user_opt_json(u: &UserOpt) -> Value {
    match u {
        UserOpt::ById(id) => json!({"User": {"byId": id}}),
        UserOpt::ByName(n) => json!({"User": {"byName": obj(|m| {
            put(m, "name", json!(n.name));
            put(m, "input", json!(n.input));
        })}}),
    }
}

fn owner_json(o: &Option<ChownOpt>) -> Value {
    match o {
        None => Value::Null,
        Some(o) => obj(|m| {
            if let Some(u) = &o.user {
                m.insert("user".into(), user_opt_json(u));
            }
            if let Some(g) = &o.group {
                m.insert("group".into(), user_opt_json(g));
            }
        }),
    }
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn op_kind_json(kind: &OpKind) -> Value {
    match kind {
        OpKind::Source(s) => json!({"source": obj(|m| {
            put(m, "identifier", json!(s.identifier));
            if !s.attrs.is_empty() {
                let attrs: BTreeMap<&str, &str> = s.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                m.insert("attrs".into(), json!(attrs));
            }
        })}),
        OpKind::Exec(e) => json!({"exec": obj(|m| {
            let meta = &e.meta;
            m.insert("meta".into(), obj(|mm| {
                put(mm, "args", json!(meta.args));
                put(mm, "env", json!(meta.env));
                put(mm, "cwd", json!(meta.cwd));
                put(mm, "user", json!(meta.user));
                if let Some(p) = &meta.proxy_env {
                    mm.insert("proxy_env".into(), obj(|pm| {
                        put(pm, "http_proxy", json!(p.http_proxy));
                        put(pm, "https_proxy", json!(p.https_proxy));
                        put(pm, "ftp_proxy", json!(p.ftp_proxy));
                        put(pm, "no_proxy", json!(p.no_proxy));
                        put(pm, "all_proxy", json!(p.all_proxy));
                    }));
                }
                put(mm, "extraHosts", Value::Array(meta.extra_hosts.iter().map(|h| obj(|hm| {
                    put(hm, "Host", json!(h.host));
                    put(hm, "IP", json!(h.ip));
                })).collect()));
                put(mm, "hostname", json!(meta.hostname));
                put(mm, "ulimit", Value::Array(meta.ulimits.iter().map(|u| obj(|um| {
                    put(um, "Name", json!(u.name));
                    put(um, "Soft", json!(u.soft));
                    put(um, "Hard", json!(u.hard));
                })).collect()));
                put(mm, "cgroupParent", json!(meta.cgroup_parent));
                put(mm, "removeMountStubsRecursive", json!(meta.remove_mount_stubs_recursive));
                put(mm, "validExitCodes", json!(meta.valid_exit_codes));
            }));
            put(m, "mounts", Value::Array(e.mounts.iter().map(|mt| obj(|mm| {
                put(mm, "input", json!(mt.input));
                put(mm, "selector", json!(mt.selector));
                put(mm, "dest", json!(mt.dest));
                put(mm, "output", json!(mt.output));
                put(mm, "readonly", json!(mt.readonly));
                let ty = match mt.mount_type {
                    MountType::Bind => 0,
                    MountType::Secret => 1,
                    MountType::Ssh => 2,
                    MountType::Cache => 3,
                    MountType::Tmpfs => 4,
                };
                put(mm, "mountType", json!(ty));
                if mt.mount_type == MountType::Tmpfs {
                    mm.insert("TmpfsOpt".into(), obj(|tm| put(tm, "size", json!(mt.tmpfs_size.unwrap_or(0)))));
                }
                if let Some(c) = &mt.cache_opt {
                    mm.insert("cacheOpt".into(), obj(|cm| {
                        put(cm, "ID", json!(c.id));
                        let sharing = match c.sharing {
                            buildwit_sdk::llb::CacheSharing::Shared => 0,
                            buildwit_sdk::llb::CacheSharing::Private => 1,
                            buildwit_sdk::llb::CacheSharing::Locked => 2,
                        };
                        put(cm, "sharing", json!(sharing));
                    }));
                }
                for (key, opt) in [("secretOpt", &mt.secret_opt), ("SSHOpt", &mt.ssh_opt)] {
                    if let Some(s) = opt {
                        mm.insert(key.into(), obj(|sm| {
                            put(sm, "ID", json!(s.id));
                            put(sm, "uid", json!(s.uid));
                            put(sm, "gid", json!(s.gid));
                            put(sm, "mode", json!(s.mode));
                            put(sm, "optional", json!(s.optional));
                        }));
                    }
                }
                put(mm, "resultID", json!(mt.result_id));
                let cc = match mt.content_cache {
                    MountContentCache::Default => 0,
                    MountContentCache::On => 1,
                    MountContentCache::Off => 2,
                };
                put(mm, "contentCache", json!(cc));
            })).collect()));
            let net = match e.network {
                NetMode::Unset => 0,
                NetMode::Host => 1,
                NetMode::None => 2,
            };
            put(m, "network", json!(net));
            put(m, "security", json!(match e.security {
                SecurityMode::Sandbox => 0,
                SecurityMode::Insecure => 1,
            }));
            put(m, "secretenv", Value::Array(e.secret_env.iter().map(|s| obj(|sm| {
                put(sm, "ID", json!(s.id));
                put(sm, "name", json!(s.name));
                put(sm, "optional", json!(s.optional));
            })).collect()));
            put(m, "cdiDevices", Value::Array(e.cdi_devices.iter().map(|d| obj(|dm| {
                put(dm, "name", json!(d.name));
                put(dm, "optional", json!(d.optional));
            })).collect()));
        })}),
        OpKind::File(f) => json!({"file": obj(|m| {
            put(m, "actions", Value::Array(f.actions.iter().map(|a| {
                let action = match &a.action {
                    FileActionKind::Copy(c) => json!({"copy": obj(|cm| {
                        put(cm, "src", json!(c.src));
                        put(cm, "dest", json!(c.dest));
                        put(cm, "owner", owner_json(&c.owner));
                        put(cm, "mode", json!(c.mode));
                        put(cm, "followSymlink", json!(c.follow_symlink));
                        put(cm, "dirCopyContents", json!(c.dir_copy_contents));
                        put(cm, "attemptUnpackDockerCompatibility", json!(c.attempt_unpack_docker_compatibility));
                        put(cm, "createDestPath", json!(c.create_dest_path));
                        put(cm, "allowWildcard", json!(c.allow_wildcard));
                        put(cm, "allowEmptyWildcard", json!(c.allow_empty_wildcard));
                        put(cm, "timestamp", json!(c.timestamp));
                        put(cm, "include_patterns", json!(c.include_patterns));
                        put(cm, "exclude_patterns", json!(c.exclude_patterns));
                        put(cm, "alwaysReplaceExistingDestPaths", json!(c.always_replace_existing_dest_paths));
                        put(cm, "modeStr", json!(c.mode_str));
                        put(cm, "required_paths", json!(c.required_paths));
                    })}),
                    FileActionKind::Mkfile(c) => json!({"mkfile": obj(|cm| {
                        put(cm, "path", json!(c.path));
                        put(cm, "mode", json!(c.mode));
                        put(cm, "data", json!(b64(&c.data)));
                        put(cm, "owner", owner_json(&c.owner));
                        put(cm, "timestamp", json!(c.timestamp));
                    })}),
                    FileActionKind::Mkdir(c) => json!({"mkdir": obj(|cm| {
                        put(cm, "path", json!(c.path));
                        put(cm, "mode", json!(c.mode));
                        put(cm, "makeParents", json!(c.make_parents));
                        put(cm, "owner", owner_json(&c.owner));
                        put(cm, "timestamp", json!(c.timestamp));
                    })}),
                    FileActionKind::Rm(c) => json!({"rm": obj(|cm| {
                        put(cm, "path", json!(c.path));
                        put(cm, "allowNotFound", json!(c.allow_not_found));
                        put(cm, "allowWildcard", json!(c.allow_wildcard));
                    })}),
                    FileActionKind::Symlink(c) => json!({"symlink": obj(|cm| {
                        put(cm, "oldpath", json!(c.oldpath));
                        put(cm, "newpath", json!(c.newpath));
                        put(cm, "owner", owner_json(&c.owner));
                        put(cm, "timestamp", json!(c.timestamp));
                    })}),
                };
                json!({"input": a.input, "secondaryInput": a.secondary_input, "output": a.output, "Action": action})
            }).collect()));
        })}),
        OpKind::Merge(mg) => json!({"merge": obj(|m| {
            put(m, "inputs", Value::Array(mg.inputs.iter().map(|i| obj(|im| put(im, "input", json!(i)))).collect()));
        })}),
        OpKind::Diff(d) => json!({"diff": obj(|m| {
            m.insert("lower".into(), obj(|im| put(im, "input", json!(d.lower))));
            m.insert("upper".into(), obj(|im| put(im, "input", json!(d.upper))));
        })}),
        OpKind::Build(b) => json!({"build": obj(|m| {
            put(m, "builder", json!(b.builder));
            if !b.attrs.is_empty() {
                let attrs: BTreeMap<&str, &str> = b.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                m.insert("attrs".into(), json!(attrs));
            }
        })}),
        OpKind::Passthrough(p) => json!({"passthrough": obj(|m| put(m, "id", json!(p.id)))}),
    }
}

fn metadata_json(md: &OpMetadata) -> Value {
    obj(|m| {
        put(m, "ignore_cache", json!(md.ignore_cache));
        if !md.description.is_empty() {
            let d: BTreeMap<&str, &str> = md
                .description
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            m.insert("description".into(), json!(d));
        }
        if let Some(e) = md.export_cache {
            m.insert("export_cache".into(), obj(|em| put(em, "Value", json!(e))));
        }
        if !md.caps.is_empty() {
            let c: BTreeMap<&str, bool> = md.caps.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            m.insert("caps".into(), json!(c));
        }
        if let Some(pg) = &md.progress_group {
            m.insert(
                "progress_group".into(),
                obj(|pm| {
                    pm.insert("id".into(), json!("<pgid>"));
                    put(pm, "name", json!(pg.name));
                    put(pm, "weak", json!(pg.weak));
                }),
            );
        }
    })
}

/// A definition in the shape of `buildctl debug dump-llb`, with positions for digests
/// and the terminal op BuildKit's marshaller appends.
fn dump(def: &Definition) -> Vec<Value> {
    let mut out = Vec::new();
    let mut any_description = false;
    for (i, op) in def.ops.iter().enumerate() {
        let mut o = Map::new();
        if !op.inputs.is_empty() {
            o.insert(
                "inputs".into(),
                Value::Array(
                    op.inputs
                        .iter()
                        .map(|inp| {
                            obj(|m| {
                                m.insert("digest".into(), json!(format!("<op{}>", inp.op)));
                                put(m, "index", json!(inp.output));
                            })
                        })
                        .collect(),
                ),
            );
        }
        o.insert("Op".into(), op_kind_json(&op.kind));
        if let Some(p) = &op.platform {
            o.insert("platform".into(), platform_json(p));
        }
        if let Some(c) = &op.constraints {
            o.insert(
                "constraints".into(),
                obj(|m| put(m, "filter", json!(c.filter))),
            );
        }
        let md = def
            .metadata
            .iter()
            .find(|(p, _)| *p as usize == i)
            .map(|(_, m)| m);
        any_description |= md.is_some_and(|m| !m.description.is_empty());
        let mut line = Map::new();
        line.insert("Op".into(), Value::Object(o));
        if let Some(md) = md {
            line.insert("OpMetadata".into(), metadata_json(md));
        }
        out.push(Value::Object(line));
    }
    if let Some(r) = &def.result {
        let mut caps = BTreeMap::new();
        caps.insert("constraints", true);
        caps.insert("platform", true);
        if any_description {
            caps.insert("meta.description", true);
        }
        if def.metadata.iter().any(|(_, m)| m.ignore_cache) {
            caps.insert("meta.ignorecache", true);
        }
        if def.metadata.iter().any(|(_, m)| m.export_cache.is_some()) {
            caps.insert("meta.exportcache", true);
        }
        out.push(json!({
            "Op": {"inputs": [obj(|m| {
                m.insert("digest".into(), json!(format!("<op{}>", r.op)));
                put(m, "index", json!(r.output));
            })], "Op": {}},
            "OpMetadata": {"caps": caps},
        }));
    }
    out
}
