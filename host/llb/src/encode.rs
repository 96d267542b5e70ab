//! The canonical encoding of ops: what Go's `proto.MarshalOptions{Deterministic: true}`
//! writes. prost's derived encoder agrees with it except in two places, handled here:
//!
//! - Go writes a message's non-oneof fields first (by number) and its oneofs last; only
//!   `Op` has a oneof with lower numbers than other fields (`platform`, `constraints`).
//! - Go writes every map entry with both its key and its value, even when they are empty
//!   (`12 00` for an empty string or message value, `10 00` for `false`); prost leaves
//!   default keys and values out. Maps appear in `SourceOp`, `BuildOp` and, through
//!   `BuildOp.def`, in `Definition`, `OpMetadata` and `Source`.
//!
//! Messages without maps or early oneofs go through prost unchanged.

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, message};

use crate::pb;

fn len_delimited(tag: u32, body: &[u8], buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(body.len() as u64, buf);
    buf.extend_from_slice(body);
}

fn varint(tag: u32, value: u64, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(value, buf);
}

fn string(tag: u32, s: &str, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        len_delimited(tag, s.as_bytes(), buf);
    }
}

fn int64(tag: u32, v: i64, buf: &mut Vec<u8>) {
    if v != 0 {
        varint(tag, v as u64, buf);
    }
}

fn boolean(tag: u32, v: bool, buf: &mut Vec<u8>) {
    if v {
        varint(tag, 1, buf);
    }
}

/// One map entry as Go writes it: key (1) and value (2), both always present.
fn map_entry(tag: u32, key: &str, value: impl FnOnce(&mut Vec<u8>), buf: &mut Vec<u8>) {
    let mut entry = Vec::with_capacity(key.len() + 16);
    len_delimited(1, key.as_bytes(), &mut entry);
    value(&mut entry);
    len_delimited(tag, &entry, buf);
}

fn string_map(tag: u32, map: &std::collections::BTreeMap<String, String>, buf: &mut Vec<u8>) {
    for (k, v) in map {
        map_entry(tag, k, |e| len_delimited(2, v.as_bytes(), e), buf);
    }
}

/// A canonically encoded op: the bytes whose SHA-256 is its digest.
pub fn encode_op(op: &pb::Op) -> Vec<u8> {
    let mut buf = Vec::with_capacity(op.encoded_len() + 8);
    for input in &op.inputs {
        message::encode(1, input, &mut buf);
    }
    if let Some(p) = &op.platform {
        message::encode(10, p, &mut buf);
    }
    if let Some(c) = &op.constraints {
        message::encode(11, c, &mut buf);
    }
    match &op.op {
        Some(pb::op::Op::Source(s)) => len_delimited(3, &source_op(s), &mut buf),
        Some(pb::op::Op::Build(b)) => len_delimited(5, &build_op(b), &mut buf),
        Some(kind) => kind.encode(&mut buf),
        None => {}
    }
    buf
}

fn source_op(s: &pb::SourceOp) -> Vec<u8> {
    let mut buf = Vec::with_capacity(s.encoded_len() + 16);
    string(1, &s.identifier, &mut buf);
    string_map(2, &s.attrs, &mut buf);
    buf
}

fn build_op(b: &pb::BuildOp) -> Vec<u8> {
    let mut buf = Vec::new();
    int64(1, b.builder, &mut buf);
    for (k, v) in &b.inputs {
        map_entry(2, k, |e| len_delimited(2, &v.encode_to_vec(), e), &mut buf);
    }
    if let Some(d) = &b.def {
        len_delimited(3, &encode_definition(d), &mut buf);
    }
    string_map(4, &b.attrs, &mut buf);
    buf
}

/// A definition, encoded canonically (metadata sorted by digest, Go's map entries).
pub fn encode_definition(d: &pb::Definition) -> Vec<u8> {
    let mut buf = Vec::with_capacity(d.encoded_len() + 64);
    for op in &d.def {
        len_delimited(1, op, &mut buf);
    }
    for (k, m) in &d.metadata {
        map_entry(2, k, |e| len_delimited(2, &op_metadata(m), e), &mut buf);
    }
    if let Some(s) = &d.source {
        len_delimited(3, &source(s), &mut buf);
    }
    buf
}

