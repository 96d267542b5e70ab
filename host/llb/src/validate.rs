//! Validation of a Definition by BuildKit's rules, with errors that name the op.

use std::collections::{HashMap, HashSet};

use crate::{Digest, decode_op, digest_of, pb};

/// Why a definition is not a valid LLB graph. Errors about one op name its position in
/// `Definition.def` and its digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlbError {
    /// No ops at all. For a solve this is an error; as a result it means scratch (see
    /// [`validate_allow_empty`]).
    #[error("invalid empty definition")]
    Empty,
    /// Bytes that are not the message they should be.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded (`op 3 (sha256:…)`, `definition`).
        what: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// Not a `sha256:<hex>` digest.
    #[error("invalid digest {0:?}")]
    BadDigest(String),
    /// The last (terminal) op must name the result in its first input.
    #[error("op {op} ({digest}): invalid LLB with no inputs on last vertex")]
    NoResult {
        /// Position of the terminal op.
        op: usize,
        /// Its digest.
        digest: Digest,
    },
    /// The same op bytes appear twice.
    #[error("op {op} ({digest}): duplicate of op {first}")]
    DuplicateOp {
        /// Position of the repeat.
        op: usize,
        /// Position of the first occurrence.
        first: usize,
        /// The digest both have.
        digest: Digest,
    },
    /// An input names an op that is not in the definition.
    #[error(
        "op {op} ({digest}): input {input} refers to {target:?}, which is not an op of the definition"
    )]
    DanglingInput {
        /// Position of the op.
        op: usize,
        /// Its digest.
        digest: Digest,
        /// Position of the input in `Op.inputs`.
        input: usize,
        /// The digest it names.
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
        /// Position of the input in `Op.inputs`.
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
    #[error("op {op} ({digest}) is on a cycle")]
    Cycle {
        /// Position of an op on the cycle.
        op: usize,
        /// Its digest.
        digest: Digest,
    },
}

/// One op of a valid graph.
#[derive(Clone, Debug)]
pub struct Vertex {
    /// Its digest: SHA-256 of `bytes`.
    pub digest: Digest,
    /// The decoded op.
    pub op: pb::Op,
    /// Its exact bytes from `Definition.def`.
    pub bytes: Vec<u8>,
    /// Its entry in `Definition.metadata`, if any.
    pub metadata: Option<pb::OpMetadata>,
    /// For each of `op.inputs`, the position of the producing op in [`Graph::ops`].
    pub inputs: Vec<usize>,
}

/// A valid graph: the ops in definition order, the terminal op, lookups by digest.
#[derive(Clone, Debug)]
pub struct Graph {
    ops: Vec<Vertex>,
    terminal: Vertex,
    index: HashMap<Digest, usize>,
}

impl Graph {
    /// The ops in definition order, without the terminal op; `ops()[i]` is `def[i]`.
    pub fn ops(&self) -> &[Vertex] {
        &self.ops
    }

    /// The terminal op (the last element of `def`); its first input is the result.
    pub fn terminal(&self) -> &Vertex {
        &self.terminal
    }

    /// The result: the terminal op's first input (an op digest and output index).
    pub fn result(&self) -> &pb::Input {
        &self.terminal.op.inputs[0]
    }

    /// The op whose output is the result.
    pub fn result_vertex(&self) -> &Vertex {
        &self.ops[self.terminal.inputs[0]]
    }

    /// An op by digest (the terminal op is not looked up).
    pub fn get(&self, digest: &Digest) -> Option<&Vertex> {
        self.index.get(digest).map(|&i| &self.ops[i])
    }

    /// An op by digest string.
    pub fn get_str(&self, digest: &str) -> Option<&Vertex> {
        self.get(&digest.parse().ok()?)
    }

    /// The position of an op in [`Graph::ops`].
    pub fn position(&self, digest: &Digest) -> Option<usize> {
        self.index.get(digest).copied()
    }
}

/// Number of outputs an op has: for exec the bind mounts with `output >= 0` (secret, ssh,
/// cache and tmpfs mounts never produce one; BuildKit's client leaves `output` at 0 on
/// secret and ssh mounts), for file the actions with `output >= 0`, for passthrough
/// `outputs.len()`, 1 for source, merge, diff and build, 0 for an op without operation.
pub fn output_count(op: &pb::Op) -> usize {
    match &op.op {
        Some(pb::op::Op::Exec(e)) => e.mounts.iter().filter(|m| produces_output(m)).count(),
        Some(pb::op::Op::File(f)) => f.actions.iter().filter(|a| a.output >= 0).count(),
        Some(pb::op::Op::Passthrough(p)) => p.outputs.len(),
        Some(_) => 1,
        None => 0,
    }
}

