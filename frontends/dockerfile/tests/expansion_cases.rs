//! Replays ARG/ENV/LABEL/WORKDIR expansion of the corpus cases that exercise the
//! word expander and compares with BuildKit's image config.

use std::fs;
use std::path::Path;

use buildwit_dockerfile::instructions::{Instruction, parse_stages};
use buildwit_dockerfile::json::{Value, decode_exact};
use buildwit_dockerfile::parser::parse;
use buildwit_dockerfile::shell::Lexer;

const CORPUS: &str = concat!(env!("BUILDWIT_SHARED_DIR"), "/conformance/dockerfile");

fn member<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.iter().find(|(n, _)| n == k).map(|(_, v)| v),
        _ => None,
    }
}

fn set(list: &mut Vec<(String, String)>, k: &str, v: String) {
    match list.iter_mut().find(|(n, _)| n == k) {
        Some(e) => e.1 = v,
        None => list.push((k.to_string(), v)),
    }
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn env_label_workdir_match_image_config() {
    for case in [
        "expand-default-alt",
        "expand-pattern-ops",
        "expand-escaped-dollar",
        "env-escapes",
        "env-syntaxes",
        "label-many",
        "workdir-with-vars",
    ] {
        let dir = Path::new(CORPUS).join(case);
        let src = fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let cfg =
            decode_exact(&fs::read_to_string(dir.join("expected.image-config.json")).unwrap())
                .unwrap();
        let config = member(&cfg, "config").unwrap();
        let r = parse(&src).unwrap();
        let st = parse_stages(&r.ast).unwrap();
        let lx = Lexer::new(r.escape);
        let stage = st.stages.last().unwrap();
        // Base image (busybox) env.
        let mut env = vec![(
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        )];
        let mut args: Vec<(String, String)> = Vec::new();
        let mut labels: Vec<(String, String)> = Vec::new();
        let mut workdir = String::new();
        for c in &stage.commands {
            let mut scope = args.clone();
            for (k, v) in &env {
                set(&mut scope, k, v.clone());
            }
            match &c.instruction {
                Instruction::Arg(defs) => {
                    for d in defs {
                        if let Some(v) = &d.value {
                            let v = lx.process_word(v, &scope).unwrap();
                            set(&mut args, &d.key, v);
                        }
                    }
                }
                Instruction::Env(kvs) => {
                    let vals: Vec<_> = kvs
                        .iter()
                        .map(|kv| (kv.key.clone(), lx.process_word(&kv.value, &scope).unwrap()))
                        .collect();
                    for (k, v) in vals {
                        set(&mut env, &k, v);
                    }
                }
                Instruction::Label(kvs) => {
                    for kv in kvs {
                        let k = lx.process_word(&kv.key, &scope).unwrap();
                        set(&mut labels, &k, lx.process_word(&kv.value, &scope).unwrap());
                    }
                }
                Instruction::Workdir(w) => {
                    let w = lx.process_word(w, &scope).unwrap();
                    workdir = if w.starts_with('/') {
                        w
                    } else {
                        format!("{workdir}/{w}")
                    };
                }
                _ => {}
            }
        }
        let got: Vec<Value> = env
            .iter()
            .map(|(k, v)| Value::String(format!("{k}={v}")))
            .collect();
        assert_eq!(
            member(config, "Env"),
            Some(&Value::Array(got)),
            "{case}: Env"
        );
        if let Some(Value::Object(want)) = member(config, "Labels") {
            let mut want = want.clone();
            want.sort_by(|a, b| a.0.cmp(&b.0));
            let mut got: Vec<(String, Value)> = labels
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(got, want, "{case}: Labels");
        }
        if let Some(Value::String(w)) = member(config, "WorkingDir") {
            let w2 = workdir.trim_end_matches('/');
            assert!(
                w == w2 || *w == workdir,
                "{case}: WorkingDir {w} vs {workdir}"
            );
        }
    }
}
