//! Every Definition the real BuildKit wrote in the shared Dockerfile corpus: ops re-encode
//! to the same bytes, digests match, the JSON equals `buildctl debug dump-llb`'s (as JSON
//! values and byte for byte), and the graph validates.

use std::path::{Path, PathBuf};

use buildwit_llb::{
    Digest, decode_definition, digest_of, dump_json_lines, encode_definition, encode_op, pb,
    to_dot, validate, validate_allow_empty,
};
use prost::Message;

fn corpus() -> PathBuf {
    PathBuf::from(concat!(
        env!("BUILDWIT_SHARED_DIR"),
        "/conformance/dockerfile"
    ))
}

/// The valid cases: those with an `expected.llb.pb`.
fn cases() -> Vec<PathBuf> {
    let dir = corpus();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.llb.pb").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 60, "found only {} cases", cases.len());
    cases
}

fn name(case: &Path) -> String {
    case.file_name().unwrap().to_string_lossy().into_owned()
}

fn load(case: &Path) -> (Vec<u8>, pb::Definition, Vec<String>) {
    let bytes = std::fs::read(case.join("expected.llb.pb")).unwrap();
    let def = decode_definition(&bytes).unwrap();
    let jsonl = std::fs::read_to_string(case.join("expected.llb.jsonl")).unwrap();
    (bytes, def, jsonl.lines().map(String::from).collect())
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn every_op_re_encodes_to_the_same_bytes() {
    let (mut cases_ok, mut ops) = (0, 0);
    for case in cases() {
        let (_, def, _) = load(&case);
        for (i, op_bytes) in def.def.iter().enumerate() {
            let op = pb::Op::decode(op_bytes.as_slice()).unwrap();
            assert_eq!(
                &encode_op(&op),
                op_bytes,
                "{}: op {i} does not re-encode to the same bytes",
                name(&case)
            );
            // BuildKit's client sets `constraints` on every op but the terminal one, and
            // the deterministic marshal writes it even when empty (`5a 00`).
            if i + 1 < def.def.len() {
                assert!(op.constraints.is_some(), "{}: op {i}", name(&case));
            }
            ops += 1;
        }
        cases_ok += 1;
    }
    eprintln!("byte round trip: {cases_ok} cases, {ops} ops");
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn digests_are_buildkits() {
    let (mut cases_ok, mut ops) = (0, 0);
    for case in cases() {
        let (_, def, expected) = load(&case);
        assert_eq!(def.def.len(), expected.len(), "{}: op count", name(&case));
        for (i, op_bytes) in def.def.iter().enumerate() {
            let want: serde_json::Value = serde_json::from_str(&expected[i]).unwrap();
            let want: Digest = serde_json::from_value(want["Digest"].clone()).unwrap();
            assert_eq!(digest_of(op_bytes), want, "{}: op {i} digest", name(&case));
            // The metadata map is keyed by these digests.
            assert!(
                def.metadata.contains_key(want.as_str()),
                "{}: op {i} metadata",
                name(&case)
            );
            ops += 1;
        }
        cases_ok += 1;
    }
    eprintln!("digests: {cases_ok} cases, {ops} ops");
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn json_is_buildctls_dump_llb() {
    let (mut cases_ok, mut lines_total, mut identical) = (0, 0, 0);
    for case in cases() {
        let (_, def, expected) = load(&case);
        let lines = dump_json_lines(&def).unwrap();
        assert_eq!(lines.len(), expected.len(), "{}: line count", name(&case));
        for (i, line) in lines.iter().enumerate() {
            let got: serde_json::Value = serde_json::from_str(line).unwrap();
            let want: serde_json::Value = serde_json::from_str(&expected[i]).unwrap();
            assert_eq!(got, want, "{}: op {i} JSON", name(&case));
            identical += usize::from(*line == expected[i]);
            lines_total += 1;
        }
        cases_ok += 1;
    }
    eprintln!("JSON: {cases_ok} cases equal; {identical}/{lines_total} lines byte-identical");
    assert_eq!(identical, lines_total, "every JSON line is byte-identical");
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn every_graph_validates() {
    let mut n = 0;
    for case in cases() {
        let (_, def, expected) = load(&case);
        if def.def.is_empty() {
            continue;
        }
        let graph = validate(&def).unwrap_or_else(|e| panic!("{}: {e}", name(&case)));
        assert_eq!(graph.ops().len() + 1, def.def.len(), "{}", name(&case));
        for (i, v) in graph.ops().iter().enumerate() {
            assert_eq!(v.bytes, def.def[i]);
            assert_eq!(graph.get(&v.digest).unwrap().digest, v.digest);
            assert_eq!(graph.position(&v.digest), Some(i));
            assert!(v.metadata.is_some());
            assert_eq!(v.inputs.len(), v.op.inputs.len());
            for (&p, input) in v.inputs.iter().zip(&v.op.inputs) {
                assert!(p < i, "{}: inputs come first", name(&case));
                assert_eq!(graph.ops()[p].digest, input.digest.as_str());
            }
        }
        // The terminal op: input-only, last line of the dump, result = its first input.
        let last: serde_json::Value = serde_json::from_str(expected.last().unwrap()).unwrap();
        assert_eq!(graph.terminal().digest, last["Digest"].as_str().unwrap());
        assert_eq!(
            graph.result().digest,
            last["Op"]["inputs"][0]["digest"].as_str().unwrap()
        );
        assert_eq!(graph.result_vertex().digest, graph.result().digest.as_str());
        let caps = &graph.terminal().metadata.as_ref().unwrap().caps;
        assert_eq!(caps.get("constraints"), Some(&true));
        n += 1;
    }
    eprintln!("validate: {n} non-empty cases");
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn definitions_re_encode_canonically() {
    for case in cases() {
        let (bytes, def, _) = load(&case);
        let again = encode_definition(&def);
        // Go writes the envelope's maps in random order: same length, same content.
        assert_eq!(again.len(), bytes.len(), "{}", name(&case));
        assert_eq!(decode_definition(&again).unwrap(), def, "{}", name(&case));
        assert_eq!(
            encode_definition(&decode_definition(&again).unwrap()),
            again
        );
    }
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn dot_has_a_node_per_op_and_an_edge_per_input() {
    for case in cases() {
        let (_, def, _) = load(&case);
        let dot = to_dot(&def).unwrap();
        assert!(dot.starts_with("digraph {\n") && dot.ends_with("}\n"));
        let nodes = dot
            .lines()
            .filter(|l| l.contains(" [label=") && !l.contains(" -> "))
            .count();
        let edges = dot.lines().filter(|l| l.contains(" -> ")).count();
        let inputs: usize = def
            .def
            .iter()
            .map(|b| pb::Op::decode(b.as_slice()).unwrap().inputs.len())
            .sum();
        assert_eq!(nodes, def.def.len(), "{}", name(&case));
        assert_eq!(edges, inputs, "{}", name(&case));
    }
    let (_, def, _) = load(&corpus().join("from-image-basic"));
    let dot = to_dot(&def).unwrap();
    eprintln!("{dot}");
    assert!(dot.contains(
        "  \"sha256:a5b84b8f17e05adc9b006e6ff4a765777b5faece91decb32d25a25bb9580c656\" \
         [label=\"a5b84b8f17e0\\ndocker-image://127.0.0.1:5000/library/busybox:latest@sha256:\
         d53446ae75a74596551f620f394d5dd30aa9743f781130c60b699f932752a9b3\" shape=\"ellipse\"];"
    ));
    assert!(dot.contains("[label=\"8554f0749321\\n/bin/sh -c echo hello\" shape=\"box\"];"));
    assert!(dot.contains(
        "  \"sha256:8554f0749321cced78d303da1e2d77783480f63cf656275d6c47849da8e79971\" -> \
         \"sha256:6b8950181cdd19a4bd3fbaadc35616a2fe178e6ceda934e309e5bcad67e94ac3\" [label=\"\"];"
    ));
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn from_scratch_empty_stage_is_a_0_byte_definition() {
    let case = corpus().join("from-scratch-empty-stage");
    let (bytes, def, expected) = load(&case);
    assert!(bytes.is_empty());
    assert!(expected.is_empty());
    assert_eq!(def, pb::Definition::default());
    assert!(encode_definition(&def).is_empty());
    assert!(dump_json_lines(&def).unwrap().is_empty());
    assert_eq!(to_dot(&def).unwrap(), "digraph {\n}\n");
    // For a solve it is "invalid empty definition"; as a result it is scratch.
    assert_eq!(
        validate(&def).unwrap_err().to_string(),
        "invalid empty definition"
    );
    assert!(validate_allow_empty(&def).unwrap().is_none());
}