fn op_metadata(m: &pb::OpMetadata) -> Vec<u8> {
    let mut buf = Vec::new();
    boolean(1, m.ignore_cache, &mut buf);
    string_map(2, &m.description, &mut buf);
    if let Some(e) = &m.export_cache {
        message::encode(4, e, &mut buf);
    }
    for (k, v) in &m.caps {
        map_entry(5, k, |e| varint(2, u64::from(*v), e), &mut buf);
    }
    if let Some(g) = &m.progress_group {
        message::encode(6, g, &mut buf);
    }
    if let Some(r) = &m.linux_resources {
        message::encode(7, r, &mut buf);
    }
    buf
}

fn source(s: &pb::Source) -> Vec<u8> {
    let mut buf = Vec::new();
    for (k, l) in &s.locations {
        map_entry(1, k, |e| len_delimited(2, &l.encode_to_vec(), e), &mut buf);
    }
    for info in &s.infos {
        let mut body = Vec::new();
        string(1, &info.filename, &mut body);
        if !info.data.is_empty() {
            len_delimited(2, &info.data, &mut body);
        }
        if let Some(d) = &info.definition {
            len_delimited(3, &encode_definition(d), &mut body);
        }
        string(4, &info.language, &mut body);
        len_delimited(2, &body, &mut buf);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn source_with(attrs: &[(&str, &str)]) -> pb::Op {
        pb::Op {
            op: Some(pb::op::Op::Source(pb::SourceOp {
                identifier: "local://context".into(),
                attrs: attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn maps_without_maps_or_oneofs_match_prost() {
        // No map entries: the canonical encoding is prost's, save for the oneof position.
        let op = source_with(&[("a", "b")]);
        assert_eq!(encode_op(&op), op.encode_to_vec());
    }

    #[test]
    fn empty_map_values_are_written_like_go() {
        let bytes = encode_op(&source_with(&[("k", "")]));
        // 1a: field 3 (source); inner: 0a 0f "local://context", 12 05 (entry: 0a 01 'k' 12 00)
        let want = [
            &[0x1a, 0x18, 0x0a, 0x0f][..],
            b"local://context",
            &[0x12, 0x05, 0x0a, 0x01, b'k', 0x12, 0x00],
        ]
        .concat();
        assert_eq!(bytes, want);
        // prost would have left the empty value out.
        assert_ne!(bytes, source_with(&[("k", "")]).encode_to_vec());
        // and decoding gives the same op back.
        assert_eq!(
            pb::Op::decode(bytes.as_slice()).unwrap(),
            source_with(&[("k", "")])
        );
    }

    #[test]
    fn false_caps_and_empty_build_inputs_are_written() {
        let mut m = pb::OpMetadata::default();
        m.caps.insert("x".into(), false);
        assert_eq!(op_metadata(&m), [0x2a, 0x05, 0x0a, 0x01, b'x', 0x10, 0x00]);
        let b = pb::BuildOp {
            inputs: BTreeMap::from([("i".to_string(), pb::BuildInput { input: 0 })]),
            ..Default::default()
        };
        assert_eq!(build_op(&b), [0x12, 0x05, 0x0a, 0x01, b'i', 0x12, 0x00]);
    }

    #[test]
    fn oneof_goes_after_platform_and_constraints() {
        let op = pb::Op {
            constraints: Some(pb::WorkerConstraints::default()),
            op: Some(pb::op::Op::Merge(pb::MergeOp::default())),
            ..Default::default()
        };
        // constraints set but empty: `5a 00`, then merge: `32 00`.
        assert_eq!(encode_op(&op), [0x5a, 0x00, 0x32, 0x00]);
        assert_eq!(op.encode_to_vec(), [0x32, 0x00, 0x5a, 0x00]);
    }
}
