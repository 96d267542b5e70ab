//! BuildKit's frontend subrequests (`requestid`): `frontend.outline`, `frontend.targets`,
//! `frontend.lint` and `frontend.subrequests.describe`, with the JSON (`result.json`, as
//! Go's `json.MarshalIndent` writes it) and the text (`result.txt`, as BuildKit prints it).

use buildwit_sdk::BuildResult;
use serde_json::{Map, Value, json};

use crate::convert::outline::Outline;
use crate::image::go_quote_into;
use crate::lint::LintWarning;

/// `frontend.outline`.
pub const OUTLINE: &str = "frontend.outline";
/// `frontend.targets`.
pub const TARGETS: &str = "frontend.targets";
/// `frontend.lint`.
pub const LINT: &str = "frontend.lint";
pub use buildwit_sdk::DESCRIBE;

const VERSION: &str = "1.0.0";

/// Go's `json.MarshalIndent(v, "", "  ")`, with Go's HTML-safe string escaping.
pub fn go_json(v: &Value) -> String {
    fn write(v: &Value, indent: usize, out: &mut String) {
        let pad = |n: usize| "  ".repeat(n);
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(&n.to_string()),
            Value::String(s) => go_quote_into(out, s),
            Value::Array(a) if a.is_empty() => out.push_str("[]"),
            Value::Array(a) => {
                out.push_str("[\n");
                for (i, x) in a.iter().enumerate() {
                    out.push_str(&pad(indent + 1));
                    write(x, indent + 1, out);
                    out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(indent));
                out.push(']');
            }
            Value::Object(m) if m.is_empty() => out.push_str("{}"),
            Value::Object(m) => {
                out.push_str("{\n");
                for (i, (k, x)) in m.iter().enumerate() {
                    out.push_str(&pad(indent + 1));
                    go_quote_into(out, k);
                    out.push_str(": ");
                    write(x, indent + 1, out);
                    out.push_str(if i + 1 < m.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(indent));
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    write(v, 0, &mut out);
    out
}

/// Standard base64, as Go encodes `[]byte` in JSON.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `pb.Location` of source 0 (`sourceIndex` and zero characters are omitted, as Go's
/// `omitempty` does).
fn location(start: usize, end: usize) -> Value {
    json!({"ranges": [{"start": {"line": start}, "end": {"line": end}}]})
}

fn result(json: &Value, txt: String) -> BuildResult {
    BuildResult::default()
        .with_metadata("result.json", go_json(json))
        .with_metadata("result.txt", txt)
        .with_metadata("version", VERSION)
}

/// `frontend.subrequests.describe`: the requests BuildKit's Dockerfile frontend
/// advertises (outline, targets and describe itself; lint is answered but not listed).
pub fn describe() -> BuildResult {
    let named = |n: &str, d: &str| json!({"name": n, "description": d});
    let meta = json!([named("result.json", ""), named("result.txt", "")]);
    let list = json!([
        {
            "name": OUTLINE, "version": VERSION, "type": "rpc",
            "description": "List all parameters current build target supports",
            "opts": [named("target", "Target build stage")],
            "inputs": null, "metadata": meta, "refs": null,
        },
        {
            "name": TARGETS, "version": VERSION, "type": "rpc",
            "description": "List all targets current build supports",
            "opts": [], "inputs": null, "metadata": meta, "refs": null,
        },
        {
            "name": DESCRIBE, "version": VERSION, "type": "rpc",
            "description": "List available subrequest types",
            "opts": null, "inputs": null, "metadata": meta, "refs": null,
        },
    ]);
    let mut txt = String::from("NAME\tVERSION\tDESCRIPTION\n");
    for r in list.as_array().into_iter().flatten() {
        let name = r["name"].as_str().unwrap_or_default();
        txt.push_str(&format!(
            "{}\t{}\t{}\n",
            name.strip_prefix("frontend.").unwrap_or(name),
            r["version"].as_str().unwrap_or_default(),
            r["description"].as_str().unwrap_or_default()
        ));
    }
    result(&list, crate::tabwriter::format(&txt, 1))
}

/// `frontend.targets`: every stage, from the parsed Dockerfile alone.
pub fn targets(src: &str) -> Result<BuildResult, crate::Error> {
    let res = crate::parser::parse(src)?;
    let stages = crate::instructions::parse_stages(&res.ast)?;
    let n = stages.stages.len();
    let mut targets = Vec::new();
    let mut txt = String::from("TARGET\tDESCRIPTION\n");
    for (i, st) in stages.stages.iter().enumerate() {
        let name = st.name.clone().unwrap_or_default();
        let description = crate::convert::outline::doc_comment(&st.comments, &name);
        let default = i == n - 1;
        let mut t = Map::new();
        if !name.is_empty() {
            t.insert("name".into(), json!(name));
        }
        if default {
            t.insert("default".into(), json!(true));
        }
        if !description.is_empty() {
            t.insert("description".into(), json!(description));
        }
        t.insert("base".into(), json!(st.image));
        if let Some(p) = &st.platform {
            t.insert("platform".into(), json!(p));
        }
        t.insert("location".into(), location(st.start_line, st.end_line));
        targets.push(Value::Object(t));
        let shown = match (name.is_empty(), default) {
            (true, true) => "(default)".to_string(),
            (false, true) => format!("{name} (default)"),
            _ => name,
        };
        txt.push_str(&format!("{shown}\t{description}\n"));
    }
    let json = json!({"targets": targets, "sources": [base64(src.as_bytes())]});
    Ok(result(&json, crate::tabwriter::format(&txt, 1)))
}

/// `frontend.outline`: the target's build args, secrets and ssh sockets.
pub fn outline(o: &Outline, src: &str) -> BuildResult {
    let mut m = Map::new();
    if !o.name.is_empty() {
        m.insert("name".into(), json!(o.name));
    }
    if !o.description.is_empty() {
        m.insert("description".into(), json!(o.description));
    }
    if !o.args.is_empty() {
        let args: Vec<Value> = o
            .args
            .iter()
            .map(|a| {
                let mut v = Map::new();
                v.insert("name".into(), json!(a.name));
                if !a.description.is_empty() {
                    v.insert("description".into(), json!(a.description));
                }
                if let Some(value) = a.value.as_ref().filter(|v| !v.is_empty()) {
                    v.insert("value".into(), json!(value));
                }
                v.insert("location".into(), location(a.lines.0, a.lines.1));
                Value::Object(v)
            })
            .collect();
        m.insert("args".into(), Value::Array(args));
    }
    for (key, list) in [("secrets", &o.secrets), ("ssh", &o.ssh)] {
        if list.is_empty() {
            continue;
        }
        let items: Vec<Value> = list
            .iter()
            .map(|s| {
                let mut v = Map::new();
                v.insert("name".into(), json!(s.name));
                if s.required {
                    v.insert("required".into(), json!(true));
                }
                v.insert("location".into(), location(s.lines.0, s.lines.1));
                Value::Object(v)
            })
            .collect();
        m.insert(key.into(), Value::Array(items));
    }
    m.insert("sources".into(), json!([base64(src.as_bytes())]));
    result(&Value::Object(m), outline_text(o))
}

/// BuildKit's `PrintOutline`.
fn outline_text(o: &Outline) -> String {
    let mut out = String::new();
    if !o.name.is_empty() || !o.description.is_empty() {
        let name = if o.name.is_empty() {
            "(default)"
        } else {
            &o.name
        };
        let mut t = format!("TARGET:\t{name}\n");
        if !o.description.is_empty() {
            t.push_str(&format!("DESCRIPTION:\t{}\n", o.description));
        }
        out.push_str(&crate::tabwriter::format(&t, 1));
        out.push('\n');
    }
    if !o.args.is_empty() {
        let mut t = String::from("BUILD ARG\tVALUE\tDESCRIPTION\n");
        for a in &o.args {
            let value = a.value.as_deref().unwrap_or_default();
            t.push_str(&format!("{}\t{value}\t{}\n", a.name, a.description));
        }
        out.push_str(&crate::tabwriter::format(&t, 3));
        out.push('\n');
    }
    for (title, list) in [("SECRET", &o.secrets), ("SSH", &o.ssh)] {
        if list.is_empty() {
            continue;
        }
        let mut t = format!("{title}\tREQUIRED\n");
        for s in list {
            let required = if s.required { "true" } else { "" };
            t.push_str(&format!("{}\t{required}\n", s.name));
        }
        out.push_str(&crate::tabwriter::format(&t, 3));
        out.push('\n');
    }
    out
}

/// `frontend.lint`: the checks that fired, and the conversion error if there was one.
/// The status code is 1 when there is either.
pub fn lint(
    warnings: &[LintWarning],
    error: Option<&crate::Error>,
    filename: &str,
    src: &str,
) -> BuildResult {
    let list: Vec<Value> = warnings
        .iter()
        .map(|w| {
            let mut v = Map::new();
            v.insert("ruleName".into(), json!(w.rule.name));
            v.insert("description".into(), json!(w.rule.description));
            if !w.rule.url.is_empty() {
                v.insert("url".into(), json!(w.rule.url));
            }
            v.insert("detail".into(), json!(w.message));
            v.insert("location".into(), location(w.start_line, w.end_line));
            Value::Object(v)
        })
        .collect();
    let mut m = Map::new();
    // Go leaves the slice nil, hence `null`, when nothing fired.
    m.insert(
        "warnings".into(),
        if list.is_empty() {
            Value::Null
        } else {
            Value::Array(list)
        },
    );
    m.insert(
        "sources".into(),
        json!([{"filename": filename, "data": base64(src.as_bytes()), "language": "Dockerfile"}]),
    );
    if let Some(e) = error {
        let loc = if e.line > 0 {
            location(e.line, e.end_line.max(e.line))
        } else {
            json!({})
        };
        m.insert(
            "buildError".into(),
            json!({"message": e.message, "location": loc}),
        );
    }
    let mut sorted: Vec<&LintWarning> = warnings.iter().collect();
    sorted.sort_by_key(|w| w.start_line);
    let mut txt = String::new();
    for w in sorted {
        txt.push_str(&format!("\nWARNING: {}", w.rule.name));
        if !w.rule.url.is_empty() {
            txt.push_str(&format!(" - {}", w.rule.url));
        }
        txt.push_str(&format!("\n{}\n", w.message));
        txt.push_str(&print_source(filename, src, w.start_line, w.end_line));
    }
    let status = i32::from(!warnings.is_empty() || error.is_some());
    result(&Value::Object(m), txt).with_metadata("result.statuscode", status.to_string())
}

/// BuildKit's `errdefs.Source.Print`: the lines around a range, the range marked `>>>`.
pub fn print_source(filename: &str, src: &str, start: usize, end: usize) -> String {
    let lines: Vec<&str> = src.split('\n').collect();
    let end = end.max(start);
    if start > lines.len() || start < 1 {
        return String::new();
    }
    let (mut first, mut last) = (start, end.min(lines.len()));
    let pad = if last == first { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if first > 1 {
            first -= 1;
            p += 1;
        }
        if last != lines.len() {
            last += 1;
            p += 1;
        }
        p += 1;
    }
    let mut out = format!("{filename}:{start}\n--------------------\n");
    for i in first..=last {
        let mark = if (start..=end).contains(&i) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!(" {i:>3} | {mark} {}\n", lines[i - 1]));
    }
    out.push_str("--------------------\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(r: &BuildResult, k: &str) -> String {
        String::from_utf8(r.metadata(k).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn go_json_indents_and_escapes() {
        let v = json!({"a": [], "b": {}, "c": [1, {"d": "<x>&"}], "e": null});
        assert_eq!(
            go_json(&v),
            "{\n  \"a\": [],\n  \"b\": {},\n  \"c\": [\n    1,\n    {\n      \"d\": \"\\u003cx\\u003e\\u0026\"\n    }\n  ],\n  \"e\": null\n}"
        );
        assert_eq!(base64(b"hello"), "aGVsbG8=");
    }

    #[test]
    fn describe_lists_outline_targets_and_itself() {
        let r = describe();
        let v: Value = serde_json::from_str(&meta(&r, "result.json")).unwrap();
        let names: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, [OUTLINE, TARGETS, DESCRIBE]);
        assert_eq!(v[0]["opts"][0]["name"], "target");
        assert!(v[0]["inputs"].is_null() && v[2]["opts"].is_null());
        assert_eq!(v[1]["opts"], json!([]));
        assert_eq!(
            meta(&r, "result.txt"),
            "NAME                 VERSION DESCRIPTION\n\
             outline              1.0.0   List all parameters current build target supports\n\
             targets              1.0.0   List all targets current build supports\n\
             subrequests.describe 1.0.0   List available subrequest types\n"
        );
        assert_eq!(meta(&r, "version"), "1.0.0");
    }

    #[test]
    fn targets_json_and_text() {
        let src = "# syntax=docker/dockerfile:1\n# build compiles it\nFROM alpine AS build\nFROM scratch\nCOPY --from=build /a /a\nFROM build\n";
        let r = targets(src).unwrap();
        let v: Value = serde_json::from_str(&meta(&r, "result.json")).unwrap();
        assert_eq!(v["targets"][0]["name"], "build");
        assert_eq!(v["targets"][0]["description"], "compiles it");
        assert_eq!(
            v["targets"][0]["location"],
            json!({"ranges": [{"start": {"line": 3}, "end": {"line": 3}}]})
        );
        assert!(v["targets"][1].get("name").is_none());
        assert_eq!(v["targets"][2]["default"], true);
        assert_eq!(v["sources"][0], base64(src.as_bytes()));
        assert_eq!(
            meta(&r, "result.txt"),
            "TARGET    DESCRIPTION\nbuild     compiles it\n          \n(default) \n"
        );
    }

    #[test]
    fn source_excerpt_like_errdefs() {
        let src = "FROM a\nRUN b\nCMD c\nLABEL d=e\nENV f g\n";
        assert_eq!(
            print_source("Dockerfile", src, 3, 3),
            "Dockerfile:3\n--------------------\n   1 |     FROM a\n   2 |     RUN b\n   3 | >>> CMD c\n   4 |     LABEL d=e\n   5 |     ENV f g\n--------------------\n"
        );
        assert_eq!(
            print_source("Dockerfile", "FROM a\nCMD c", 2, 2),
            "Dockerfile:2\n--------------------\n   1 |     FROM a\n   2 | >>> CMD c\n--------------------\n"
        );
    }
}
