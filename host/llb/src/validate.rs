//! Validation of a Definition by BuildKit's rules, with errors that name the op.

use std::collections::HashMap;

use prost::Message;

use crate::{Digest, digest_of, pb};

/// Why a definition is not a valid LLB graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlbError {
    /// No ops at all (a scratch result, where the caller expects a graph).
    #[error("invalid empty definition")]
    Empty,
    /// Bytes that are not the message they should be.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded (`op 3`, `definition`).
        what: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// Not a `sha256:<hex>` digest.
    #[error("invalid digest {0:?}")]
    BadDigest(String),
    /// The last op must name the result.
    #[error("invalid LLB with no inputs on last vertex")]
    NoResult,
    /// An input names an op that is not in the definition.
    #[error("op {op} ({digest}): input {input} refers to {target}, which is not in the definition")]
    DanglingInput {
        /// Position of the op.
        op: usize,
        /// Its digest.
        digest: Digest,
        /// Position of the input.
        input: usize,
        /// The missing digest.
        target: String,
    },
    /// An input names an output the producing op does not have.
    #[error(
        "op {op} ({digest}): input {input} uses output {index} of {target}, which has {outputs} output(s)"
    )]
    BadOutputIndex {
        /// Position of the op.
        op: usize,
        /// Its digest.
        digest: Digest,
        /// Position of the input.
        input: usize,
        /// The output index asked for.
        index: i64,
        /// The producing op.
        target: Digest,
        /// How many outputs it has.
        outputs: usize,
    },
    /// Something inside an op is wrong.
    #[error("op {op} ({digest}): {reason}")]
    InvalidOp {
        /// Position of the op.
        op: usize,
        /// Its digest.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// The graph has a cycle.
    #[error("the graph has a cycle through {0}")]
    Cycle(Digest),
}

/// One decoded op of a valid graph.
#[derive(Clone, Debug)]
pub struct Vertex {
    /// Its digest.
    pub digest: Digest,
    /// The op.
    pub op: pb::Op,
    /// Its metadata, if the definition has any.
    pub metadata: Option<pb::OpMetadata>,
}

/// A valid graph: the ops in definition order (terminal op excluded) and the result.
#[derive(Clone, Debug)]
pub struct Graph {
    /// The ops, in definition order.
    pub vertices: Vec<Vertex>,
    /// The result: an op and its output index.
    pub result: (Digest, i64),
    index: HashMap<Digest, usize>,
}

impl Graph {
    /// An op by digest.
    pub fn get(&self, digest: &Digest) -> Option<&Vertex> {
        self.index.get(digest).map(|&i| &self.vertices[i])
    }

    /// The op whose output is the result.
    pub fn result_vertex(&self) -> &Vertex {
        self.get(&self.result.0).expect("validated")
    }
}

/// Number of outputs an op has.
pub fn output_count(op: &pb::Op) -> usize {
    match &op.op {
        Some(pb::op::Op::Exec(e)) => e.mounts.iter().filter(|m| produces_output(m)).count(),
        Some(pb::op::Op::File(f)) => f.actions.iter().filter(|a| a.output >= 0).count(),
        Some(pb::op::Op::Passthrough(p)) => p.outputs.len(),
        Some(_) => 1,
        None => 0,
    }
}

/// Whether an exec mount is an output: secret, ssh, cache and tmpfs mounts never are
/// (BuildKit's client leaves their `output` at 0 for secrets and ssh).
fn produces_output(m: &pb::Mount) -> bool {
    m.output >= 0 && m.mount_type == pb::MountType::Bind as i32
}

