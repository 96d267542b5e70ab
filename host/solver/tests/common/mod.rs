//! LLB definitions written by hand for the solver's tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use buildwit_llb::{digest_of, encode_op, pb};

/// A definition from ops in order; each op's `inputs` name earlier ops by position.
pub fn definition(ops: Vec<(pb::Op, Vec<usize>)>) -> pb::Definition {
    let mut def = pb::Definition::default();
    let mut digests: Vec<String> = Vec::new();
    for (mut op, inputs) in ops {
        op.inputs = inputs
            .iter()
            .map(|&i| pb::Input {
                digest: digests[i].clone(),
                index: 0,
            })
            .collect();
        let bytes = encode_op(&op);
        digests.push(digest_of(&bytes).to_string());
        def.def.push(bytes);
    }
    let last = digests.last().unwrap().clone();
    def.def.push(encode_op(&pb::Op {
        inputs: vec![pb::Input {
            digest: last,
            index: 0,
        }],
        ..Default::default()
    }));
    def
}

/// A `local://NAME` source.
pub fn local(name: &str) -> pb::Op {
    pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: format!("local://{name}"),
            attrs: BTreeMap::new(),
        })),
        ..Default::default()
    }
}
