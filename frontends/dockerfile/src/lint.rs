//! BuildKit's build checks: the `# check=` directive options and the rules that
//! need no execution, with BuildKit's rule names, descriptions and messages.

use crate::instructions::{Instruction, Stages};
use crate::parser::ParseResult;
use crate::shell::Lexer;

/// Parsed `# check=skip=…;error=…;experimental=…` options (`linter.ParseLintOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Rule names to skip (lowercased; `all` skips every rule).
    pub skip: Vec<String>,
    /// Fail the build when a rule fires.
    pub error: bool,
    /// Experimental rules to enable (lowercased; `all` enables all).
    pub experimental: Vec<String>,
}

impl CheckOptions {
    /// Parses the directive value; errors read like BuildKit's.
    pub fn parse(value: &str) -> Result<CheckOptions, String> {
        let wrap = |m: String| format!("failed to parse check options: {m}");
        let mut out = CheckOptions::default();
        let value = value.trim();
        if value.is_empty() {
            return Ok(out);
        }
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        };
        for part in value.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(wrap(format!("invalid check option {part:?}")));
            };
            match k.trim() {
                "skip" => out.skip = list(v),
                "experimental" => out.experimental = list(v),
                "error" => {
                    let v = v.trim();
                    out.error = crate::instructions::go_parse_bool(v).ok_or_else(|| {
                        wrap(format!(
                            "failed to parse check option {part:?}: strconv.ParseBool: parsing {v:?}: invalid syntax"
                        ))
                    })?;
                }
                k => return Err(wrap(format!("invalid check option {k:?}"))),
            }
        }
        Ok(out)
    }

    /// Whether the rule `name` is skipped.
    pub fn skips(&self, name: &str) -> bool {
        self.skip
            .iter()
            .any(|s| s == "all" || s.eq_ignore_ascii_case(name))
    }
}

/// One check that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintWarning {
    /// Rule name (`StageNameCasing`).
    pub rule: &'static str,
    /// The rule's description.
    pub description: &'static str,
    /// What is wrong here.
    pub message: String,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line.
    pub end_line: usize,
}

impl LintWarning {
    /// The rule's documentation page.
    pub fn url(&self) -> String {
        let mut kebab = String::new();
        let chars: Vec<char> = self.rule.chars().collect();
        for (i, c) in chars.iter().enumerate() {
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let prev_lower = i > 0 && chars[i - 1].is_lowercase();
            if i > 0 && c.is_uppercase() && (prev_lower || next_lower) {
                kebab.push('-');
            }
            kebab.extend(c.to_lowercase());
        }
        format!("https://docs.docker.com/go/dockerfile/rule/{kebab}/")
    }
}

/// `(name, description)` of every rule implemented here.
pub const RULES: &[(&str, &str)] = &[
    ("StageNameCasing", "Stage names should be lowercase"),
    (
        "FromAsCasing",
        "The 'as' keyword should match the case of the 'from' keyword",
    ),
    (
        "NoEmptyContinuation",
        "Empty continuation lines will become errors in a future release",
    ),
    (
        "ConsistentInstructionCasing",
        "All commands within the Dockerfile should use the same casing (either upper or lower)",
    ),
    ("DuplicateStageName", "Stage names should be unique"),
    (
        "ReservedStageName",
        "Reserved words should not be used as stage names",
    ),
    (
        "JSONArgsRecommended",
        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
    ),
    (
        "MaintainerDeprecated",
        "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
    ),
    ("UndefinedArgInFrom", "FROM command must use declared ARGs"),
    (
        "WorkdirRelativePath",
        "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
    ),
    (
        "MultipleInstructionsDisallowed",
        "Multiple instructions of the same type should not be used in the same stage",
    ),
    (
        "LegacyKeyValueFormat",
        "Legacy key/value format with whitespace separator should not be used",
    ),
];

/// Build arguments every FROM may use without declaring them.
const BUILTIN_ARGS: &[&str] = &[
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDOSVERSION",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETOSVERSION",
    "TARGETARCH",
    "TARGETVARIANT",
    "TARGETSTAGE",
];

fn warn(rule: &'static str, message: String, start: usize, end: usize) -> LintWarning {
    let description = RULES
        .iter()
        .find(|(n, _)| *n == rule)
        .map_or("", |(_, d)| *d);
    LintWarning {
        rule,
        description,
        message,
        start_line: start,
        end_line: end,
    }
}