/// Check a definition by BuildKit's rules and return its graph.
pub fn validate(def: &pb::Definition) -> Result<Graph, LlbError> {
    let (last, ops) = def.def.split_last().ok_or(LlbError::Empty)?;
    let mut vertices = Vec::with_capacity(ops.len());
    let mut index = HashMap::with_capacity(ops.len());
    for (i, bytes) in ops.iter().enumerate() {
        let op = pb::Op::decode(bytes.as_slice()).map_err(|e| LlbError::Decode {
            what: format!("op {i}"),
            reason: e.to_string(),
        })?;
        let digest = digest_of(bytes);
        let metadata = def.metadata.get(digest.as_str()).cloned();
        // BuildKit keys ops by digest: a repeated op is the same vertex.
        if index.contains_key(&digest) {
            continue;
        }
        index.insert(digest.clone(), vertices.len());
        vertices.push(Vertex {
            digest,
            op,
            metadata,
        });
    }
    let terminal = pb::Op::decode(last.as_slice()).map_err(|e| LlbError::Decode {
        what: "the terminal op".into(),
        reason: e.to_string(),
    })?;
    let result = terminal.inputs.first().ok_or(LlbError::NoResult)?;

    let graph_len = vertices.len();
    let check_input =
        |i: usize, digest: &Digest, j: usize, input: &pb::Input| -> Result<usize, LlbError> {
            let target: Digest = input.digest.parse().map_err(|_| LlbError::DanglingInput {
                op: i,
                digest: digest.clone(),
                input: j,
                target: input.digest.clone(),
            })?;
            let &t = index.get(&target).ok_or_else(|| LlbError::DanglingInput {
                op: i,
                digest: digest.clone(),
                input: j,
                target: input.digest.clone(),
            })?;
            let outputs = output_count(&vertices[t].op);
            if input.index < 0 || input.index as usize >= outputs {
                return Err(LlbError::BadOutputIndex {
                    op: i,
                    digest: digest.clone(),
                    input: j,
                    index: input.index,
                    target,
                    outputs,
                });
            }
            Ok(t)
        };
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); graph_len];
    for (i, v) in vertices.iter().enumerate() {
        for (j, input) in v.op.inputs.iter().enumerate() {
            edges[i].push(check_input(i, &v.digest, j, input)?);
        }
        check_op(&v.op).map_err(|reason| LlbError::InvalidOp {
            op: i,
            digest: v.digest.clone(),
            reason,
        })?;
    }
    let result_target = check_input(graph_len, &digest_of(last), 0, result)?;
    if let Some(v) = find_cycle(&edges) {
        return Err(LlbError::Cycle(vertices[v].digest.clone()));
    }
    Ok(Graph {
        result: (vertices[result_target].digest.clone(), result.index),
        vertices,
        index,
    })
}