fn produces_output(m: &pb::Mount) -> bool {
    m.output >= 0 && m.mount_type == pb::MountType::Bind as i32
}

/// Like [`validate`], but an empty definition (0 ops, 0 bytes) is `Ok(None)`: a scratch
/// result, which is how BuildKit's client marshals a scratch state.
pub fn validate_allow_empty(def: &pb::Definition) -> Result<Option<Graph>, LlbError> {
    if def.def.is_empty() {
        return Ok(None);
    }
    validate(def).map(Some)
}

/// Check a definition by BuildKit's rules and return its graph. An empty definition is
/// [`LlbError::Empty`] ("invalid empty definition"), as for a solve; callers that accept
/// scratch use [`validate_allow_empty`].
///
/// Checked: every op decodes; no op appears twice; the last op has an input (the result);
/// every input names an op of the definition and one of its outputs; exec ops have meta,
/// args, mounts and a root mount, known network/security/mount-type/cache-sharing values,
/// mount inputs in range and no duplicate outputs; file actions read only inputs or
/// earlier actions and have distinct outputs; merge/diff/build/passthrough indexes are in
/// range; the graph is acyclic.
pub fn validate(def: &pb::Definition) -> Result<Graph, LlbError> {
    let (last, rest) = def.def.split_last().ok_or(LlbError::Empty)?;
    let mut ops = Vec::with_capacity(rest.len());
    let mut index: HashMap<Digest, usize> = HashMap::with_capacity(rest.len());
    for (i, bytes) in rest.iter().enumerate() {
        let op = decode_op(i, bytes)?;
        let digest = digest_of(bytes);
        if let Some(&first) = index.get(&digest) {
            return Err(LlbError::DuplicateOp {
                op: i,
                first,
                digest,
            });
        }
        index.insert(digest.clone(), i);
        ops.push(Vertex {
            metadata: def.metadata.get(digest.as_str()).cloned(),
            digest,
            op,
            bytes: bytes.clone(),
            inputs: Vec::new(),
        });
    }
    let t = rest.len();
    let terminal_op = decode_op(t, last)?;
    let terminal_digest = digest_of(last);
    if terminal_op.inputs.is_empty() {
        return Err(LlbError::NoResult {
            op: t,
            digest: terminal_digest,
        });
    }
    if let Some(&first) = index.get(&terminal_digest) {
        return Err(LlbError::DuplicateOp {
            op: t,
            first,
            digest: terminal_digest,
        });
    }

    let resolve = |i: usize, digest: &Digest, op: &pb::Op| -> Result<Vec<usize>, LlbError> {
        let mut out = Vec::with_capacity(op.inputs.len());
        for (j, input) in op.inputs.iter().enumerate() {
            let dangling = || LlbError::DanglingInput {
                op: i,
                digest: digest.clone(),
                input: j,
                target: input.digest.clone(),
            };
            let target: Digest = input.digest.parse().map_err(|_| dangling())?;
            let &p = index.get(&target).ok_or_else(dangling)?;
            let outputs = output_count(&ops[p].op);
            if input.index < 0 || input.index as u64 >= outputs as u64 {
                return Err(LlbError::BadOutputIndex {
                    op: i,
                    digest: digest.clone(),
                    input: j,
                    index: input.index,
                    target,
                    outputs,
                });
            }
            out.push(p);
        }
        Ok(out)
    };
    let mut edges = Vec::with_capacity(ops.len());
    for (i, v) in ops.iter().enumerate() {
        check_op(&v.op).map_err(|reason| LlbError::InvalidOp {
            op: i,
            digest: v.digest.clone(),
            reason,
        })?;
        edges.push(resolve(i, &v.digest, &v.op)?);
    }
    // Only the first input of the terminal op counts (BuildKit's `Inputs[0]`).
    let result = pb::Op {
        inputs: terminal_op.inputs[..1].to_vec(),
        ..Default::default()
    };
    let terminal_inputs = resolve(t, &terminal_digest, &result)?;
    if let Some(v) = find_cycle(&edges) {
        return Err(LlbError::Cycle {
            op: v,
            digest: ops[v].digest.clone(),
        });
    }
    for (v, e) in ops.iter_mut().zip(edges) {
        v.inputs = e;
    }
    Ok(Graph {
        terminal: Vertex {
            metadata: def.metadata.get(terminal_digest.as_str()).cloned(),
            digest: terminal_digest,
            op: terminal_op,
            bytes: last.clone(),
            inputs: terminal_inputs,
        },
        ops,
        index,
    })
}

