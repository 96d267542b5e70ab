//! Runs BuildKit's parser corpus: every `testfiles/*/Dockerfile` must dump to
//! its `result`, every `testfiles-negative/*/Dockerfile` must fail to parse.

use std::fs;
use std::path::Path;

const CORPUS: &str = concat!(env!("BUILDWIT_SHARED_DIR"), "/conformance/parser");

fn case_dirs(sub: &str) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = fs::read_dir(Path::new(CORPUS).join(sub))
        .unwrap_or_else(|e| panic!("reading {CORPUS}/{sub}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn parser_testfiles_match() {
    let dirs = case_dirs("testfiles");
    assert_eq!(dirs.len(), 33);
    let mut failures = Vec::new();
    for dir in &dirs {
        let src = fs::read(dir.join("Dockerfile")).unwrap();
        let src = String::from_utf8_lossy(&src);
        let want = fs::read_to_string(dir.join("result"))
            .unwrap()
            .replace("\r\n", "\n");
        match buildwit_dockerfile::parser::parse(&src) {
            Ok(r) => {
                let got = r.ast.dump() + "\n";
                if got != want {
                    failures.push(format!(
                        "{}:\n--- want\n{want}--- got\n{got}",
                        dir.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: error {e}", dir.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn parser_negative_testfiles_fail() {
    let dirs = case_dirs("testfiles-negative");
    assert_eq!(dirs.len(), 4);
    for dir in &dirs {
        let src = fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let r = buildwit_dockerfile::parser::parse(&src);
        assert!(r.is_err(), "{} parsed but must fail", dir.display());
    }
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn large_file_parses_quickly() {
    let mut src =
        String::from("# syntax=docker/dockerfile:1\nARG BASE=alpine\nFROM $BASE AS build\n");
    for i in 0..250 {
        src.push_str(&format!(
            "RUN --mount=type=cache,target=/c{i} echo {i} \\\n  && echo \"$X\" # not a comment\n"
        ));
        src.push_str(&format!("ENV K{i}=v{i} L{i}=\"a b\"\n"));
        src.push_str(&format!("COPY --link <<EOF /f{i}\nline {i}\nEOF\n"));
        src.push_str(&format!("CMD [\"a\", \"{i}\"]\n"));
    }
    let start = std::time::Instant::now();
    let r = buildwit_dockerfile::parser::parse(&src).unwrap();
    let st = buildwit_dockerfile::instructions::parse_stages(&r.ast).unwrap();
    let dump = r.ast.dump();
    let elapsed = start.elapsed();
    assert_eq!(st.stages[0].commands.len(), 1000);
    assert!(dump.len() > 10_000);
    // Well under a millisecond per instruction, even in debug builds.
    assert!(elapsed.as_millis() < 250, "took {elapsed:?}");
}