/// Runs every rule over a parsed Dockerfile; `opts` removes skipped rules.
pub fn check(res: &ParseResult, stages: &Stages, opts: &CheckOptions) -> Vec<LintWarning> {
    let mut out = Vec::new();
    for w in &res.warnings {
        out.push(warn(
            "NoEmptyContinuation",
            "Empty continuation line".into(),
            w.line,
            w.line,
        ));
    }
    // ConsistentInstructionCasing: against the majority casing.
    let (mut lower, mut upper) = (0, 0);
    for n in &res.ast.children {
        if n.keyword == n.keyword.to_lowercase() {
            lower += 1;
        } else if n.keyword == n.keyword.to_uppercase() {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    for n in &res.ast.children {
        let ok = if majority_lower {
            n.keyword == n.keyword.to_lowercase()
        } else {
            n.keyword == n.keyword.to_uppercase()
        };
        if !ok {
            let casing = if majority_lower {
                "lowercase"
            } else {
                "uppercase"
            };
            out.push(warn(
                "ConsistentInstructionCasing",
                format!(
                    "Command '{}' should match the case of the command majority ({casing})",
                    n.keyword
                ),
                n.start_line,
                n.end_line,
            ));
        }
        if n.value == "from" {
            let args = n.args();
            if args.len() == 3 {
                let (from, as_) = (&n.keyword, &args[1]);
                let from_upper = from == &from.to_uppercase();
                let as_upper = as_ == &as_.to_uppercase();
                let from_lower = from == &from.to_lowercase();
                let as_lower = as_ == &as_.to_lowercase();
                if (from_upper && !as_upper) || (from_lower && !as_lower) {
                    out.push(warn(
                        "FromAsCasing",
                        format!("'{as_}' and '{from}' keywords' casing do not match"),
                        n.start_line,
                        n.end_line,
                    ));
                }
                if args[2] != args[2].to_lowercase() {
                    out.push(warn(
                        "StageNameCasing",
                        format!("Stage name '{}' should be lowercase", args[2]),
                        n.start_line,
                        n.end_line,
                    ));
                }
            }
        }
    }
    // Stage-level rules.
    let mut declared: Vec<(String, String)> = BUILTIN_ARGS
        .iter()
        .map(|a| ((*a).to_string(), String::new()))
        .collect();
    for c in &stages.meta_args {
        if let Instruction::Arg(args) = &c.instruction {
            declared.extend(args.iter().map(|a| (a.key.clone(), String::new())));
        }
    }
    let lex = Lexer::new(res.escape);
    let mut seen: Vec<&str> = Vec::new();
    for st in &stages.stages {
        let (sl, el) = (st.start_line, st.end_line);
        if let Some(name) = &st.name {
            if seen.contains(&name.as_str()) {
                out.push(warn(
                    "DuplicateStageName",
                    format!("Duplicate stage name {name:?}, stage names should be unique"),
                    sl,
                    el,
                ));
            }
            seen.push(name);
            if name == "scratch" || name == "context" {
                out.push(warn(
                    "ReservedStageName",
                    format!("Stage name should not use the same name as reserved stage {name:?}"),
                    sl,
                    el,
                ));
            }
        }
        for word in std::iter::once(&st.image).chain(st.platform.as_ref()) {
            if let Ok(r) = lex.process(word, &declared) {
                for arg in r.unmatched {
                    let names: Vec<&str> = declared.iter().map(|(k, _)| k.as_str()).collect();
                    let mut msg = format!("FROM argument '{arg}' is not declared");
                    if let Some(s) = crate::instructions::suggest(&arg, &names, true) {
                        msg.push_str(&format!(" (did you mean {s}?)"));
                    }
                    out.push(warn("UndefinedArgInFrom", msg, sl, el));
                }
            }
        }
        let mut workdir_abs = false;
        let mut counts: Vec<(&str, usize, usize, usize)> = Vec::new();
        for c in &st.commands {
            let (cs, ce) = (c.start_line, c.end_line);
            match &c.instruction {
                Instruction::Cmd(crate::instructions::ShellOrExec::Shell(_))
                | Instruction::Entrypoint(crate::instructions::ShellOrExec::Shell(_)) => {
                    out.push(warn(
                        "JSONArgsRecommended",
                        format!(
                            "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                            c.instruction.keyword()
                        ),
                        cs,
                        ce,
                    ));
                }
                Instruction::Maintainer(_) => out.push(warn(
                    "MaintainerDeprecated",
                    "Maintainer instruction is deprecated in favor of using label".into(),
                    cs,
                    ce,
                )),
                Instruction::Workdir(w) => {
                    if w.starts_with('/') || w.starts_with('$') {
                        workdir_abs = true;
                    } else if !workdir_abs {
                        out.push(warn(
                            "WorkdirRelativePath",
                            format!("Relative workdir {w:?} can have unexpected results if the base image changes"),
                            cs,
                            ce,
                        ));
                    }
                }
                Instruction::Env(kvs) | Instruction::Label(kvs)
                    if kvs.iter().any(|kv| kv.no_delim) =>
                {
                    let k = c.instruction.keyword();
                    out.push(warn(
                        "LegacyKeyValueFormat",
                        format!(
                            "\"{k} key=value\" should be used instead of legacy \"{k} key value\" format"
                        ),
                        cs,
                        ce,
                    ));
                }
                _ => {}
            }
            let k = c.instruction.keyword();
            if matches!(k, "CMD" | "ENTRYPOINT" | "HEALTHCHECK") {
                match counts.iter_mut().find(|(n, ..)| *n == k) {
                    Some(e) => {
                        e.1 += 1;
                        // Report the earlier, overridden instruction.
                        out.push(warn(
                            "MultipleInstructionsDisallowed",
                            format!("Multiple {k} instructions should not be used in the same stage because only the last one will be used"),
                            e.2,
                            e.3,
                        ));
                        e.2 = cs;
                        e.3 = ce;
                    }
                    None => counts.push((k, 1, cs, ce)),
                }
            }
        }
    }
    out.retain(|w| !opts.skips(w.rule));
    out.sort_by_key(|w| w.start_line);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_options() {
        let o = CheckOptions::parse("skip=JSONArgsRecommended,StageNameCasing;error=true").unwrap();
        assert!(o.error && o.skips("jsonargsrecommended") && !o.skips("FromAsCasing"));
        assert!(CheckOptions::parse("skip=all").unwrap().skips("anything"));
        assert_eq!(
            CheckOptions::parse("bogus").unwrap_err(),
            "failed to parse check options: invalid check option \"bogus\""
        );
        assert_eq!(
            CheckOptions::parse("error=maybe").unwrap_err(),
            "failed to parse check options: failed to parse check option \"error=maybe\": strconv.ParseBool: parsing \"maybe\": invalid syntax"
        );
    }

    #[test]
    fn rules_fire() {
        let src = "ARG base=alpine\nfrom $base AS Build\nFROM $bse as build\nWORKDIR app\nMAINTAINER me\nENV a b\nCMD echo a\nCMD [\"b\"]\nFROM scratch AS context\n";
        let res = crate::parser::parse(src).unwrap();
        let stages = crate::instructions::parse_stages(&res.ast).unwrap();
        let got: Vec<(&str, usize)> = check(&res, &stages, &CheckOptions::default())
            .iter()
            .map(|w| (w.rule, w.start_line))
            .collect();
        for want in [
            ("ConsistentInstructionCasing", 2),
            ("FromAsCasing", 2),
            ("StageNameCasing", 2),
            ("FromAsCasing", 3),
            ("DuplicateStageName", 3),
            ("UndefinedArgInFrom", 3),
            ("WorkdirRelativePath", 4),
            ("MaintainerDeprecated", 5),
            ("LegacyKeyValueFormat", 6),
            ("JSONArgsRecommended", 7),
            ("MultipleInstructionsDisallowed", 7),
            ("ReservedStageName", 9),
        ] {
            assert!(got.contains(&want), "{want:?} missing from {got:?}");
        }
        let w = check(&res, &stages, &CheckOptions::default());
        let undefined = w.iter().find(|w| w.rule == "UndefinedArgInFrom").unwrap();
        assert_eq!(
            undefined.message,
            "FROM argument 'bse' is not declared (did you mean base?)"
        );
        assert_eq!(
            undefined.url(),
            "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/"
        );
        let skip = CheckOptions::parse("skip=all").unwrap();
        assert!(check(&res, &stages, &skip).is_empty());
    }
}