/// Rules on one op's content (BuildKit's `opsutils.Validate` and enum checks).
fn check_op(op: &pb::Op) -> Result<(), String> {
    let inputs = op.inputs.len() as i64;
    let in_range = |what: &str, i: i64, limit: i64| {
        if i < -1 || i >= limit {
            Err(format!("{what} {i} is out of range (-1..{limit})"))
        } else {
            Ok(())
        }
    };
    match &op.op {
        None => Err("op has no operation".into()),
        Some(pb::op::Op::Exec(e)) => {
            let meta = e.meta.as_ref().ok_or("exec without meta")?;
            if meta.args.is_empty() {
                return Err("exec without arguments".into());
            }
            if e.mounts.is_empty() {
                return Err("exec without mounts".into());
            }
            if !e.mounts.iter().any(|m| m.dest == "/") {
                return Err("exec without a root mount (dest \"/\")".into());
            }
            pb::NetMode::try_from(e.network)
                .map_err(|_| format!("invalid network mode {}", e.network))?;
            pb::SecurityMode::try_from(e.security)
                .map_err(|_| format!("invalid security mode {}", e.security))?;
            let mut outputs = std::collections::HashSet::new();
            for m in &e.mounts {
                in_range(&format!("mount {} input", m.dest), m.input, inputs)?;
                pb::MountType::try_from(m.mount_type).map_err(|_| {
                    format!("mount {}: invalid mount type {}", m.dest, m.mount_type)
                })?;
                if let Some(c) = &m.cache_opt {
                    pb::CacheSharingOpt::try_from(c.sharing).map_err(|_| {
                        format!("mount {}: invalid cache sharing {}", m.dest, c.sharing)
                    })?;
                }
                if produces_output(m) && !outputs.insert(m.output) {
                    return Err(format!("mount {}: duplicate output {}", m.dest, m.output));
                }
            }
            Ok(())
        }
        Some(pb::op::Op::File(f)) => {
            if f.actions.is_empty() {
                return Err("file op without actions".into());
            }
            let mut outputs = std::collections::HashSet::new();
            for (k, a) in f.actions.iter().enumerate() {
                let limit = inputs + k as i64;
                in_range(&format!("action {k} input"), a.input, limit)?;
                in_range(
                    &format!("action {k} secondary input"),
                    a.secondary_input,
                    limit,
                )?;
                if a.action.is_none() {
                    return Err(format!("action {k} has no action"));
                }
                if a.output >= 0 && !outputs.insert(a.output) {
                    return Err(format!("action {k}: duplicate output {}", a.output));
                }
            }
            Ok(())
        }
        Some(pb::op::Op::Source(s)) => {
            if s.identifier.is_empty() {
                Err("source without identifier".into())
            } else {
                Ok(())
            }
        }
        Some(pb::op::Op::Merge(m)) => {
            if m.inputs.is_empty() {
                return Err("merge without inputs".into());
            }
            m.inputs
                .iter()
                .try_for_each(|i| in_range("merge input", i.input, inputs))
        }
        Some(pb::op::Op::Diff(d)) => {
            in_range(
                "diff lower",
                d.lower.as_ref().map_or(-1, |l| l.input),
                inputs,
            )?;
            in_range(
                "diff upper",
                d.upper.as_ref().map_or(-1, |u| u.input),
                inputs,
            )
        }
        Some(pb::op::Op::Build(b)) => in_range("build builder", b.builder, inputs),
        Some(pb::op::Op::Passthrough(p)) => {
            if p.id.is_empty() || p.outputs.is_empty() {
                return Err("passthrough needs an id and at least one output".into());
            }
            p.outputs.iter().try_for_each(|&o| {
                if o < 0 || o >= inputs {
                    Err(format!(
                        "passthrough output {o} is out of range (0..{inputs})"
                    ))
                } else {
                    Ok(())
                }
            })
        }
    }
}

