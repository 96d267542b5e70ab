//! Cache keys.
//!
//! A vertex's key covers its op (with the digests of its inputs left out) and, for each
//! input, what it reads of it: the input's own key, or, when the input is a local source,
//! the checksum of just the paths the op reads from it (the copy's sources, the mount's
//! selector). Editing a file of the context that a copy does not select keeps its key.
//! A local source's key is the checksum of its files; an image's, its pinned reference.

use buildwit_llb::{encode_op, pb};
use buildwit_worker::local::LocalTree;
use sha2::{Digest as _, Sha256};

/// Attributes of a source that change per session, not with its content.
const VOLATILE_ATTRS: &[&str] = &["local.unique", "local.sessionid"];

/// What an op reads of its input `i`: `None` = all of it, else these paths.
pub fn selectors(op: &pb::Op, i: usize) -> Option<Vec<String>> {
    let i = i as i64;
    match &op.op {
        Some(pb::op::Op::File(f)) => {
            let mut paths = Vec::new();
            for a in &f.actions {
                if a.input == i {
                    return None;
                }
                if a.secondary_input == i {
                    match &a.action {
                        Some(pb::file_action::Action::Copy(c)) => paths.push(c.src.clone()),
                        _ => return None,
                    }
                }
            }
            Some(paths)
        }
        Some(pb::op::Op::Exec(e)) => {
            let mut paths = Vec::new();
            for m in &e.mounts {
                if m.input == i {
                    // A writable mount's result holds the whole input.
                    if m.output >= 0 || !m.readonly || m.selector.is_empty() {
                        return None;
                    }
                    paths.push(m.selector.clone());
                }
            }
            Some(paths)
        }
        _ => None,
    }
}

/// The key of a local source from the scan of its files.
pub fn local_key(source: &pb::SourceOp, tree: &LocalTree) -> String {
    let mut h = Sha256::new();
    h.update(b"local\0");
    h.update(source.identifier.as_bytes());
    for (k, v) in &source.attrs {
        if !VOLATILE_ATTRS.contains(&k.as_str()) {
            h.update(format!("\0{k}={v}").as_bytes());
        }
    }
    h.update(b"\0");
    h.update(tree.digest.as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// An input as the key sees it.
pub enum Dep<'a> {
    /// The producing vertex's key and the output used.
    Key(&'a str, i64),
    /// A content checksum of the paths read.
    Content(String),
}

/// The key of a vertex from its op and what it reads of its inputs.
pub fn op_key(op: &pb::Op, deps: &[Dep]) -> String {
    let mut bare = op.clone();
    for input in &mut bare.inputs {
        input.digest.clear();
        input.index = 0;
    }
    // As BuildKit: proxies and the addresses of extra hosts do not change what a step
    // makes, so they are not part of its key (their names are).
    if let Some(pb::op::Op::Exec(e)) = &mut bare.op
        && let Some(meta) = &mut e.meta
    {
        meta.proxy_env = None;
        for h in &mut meta.extra_hosts {
            h.ip.clear();
        }
    }
    let mut h = Sha256::new();
    h.update(Sha256::digest(encode_op(&bare)));
    for d in deps {
        match d {
            Dep::Key(k, out) => h.update(format!("\0key {k} {out}").as_bytes()),
            Dep::Content(c) => h.update(format!("\0content {c}").as_bytes()),
        }
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_op(src: &str) -> pb::Op {
        pb::Op {
            inputs: vec![
                pb::Input {
                    digest: "sha256:a".into(),
                    index: 0,
                },
                pb::Input {
                    digest: "sha256:b".into(),
                    index: 0,
                },
            ],
            op: Some(pb::op::Op::File(pb::FileOp {
                actions: vec![pb::FileAction {
                    input: 0,
                    secondary_input: 1,
                    output: 0,
                    action: Some(pb::file_action::Action::Copy(pb::FileActionCopy {
                        src: src.into(),
                        dest: "/".into(),
                        ..Default::default()
                    })),
                }],
            })),
            ..Default::default()
        }
    }

    #[test]
    fn copies_select_their_sources() {
        let op = copy_op("/src");
        assert_eq!(selectors(&op, 0), None);
        assert_eq!(selectors(&op, 1), Some(vec!["/src".to_string()]));
        let a = op_key(&op, &[Dep::Key("k0", 0), Dep::Content("c1".into())]);
        let b = op_key(&op, &[Dep::Key("k0", 0), Dep::Content("c2".into())]);
        let c = op_key(
            &copy_op("/other"),
            &[Dep::Key("k0", 0), Dep::Content("c1".into())],
        );
        assert_ne!(a, b);
        assert_ne!(a, c);
        // Input digests do not matter, only the deps given.
        let mut moved = op.clone();
        moved.inputs[0].digest = "sha256:zzz".into();
        assert_eq!(
            a,
            op_key(&moved, &[Dep::Key("k0", 0), Dep::Content("c1".into())])
        );
    }
}