/// Rules on one op's content (BuildKit's `opsutils.Validate`, the enum checks and the
/// index checks of the file, merge, diff, build and passthrough solvers).
fn check_op(op: &pb::Op) -> Result<(), String> {
    let inputs = op.inputs.len() as i64;
    let in_range = |what: &str, i: i64, limit: i64| {
        if i < -1 || i >= limit {
            Err(format!(
                "{what} {i} is out of range (-1 for scratch, or below {limit})"
            ))
        } else {
            Ok(())
        }
    };
    match &op.op {
        None => Err("op has no operation (only the last op may be input-only)".into()),
        Some(pb::op::Op::Exec(e)) => {
            let meta = e.meta.as_ref().ok_or("exec without meta")?;
            if meta.args.is_empty() {
                return Err("exec without args".into());
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
            let mut outputs = HashSet::new();
            for (k, m) in e.mounts.iter().enumerate() {
                let name = format!("mount {k} ({:?})", m.dest);
                in_range(&format!("{name}: input"), m.input, inputs)?;
                pb::MountType::try_from(m.mount_type)
                    .map_err(|_| format!("{name}: invalid mount type {}", m.mount_type))?;
                if let Some(c) = &m.cache_opt {
                    pb::CacheSharingOpt::try_from(c.sharing)
                        .map_err(|_| format!("{name}: invalid cache sharing mode {}", c.sharing))?;
                }
                if produces_output(m) && !outputs.insert(m.output) {
                    return Err(format!("{name}: duplicate output {}", m.output));
                }
            }
            Ok(())
        }
        Some(pb::op::Op::File(f)) => {
            if f.actions.is_empty() {
                return Err("file op without actions".into());
            }
            let mut outputs = HashSet::new();
            for (k, a) in f.actions.iter().enumerate() {
                // Inputs, or the results of earlier actions (`len(inputs) + k`).
                let limit = inputs + k as i64;
                in_range(&format!("file action {k}: input"), a.input, limit)?;
                in_range(
                    &format!("file action {k}: secondary input"),
                    a.secondary_input,
                    limit,
                )?;
                if a.action.is_none() {
                    return Err(format!("file action {k} has no action"));
                }
                if a.output >= 0 && !outputs.insert(a.output) {
                    return Err(format!("file action {k}: duplicate output {}", a.output));
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
                .enumerate()
                .try_for_each(|(k, i)| in_range(&format!("merge input {k}:"), i.input, inputs))
        }
        Some(pb::op::Op::Diff(d)) => {
            in_range(
                "diff lower input",
                d.lower.as_ref().map_or(-1, |l| l.input),
                inputs,
            )?;
            in_range(
                "diff upper input",
                d.upper.as_ref().map_or(-1, |u| u.input),
                inputs,
            )
        }
        Some(pb::op::Op::Build(b)) => {
            in_range("build builder input", b.builder, inputs)?;
            b.inputs.iter().try_for_each(|(name, i)| {
                in_range(&format!("build input {name:?}:"), i.input, inputs)
            })
        }
        Some(pb::op::Op::Passthrough(p)) => {
            if p.id.is_empty() {
                return Err("passthrough without id".into());
            }
            if p.outputs.is_empty() {
                return Err("passthrough without outputs".into());
            }
            p.outputs.iter().enumerate().try_for_each(|(k, &o)| {
                if o < 0 || o >= inputs {
                    Err(format!(
                        "passthrough output {k}: input {o} is out of range (below {inputs})"
                    ))
                } else {
                    Ok(())
                }
            })
        }
    }
}

/// A vertex on a cycle, if the graph has one (iterative DFS, three colours). With inputs
/// named by content digest a cycle cannot be built; this guards the invariant anyway.
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
    use super::find_cycle;

    #[test]
    fn cycles_are_found() {
        assert_eq!(find_cycle(&[vec![1], vec![2], vec![]]), None);
        assert_eq!(find_cycle(&[vec![1], vec![2], vec![0]]), Some(0));
        assert_eq!(find_cycle(&[vec![], vec![1]]), Some(1));
        assert_eq!(find_cycle(&[vec![], vec![0], vec![0, 1]]), None);
    }
}
