//! BuildKit's frontend subrequests (`requestid`: `frontend.targets`, `frontend.lint`,
//! `frontend.subrequests.describe`) and build-check warnings of normal builds.

use buildwit_sdk::llb::{SourceInfo, line_range};
use buildwit_sdk::{BuildResult, Client, Error, Warning};
use serde_json::{Value, json};

use crate::instructions::{Stages, parse_stages};
use crate::lint::{CheckOptions, LintWarning};
use crate::parser::ParseResult;

/// The subrequests this frontend answers: `(name, description)`.
pub const SUBREQUESTS: &[(&str, &str)] = &[
    (
        "frontend.subrequests.describe",
        "List available subrequest types",
    ),
    (
        "frontend.targets",
        "List all targets current build supports",
    ),
    ("frontend.lint", "Lint the Dockerfile"),
];

/// A parsed Dockerfile with its check options.
pub struct Checked {
    res: ParseResult,
    stages: Stages,
    opts: CheckOptions,
}

impl Checked {
    /// Parses `src` (parser, instructions and the `# check=` directive).
    pub fn parse(src: &str) -> Result<Checked, crate::Error> {
        let res = crate::parser::parse(src)?;
        let opts = match res.directive("check") {
            Some(d) => CheckOptions::parse(&d.value).map_err(crate::Error::msg)?,
            None => CheckOptions::default(),
        };
        let stages = parse_stages(&res.ast)?;
        Ok(Checked { res, stages, opts })
    }

    /// The checks that fire.
    pub fn warnings(&self) -> Vec<LintWarning> {
        crate::lint::check(&self.res, &self.stages, &self.opts)
    }

    /// Reports the warnings through `client.warn`; with `error=true` any warning
    /// fails the build, as BuildKit does.
    pub fn report(&self, client: &dyn Client, filename: &str, src: &str) -> Result<(), Error> {
        let warnings = self.warnings();
        for w in &warnings {
            client.warn(Warning {
                level: 1,
                short: format!("{}: {}", w.rule, w.message),
                detail: vec![w.description.to_string()],
                url: w.url(),
                source: Some(SourceInfo {
                    filename: filename.to_string(),
                    data: src.as_bytes().to_vec(),
                    language: "Dockerfile".into(),
                }),
                ranges: vec![line_range(w.start_line as u32, w.end_line as u32)],
            });
        }
        if self.opts.error && !warnings.is_empty() {
            let mut rules: Vec<&str> = warnings.iter().map(|w| w.rule).collect();
            rules.dedup();
            return Err(Error::invalid(format!(
                "lint violation found for rules: {}",
                rules.join(", ")
            )));
        }
        Ok(())
    }
}

fn location(start: usize, end: usize) -> Value {
    json!({"sourceIndex": 0, "ranges": [{"start": {"line": start}, "end": {"line": end}}]})
}