/// A vertex on a cycle, if the graph has one (iterative DFS, three colours).
fn find_cycle(edges: &[Vec<usize>]) -> Option<usize> {
    let mut colour = vec![0u8; edges.len()];
    for start in 0..edges.len() {
        if colour[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        colour[start] = 1;
        while let Some(&mut (v, ref mut next)) = stack.last_mut() {
            if let Some(&w) = edges[v].get(*next) {
                *next += 1;
                match colour[w] {
                    0 => {
                        colour[w] = 1;
                        stack.push((w, 0));
                    }
                    1 => return Some(w),
                    _ => {}
                }
            } else {
                colour[v] = 2;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_op;

    fn source(id: &str) -> pb::Op {
        pb::Op {
            op: Some(pb::op::Op::Source(pb::SourceOp {
                identifier: id.into(),
                ..Default::default()
            })),
            constraints: Some(pb::WorkerConstraints::default()),
            ..Default::default()
        }
    }

    fn exec(input: &Digest, mounts: Vec<pb::Mount>, network: i32) -> pb::Op {
        pb::Op {
            inputs: vec![pb::Input {
                digest: input.to_string(),
                index: 0,
            }],
            op: Some(pb::op::Op::Exec(pb::ExecOp {
                meta: Some(pb::Meta {
                    args: vec!["true".into()],
                    ..Default::default()
                }),
                mounts,
                network,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn root() -> pb::Mount {
        pb::Mount {
            dest: "/".into(),
            ..Default::default()
        }
    }

    fn def(ops: &[pb::Op], result: &Digest, index: i64) -> pb::Definition {
        let mut d = pb::Definition::default();
        for op in ops {
            d.def.push(encode_op(op));
        }
        d.def.push(encode_op(&pb::Op {
            inputs: vec![pb::Input {
                digest: result.to_string(),
                index,
            }],
            ..Default::default()
        }));
        d
    }

    #[test]
    fn a_valid_graph() {
        let img = source("docker-image://docker.io/library/busybox:latest");
        let d_img = digest_of(&encode_op(&img));
        let run = exec(&d_img, vec![root()], 0);
        let d_run = digest_of(&encode_op(&run));
        let g = validate(&def(&[img, run], &d_run, 0)).unwrap();
        assert_eq!(g.vertices.len(), 2);
        assert_eq!(g.result.0, d_run);
        assert!(matches!(g.result_vertex().op.op, Some(pb::op::Op::Exec(_))));
    }

    #[test]
    fn errors_name_the_problem() {
        let img = source("local://context");
        let d_img = digest_of(&encode_op(&img));
        let check = |ops: &[pb::Op], result: &Digest, index: i64| {
            validate(&def(ops, result, index)).unwrap_err()
        };

        assert_eq!(
            validate(&pb::Definition::default()).unwrap_err(),
            LlbError::Empty
        );
        assert!(
            check(std::slice::from_ref(&img), &d_img, 1)
                .to_string()
                .contains("uses output 1")
        );
        let missing = digest_of(b"nothing");
        assert!(matches!(
            check(std::slice::from_ref(&img), &missing, 0),
            LlbError::DanglingInput { .. }
        ));

        let no_root = exec(
            &d_img,
            vec![pb::Mount {
                dest: "/x".into(),
                ..Default::default()
            }],
            0,
        );
        let d = digest_of(&encode_op(&no_root));
        let e = check(&[img.clone(), no_root], &d, 0);
        assert!(e.to_string().contains("exec without a root mount"), "{e}");

        let bad_net = exec(&d_img, vec![root()], 7);
        let d = digest_of(&encode_op(&bad_net));
        assert!(
            check(&[img.clone(), bad_net], &d, 0)
                .to_string()
                .contains("invalid network mode 7")
        );

        let mut bad_sec = exec(&d_img, vec![root()], 0);
        if let Some(pb::op::Op::Exec(e)) = &mut bad_sec.op {
            e.security = 3;
        }
        let d = digest_of(&encode_op(&bad_sec));
        assert!(
            check(&[img.clone(), bad_sec], &d, 0)
                .to_string()
                .contains("invalid security mode 3")
        );

        let terminal_only = pb::Definition {
            def: vec![encode_op(&pb::Op::default())],
            ..Default::default()
        };
        assert_eq!(validate(&terminal_only).unwrap_err(), LlbError::NoResult);

        let garbage = pb::Definition {
            def: vec![vec![0xff, 0xff], encode_op(&pb::Op::default())],
            ..Default::default()
        };
        assert!(matches!(
            validate(&garbage).unwrap_err(),
            LlbError::Decode { .. }
        ));
    }

    #[test]
    fn file_actions_may_only_use_earlier_results() {
        let img = source("local://context");
        let d_img = digest_of(&encode_op(&img));
        let file = pb::Op {
            inputs: vec![pb::Input {
                digest: d_img.to_string(),
                index: 0,
            }],
            op: Some(pb::op::Op::File(pb::FileOp {
                actions: vec![pb::FileAction {
                    input: 1, // the result of action 0 — itself
                    secondary_input: -1,
                    output: 0,
                    action: Some(pb::file_action::Action::Rm(pb::FileActionRm::default())),
                }],
            })),
            ..Default::default()
        };
        let d = digest_of(&encode_op(&file));
        let e = validate(&def(&[img, file], &d, 0)).unwrap_err();
        assert!(
            e.to_string().contains("action 0 input 1 is out of range"),
            "{e}"
        );
    }

    #[test]
    fn cycles_are_found() {
        assert_eq!(find_cycle(&[vec![1], vec![2], vec![]]), None);
        assert_eq!(find_cycle(&[vec![1], vec![2], vec![0]]), Some(0));
        assert_eq!(find_cycle(&[vec![], vec![1]]), Some(1));
    }
}
