//! Every Definition the real BuildKit wrote in ../shared/conformance/dockerfile: ops
//! re-encode to the same bytes, digests match, and the JSON equals `buildctl debug dump-llb`.

use std::path::PathBuf;

use buildwit_llb::{decode_definition, digest_of, dump_json_lines, encode_op, pb, validate};
use prost::Message;

fn cases() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/dockerfile"
    ));
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.llb.pb").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 60, "found only {} cases", cases.len());
    cases
}

#[test]
fn ops_round_trip_byte_for_byte_with_buildkits_digests_and_json() {
    let mut ops = 0;
    let mut identical_lines = 0;
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(case.join("expected.llb.pb")).unwrap();
        let def = decode_definition(&bytes).unwrap();
        let expected = std::fs::read_to_string(case.join("expected.llb.jsonl")).unwrap();
        let expected: Vec<&str> = expected.lines().collect();
        assert_eq!(def.def.len(), expected.len(), "{name}: op count");
        for (i, op_bytes) in def.def.iter().enumerate() {
            let op = pb::Op::decode(op_bytes.as_slice()).unwrap();
            assert_eq!(
                &encode_op(&op),
                op_bytes,
                "{name}: op {i} does not re-encode to the same bytes"
            );
            let want: serde_json::Value = serde_json::from_str(expected[i]).unwrap();
            assert_eq!(
                digest_of(op_bytes).as_str(),
                want["Digest"],
                "{name}: op {i} digest"
            );
            ops += 1;
        }
        let lines = dump_json_lines(&def).unwrap();
        for (i, line) in lines.iter().enumerate() {
            let got: serde_json::Value = serde_json::from_str(line).unwrap();
            let want: serde_json::Value = serde_json::from_str(expected[i]).unwrap();
            assert_eq!(got, want, "{name}: op {i} JSON");
            identical_lines += usize::from(line == expected[i]);
        }
        if def.def.is_empty() {
            assert!(bytes.is_empty(), "{name}: an empty definition is 0 bytes");
            assert!(validate(&def).is_err());
        } else {
            let graph = validate(&def).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(graph.vertices.len() + 1, def.def.len(), "{name}");
        }
    }
    eprintln!(
        "{ops} ops round-tripped; {identical_lines}/{ops} JSON lines byte-identical to buildctl's"
    );
    assert_eq!(identical_lines, ops, "every JSON line is byte-identical");
}