fn base64(data: &[u8]) -> String {
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

fn result(json: &Value, txt: String) -> BuildResult {
    BuildResult::default()
        .with_metadata(
            "result.json",
            serde_json::to_vec_pretty(json).unwrap_or_default(),
        )
        .with_metadata("result.txt", txt)
}

/// Answers the subrequest `id` for the Dockerfile `src`.
pub fn handle(id: &str, filename: &str, src: &str) -> Result<BuildResult, Error> {
    let checked = || {
        Checked::parse(src).map_err(|e| {
            let err = Error::invalid(e.message);
            if e.line > 0 {
                err.at(filename, e.line as u32, e.end_line as u32)
            } else {
                err
            }
        })
    };
    match id {
        "frontend.subrequests.describe" => {
            let list: Vec<Value> = SUBREQUESTS
                .iter()
                .map(|(n, d)| json!({"name": n, "version": "1.0.0", "type": "rpc", "description": d}))
                .collect();
            let mut txt = String::from("NAME\tVERSION\tDESCRIPTION\n");
            for (n, d) in SUBREQUESTS {
                txt.push_str(&format!("{n}\t1.0.0\t{d}\n"));
            }
            Ok(result(&json!(list), txt))
        }
        "frontend.targets" => {
            let c = checked()?;
            let n = c.stages.stages.len();
            let mut targets = Vec::new();
            let mut txt = String::from("TARGET\tDESCRIPTION\n");
            for (i, st) in c.stages.stages.iter().enumerate() {
                let name = st.name.clone().unwrap_or_default();
                let description = st
                    .comments
                    .iter()
                    .find_map(|l| {
                        l.strip_prefix(&format!("{name} "))
                            .filter(|_| !name.is_empty())
                    })
                    .unwrap_or_default()
                    .to_string();
                let mut t = serde_json::Map::new();
                if !name.is_empty() {
                    t.insert("name".into(), json!(name));
                }
                if i == n - 1 {
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
                let shown = if name.is_empty() {
                    format!("stage-{i}")
                } else {
                    name
                };
                let default = if i == n - 1 { " (default)" } else { "" };
                txt.push_str(&format!("{shown}{default}\t{description}\n"));
            }
            let json = json!({"targets": targets, "sources": [base64(src.as_bytes())]});
            Ok(result(&json, txt))
        }
        "frontend.lint" => {
            let c = checked()?;
            let warnings = c.warnings();
            let mut txt = String::new();
            let list: Vec<Value> = warnings
                .iter()
                .map(|w| {
                    txt.push_str(&format!(
                        "{} - {}\n{}\n{}:{}\n\n",
                        w.rule,
                        w.url(),
                        w.message,
                        filename,
                        w.start_line
                    ));
                    json!({
                        "ruleName": w.rule,
                        "description": w.description,
                        "url": w.url(),
                        "detail": w.message,
                        "location": location(w.start_line, w.end_line),
                    })
                })
                .collect();
            let json = json!({
                "warnings": list,
                "sources": [{"filename": filename, "language": "Dockerfile", "data": base64(src.as_bytes())}],
            });
            let code = i32::from(c.opts.error && !warnings.is_empty());
            Ok(result(&json, txt).with_metadata("result.statuscode", code.to_string()))
        }
        _ => Err(Error::unsupported(format!("unsupported request {id}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(r: &BuildResult, k: &str) -> String {
        let v = &r.metadata.iter().find(|(key, _)| key == k).unwrap().1;
        String::from_utf8(v.clone()).unwrap()
    }

    #[test]
    fn targets_and_lint() {
        let src = "# build compiles it\nFROM alpine AS build\nFROM scratch\nCOPY --from=build /a /a\nCMD echo\n";
        let r = handle("frontend.targets", "Dockerfile", src).unwrap();
        let v: Value = serde_json::from_str(&meta(&r, "result.json")).unwrap();
        assert_eq!(v["targets"][0]["name"], "build");
        assert_eq!(v["targets"][0]["description"], "compiles it");
        assert_eq!(v["targets"][0]["location"]["ranges"][0]["start"]["line"], 2);
        assert_eq!(v["targets"][1]["default"], true);
        assert!(meta(&r, "result.txt").contains("stage-1 (default)"));
        let r = handle("frontend.lint", "Dockerfile", src).unwrap();
        let v: Value = serde_json::from_str(&meta(&r, "result.json")).unwrap();
        assert_eq!(v["warnings"][0]["ruleName"], "JSONArgsRecommended");
        assert_eq!(meta(&r, "result.statuscode"), "0");
        let src = format!("# check=error=true\n{src}");
        let r = handle("frontend.lint", "Dockerfile", &src).unwrap();
        assert_eq!(meta(&r, "result.statuscode"), "1");
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        let r = handle("frontend.subrequests.describe", "Dockerfile", "").unwrap();
        assert!(meta(&r, "result.json").contains("frontend.lint"));
        assert!(handle("frontend.bogus", "Dockerfile", src.as_str()).is_err());
    }
}
