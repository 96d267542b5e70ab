//! Checks the parse-level invalid cases of the Dockerfile conformance corpus
//! against `expected.error-message.txt`, and that every other case (valid ones
//! and dispatch-level invalid ones) gets through parsing.

use std::fs;
use std::path::{Path, PathBuf};

use buildwit_dockerfile::instructions::{Instruction, no_expand, parse_stages};
use buildwit_dockerfile::parser::parse;
use buildwit_dockerfile::shell::{EmptyEnv, Lexer};

const CORPUS: &str = concat!(env!("BUILDWIT_SHARED_DIR"), "/conformance/dockerfile");

/// Invalid cases whose error this crate produces (parser, instructions, mounts, expansion).
const PARSE_LEVEL: &[&str] = &[
    "invalid-copy-heredoc-no-dest",
    "invalid-copy-one-arg",
    "invalid-empty-dockerfile",
    "invalid-expansion-required",
    "invalid-expansion-unterminated",
    "invalid-healthcheck-interval",
    "invalid-heredoc-unterminated",
    "invalid-mount-option",
    "invalid-mount-sharing",
    "invalid-network-mode",
    "invalid-onbuild-from",
    "invalid-security-mode",
    "invalid-shell-not-json",
    "invalid-stage-name",
    "invalid-unknown-flag",
    "invalid-unknown-instruction",
];

/// Runs everything this crate checks; returns the first error message.
fn check(src: &str) -> Result<(), String> {
    let r = parse(src).map_err(|e| e.to_string())?;
    let st = parse_stages(&r.ast).map_err(|e| e.to_string())?;
    let lx = Lexer::new(r.escape);
    for stage in &st.stages {
        for c in &stage.commands {
            match &c.instruction {
                Instruction::Run(run) => {
                    run.parse_mounts(&mut no_expand)?;
                }
                Instruction::Env(kvs) | Instruction::Label(kvs) => {
                    for kv in kvs {
                        lx.process_word(&kv.value, &EmptyEnv)
                            .map_err(|e| e.to_string())?;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(CORPUS)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    v.sort();
    v
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn parse_level_invalid_cases_match_buildkit() {
    let mut failures = Vec::new();
    for case in PARSE_LEVEL {
        let dir = Path::new(CORPUS).join(case);
        let src = fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let want = fs::read_to_string(dir.join("expected.error-message.txt")).unwrap();
        let want = want.strip_suffix('\n').unwrap_or(&want);
        match check(&src) {
            Err(got) if got == want => {}
            Err(got) => failures.push(format!("{case}: want {want:?}, got {got:?}")),
            Ok(()) => failures.push(format!("{case}: want {want:?}, got success")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn other_cases_parse() {
    let mut failures = Vec::new();
    for dir in cases() {
        let n = name(&dir);
        if PARSE_LEVEL.contains(&n.as_str()) {
            continue;
        }
        let src = fs::read_to_string(dir.join("Dockerfile")).unwrap();
        if let Err(e) = check(&src) {
            failures.push(format!("{n}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn error_positions() {
    let dir = Path::new(CORPUS);
    let src = fs::read_to_string(dir.join("invalid-unknown-flag/Dockerfile")).unwrap();
    let e = parse_stages(&parse(&src).unwrap().ast).unwrap_err();
    assert_eq!((e.line, e.column), (2, 6));
    let src = fs::read_to_string(dir.join("invalid-heredoc-unterminated/Dockerfile")).unwrap();
    let e = parse(&src).unwrap_err();
    assert_eq!((e.line, e.end_line), (2, 3));
}
