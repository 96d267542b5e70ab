//! Every validation error, on small definitions built in code.

use buildwit_llb::pb::{self, op::Op as Kind};
use buildwit_llb::{
    Digest, LlbError, decode_definition, digest_of, encode_op, validate, validate_allow_empty,
};

fn source(id: &str) -> pb::Op {
    pb::Op {
        op: Some(Kind::Source(pb::SourceOp {
            identifier: id.into(),
            ..Default::default()
        })),
        platform: Some(pb::Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Default::default()
        }),
        constraints: Some(pb::WorkerConstraints::default()),
        ..Default::default()
    }
}

fn input(d: &Digest, index: i64) -> pb::Input {
    pb::Input {
        digest: d.to_string(),
        index,
    }
}

fn mount(input: i64, dest: &str, output: i64) -> pb::Mount {
    pb::Mount {
        input,
        dest: dest.into(),
        output,
        ..Default::default()
    }
}

fn exec_op(inputs: Vec<pb::Input>, e: pb::ExecOp) -> pb::Op {
    pb::Op {
        inputs,
        op: Some(Kind::Exec(e)),
        constraints: Some(pb::WorkerConstraints::default()),
        ..Default::default()
    }
}

fn run(args: &[&str], mounts: Vec<pb::Mount>) -> pb::ExecOp {
    pb::ExecOp {
        meta: Some(pb::Meta {
            args: args.iter().map(|a| a.to_string()).collect(),
            cwd: "/".into(),
            ..Default::default()
        }),
        mounts,
        ..Default::default()
    }
}

fn d(op: &pb::Op) -> Digest {
    digest_of(&encode_op(op))
}

/// A definition of `ops` and a terminal op naming output `index` of the last one.
fn def(ops: &[pb::Op], index: i64) -> pb::Definition {
    let last = d(ops.last().unwrap());
    def_to(ops, &last, index)
}

fn def_to(ops: &[pb::Op], result: &Digest, index: i64) -> pb::Definition {
    let mut out = pb::Definition::default();
    for op in ops {
        out.def.push(encode_op(op));
    }
    out.def.push(encode_op(&pb::Op {
        inputs: vec![input(result, index)],
        ..Default::default()
    }));
    out
}

/// An image and an exec on it with `e`.
fn with_exec(e: pb::ExecOp) -> pb::Definition {
    let img = source("docker-image://docker.io/library/busybox:latest");
    let run = exec_op(vec![input(&d(&img), 0)], e);
    def(&[img, run], 0)
}

fn err(def: &pb::Definition) -> (LlbError, String) {
    let e = validate(def).unwrap_err();
    let s = e.to_string();
    (e, s)
}

/// An InvalidOp error on op `op`, whose message contains `what`.
fn invalid(def: &pb::Definition, op: usize, what: &str) {
    let (e, s) = err(def);
    let digest = digest_of(&def.def[op]);
    match &e {
        LlbError::InvalidOp {
            op: o, digest: dg, ..
        } => {
            assert_eq!((*o, dg), (op, &digest), "{s}");
        }
        other => panic!("expected InvalidOp, got {other:?}"),
    }
    assert!(s.contains(what), "{s:?} should contain {what:?}");
    assert!(s.starts_with(&format!("op {op} ({digest}): ")), "{s}");
}

#[test]
fn a_valid_graph_and_its_lookups() {
    let img = source("docker-image://docker.io/library/busybox:latest");
    let ctx = source("local://context");
    let run = exec_op(
        vec![input(&d(&img), 0), input(&d(&ctx), 0)],
        run(
            &["/bin/sh", "-c", "true"],
            vec![
                mount(0, "/", 0),
                mount(1, "/src", -1),
                mount(-1, "/out", 1),
                pb::Mount {
                    input: -1,
                    dest: "/run/secrets/x".into(),
                    mount_type: pb::MountType::Secret as i32,
                    ..Default::default()
                },
            ],
        ),
    );
    let mut definition = def(&[img.clone(), ctx, run.clone()], 1);
    definition.metadata.insert(
        d(&run).to_string(),
        pb::OpMetadata {
            ignore_cache: true,
            ..Default::default()
        },
    );
    let g = validate(&definition).unwrap();
    assert_eq!(g.ops().len(), 3);
    assert_eq!(g.result().index, 1);
    assert_eq!(g.result_vertex().digest, d(&run));
    assert_eq!(g.ops()[2].inputs, vec![0, 1]);
    assert_eq!(g.terminal().inputs, vec![2]);
    assert_eq!(g.terminal().bytes, *definition.def.last().unwrap());
    assert!(
        g.get(&d(&run))
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .ignore_cache
    );
    assert!(g.get(&d(&img)).unwrap().metadata.is_none());
    assert_eq!(g.get_str(d(&img).as_str()).unwrap().op, img);
    assert!(g.get_str("sha256:nope").is_none());
    assert_eq!(buildwit_llb::output_count(&run), 2);
    assert!(validate_allow_empty(&definition).unwrap().is_some());
}

#[test]
fn empty_definition() {
    let empty = decode_definition(&[]).unwrap();
    assert_eq!(validate(&empty).unwrap_err(), LlbError::Empty);
    assert_eq!(
        validate(&empty).unwrap_err().to_string(),
        "invalid empty definition"
    );
    assert!(validate_allow_empty(&empty).unwrap().is_none());
}

#[test]
fn undecodable_op() {
    let img = source("local://context");
    let mut definition = def(std::slice::from_ref(&img), 0);
    definition.def.insert(0, vec![0x0a, 0x05, 0x01]); // a length past the end
    let (e, s) = err(&definition);
    assert!(matches!(e, LlbError::Decode { .. }), "{e:?}");
    assert!(s.starts_with("cannot decode op 0 (sha256:"), "{s}");

    let mut definition = def(std::slice::from_ref(&img), 0);
    *definition.def.last_mut().unwrap() = vec![0xff];
    let (_, s) = err(&definition);
    assert!(s.starts_with("cannot decode op 1 (sha256:"), "{s}");
}

#[test]
fn terminal_op_without_inputs() {
    let img = source("local://context");
    let mut definition = def(std::slice::from_ref(&img), 0);
    *definition.def.last_mut().unwrap() = encode_op(&pb::Op::default());
    let (e, s) = err(&definition);
    assert!(matches!(e, LlbError::NoResult { op: 1, .. }), "{e:?}");
    assert!(
        s.ends_with("invalid LLB with no inputs on last vertex"),
        "{s}"
    );

    // Only a terminal op, and that without inputs.
    let only = pb::Definition {
        def: vec![Vec::new()],
        ..Default::default()
    };
    assert!(matches!(err(&only).0, LlbError::NoResult { op: 0, .. }));
}

#[test]
fn dangling_input() {
    let img = source("local://context");
    let missing = digest_of(b"not an op");
    let (e, s) = err(&def_to(std::slice::from_ref(&img), &missing, 0));
    assert!(
        matches!(&e, LlbError::DanglingInput { op: 1, input: 0, target, .. } if *target == missing.to_string()),
        "{e:?}"
    );
    assert!(
        s.contains(missing.as_str()) && s.contains("not an op of the definition"),
        "{s}"
    );

    // Within the graph, and with a digest that is not even a digest.
    let run = exec_op(
        vec![
            input(&d(&img), 0),
            pb::Input {
                digest: "sha256:xyz".into(),
                index: 0,
            },
        ],
        run(&["true"], vec![mount(0, "/", 0)]),
    );
    let (e, s) = err(&def(&[img, run], 0));
    assert!(
        matches!(
            e,
            LlbError::DanglingInput {
                op: 1,
                input: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(s.contains("\"sha256:xyz\""), "{s}");
}

#[test]
fn bad_output_index() {
    let img = source("local://context");
    // Beyond the outputs of a source (1).
    let (e, s) = err(&def(std::slice::from_ref(&img), 1));
    assert!(
        matches!(
            e,
            LlbError::BadOutputIndex {
                op: 1,
                index: 1,
                outputs: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        s.contains("uses output 1 of") && s.contains("which has 1 output(s)"),
        "{s}"
    );
    // Negative.
    let (e, _) = err(&def(std::slice::from_ref(&img), -1));
    assert!(
        matches!(e, LlbError::BadOutputIndex { index: -1, .. }),
        "{e:?}"
    );

    // Exec: only bind mounts with output >= 0 are outputs (here 2: "/" and "/out").
    let run = exec_op(
        vec![input(&d(&img), 0)],
        run(
            &["true"],
            vec![
                mount(0, "/", 0),
                mount(-1, "/out", 1),
                mount(-1, "/ro", -1),
                pb::Mount {
                    input: -1,
                    dest: "/cache".into(),
                    mount_type: pb::MountType::Cache as i32,
                    ..Default::default()
                },
            ],
        ),
    );
    assert!(validate(&def(&[img.clone(), run.clone()], 1)).is_ok());
    let (e, _) = err(&def(&[img.clone(), run.clone()], 2));
    assert!(
        matches!(e, LlbError::BadOutputIndex { outputs: 2, .. }),
        "{e:?}"
    );

    // File: actions with output >= 0.
    let file = pb::Op {
        inputs: vec![input(&d(&img), 0)],
        op: Some(Kind::File(pb::FileOp {
            actions: vec![
                mkdir(0, -1, "/a"),
                mkdir(1, 0, "/b"), // reads action 0's result
            ],
        })),
        ..Default::default()
    };
    assert!(validate(&def(&[img.clone(), file.clone()], 0)).is_ok());
    let (e, _) = err(&def(&[img.clone(), file], 1));
    assert!(
        matches!(e, LlbError::BadOutputIndex { outputs: 1, .. }),
        "{e:?}"
    );

    // Merge, diff and build have one output; passthrough one per entry of `outputs`.
    let merge = pb::Op {
        inputs: vec![input(&d(&img), 0)],
        op: Some(Kind::Merge(pb::MergeOp {
            inputs: vec![pb::MergeInput { input: 0 }],
        })),
        ..Default::default()
    };
    let (e, _) = err(&def(&[img.clone(), merge], 1));
    assert!(
        matches!(e, LlbError::BadOutputIndex { outputs: 1, .. }),
        "{e:?}"
    );
    let pass = pb::Op {
        inputs: vec![input(&d(&img), 0)],
        op: Some(Kind::Passthrough(pb::PassthroughOp {
            id: "p".into(),
            outputs: vec![0, 0],
        })),
        ..Default::default()
    };
    assert!(validate(&def(&[img.clone(), pass.clone()], 1)).is_ok());
    let (e, _) = err(&def(&[img, pass], 2));
    assert!(
        matches!(e, LlbError::BadOutputIndex { outputs: 2, .. }),
        "{e:?}"
    );
}

fn mkdir(input: i64, output: i64, path: &str) -> pb::FileAction {
    pb::FileAction {
        input,
        secondary_input: -1,
        output,
        action: Some(pb::file_action::Action::Mkdir(pb::FileActionMkDir {
            path: path.into(),
            mode: 0o755,
            ..Default::default()
        })),
    }
}

#[test]
fn unknown_enum_values() {
    let mut e = run(&["true"], vec![mount(0, "/", 0)]);
    e.network = 3; // PROXY once, removed
    invalid(&with_exec(e), 1, "invalid network mode 3");

    let mut e = run(&["true"], vec![mount(0, "/", 0)]);
    e.security = 2;
    invalid(&with_exec(e), 1, "invalid security mode 2");

    let mut m = mount(-1, "/x", -1);
    m.mount_type = 9;
    invalid(
        &with_exec(run(&["true"], vec![mount(0, "/", 0), m])),
        1,
        "mount 1 (\"/x\"): invalid mount type 9",
    );

    let mut m = mount(-1, "/c", -1);
    m.mount_type = pb::MountType::Cache as i32;
    m.cache_opt = Some(pb::CacheOpt {
        id: "c".into(),
        sharing: 5,
    });
    invalid(
        &with_exec(run(&["true"], vec![mount(0, "/", 0), m])),
        1,
        "mount 1 (\"/c\"): invalid cache sharing mode 5",
    );
}

#[test]
fn exec_without_meta_args_mounts_or_root() {
    let mut e = run(&["true"], vec![mount(0, "/", 0)]);
    e.meta = None;
    invalid(&with_exec(e), 1, "exec without meta");
    invalid(
        &with_exec(run(&[], vec![mount(0, "/", 0)])),
        1,
        "exec without args",
    );
    invalid(&with_exec(run(&["true"], vec![])), 1, "exec without mounts");
    invalid(
        &with_exec(run(&["true"], vec![mount(0, "/x", 0)])),
        1,
        "exec without a root mount",
    );
}

#[test]
fn mount_input_out_of_range_and_duplicate_outputs() {
    invalid(
        &with_exec(run(&["true"], vec![mount(1, "/", 0)])),
        1,
        "mount 0 (\"/\"): input 1 is out of range",
    );
    invalid(
        &with_exec(run(&["true"], vec![mount(-2, "/", 0)])),
        1,
        "mount 0 (\"/\"): input -2 is out of range",
    );
    invalid(
        &with_exec(run(&["true"], vec![mount(0, "/", 0), mount(-1, "/o", 0)])),
        1,
        "mount 1 (\"/o\"): duplicate output 0",
    );
}

#[test]
fn file_action_indexes() {
    let img = source("local://context");
    let file = |actions: Vec<pb::FileAction>| pb::Op {
        inputs: vec![input(&d(&img), 0)],
        op: Some(Kind::File(pb::FileOp { actions })),
        ..Default::default()
    };
    // Action 0 may read input 0 but not its own result (index 1).
    invalid(
        &def(&[img.clone(), file(vec![mkdir(1, 0, "/a")])], 0),
        1,
        "file action 0: input 1 is out of range",
    );
    // A copy whose secondary input is a later action.
    let mut copy = mkdir(0, 0, "/");
    copy.secondary_input = 2;
    copy.action = Some(pb::file_action::Action::Copy(pb::FileActionCopy {
        src: "/a".into(),
        dest: "/b".into(),
        ..Default::default()
    }));
    invalid(
        &def(&[img.clone(), file(vec![mkdir(0, -1, "/a"), copy])], 0),
        1,
        "file action 1: secondary input 2 is out of range",
    );
    invalid(
        &def(&[img.clone(), file(vec![mkdir(-2, 0, "/a")])], 0),
        1,
        "file action 0: input -2 is out of range",
    );
    // Duplicate outputs.
    invalid(
        &def(
            &[
                img.clone(),
                file(vec![mkdir(0, 0, "/a"), mkdir(1, 0, "/b")]),
            ],
            0,
        ),
        1,
        "file action 1: duplicate output 0",
    );
    // No actions, and an action without its oneof.
    invalid(
        &def(&[img.clone(), file(vec![])], 0),
        1,
        "file op without actions",
    );
    let mut empty = mkdir(0, 0, "/a");
    empty.action = None;
    invalid(
        &def(&[img.clone(), file(vec![empty])], 0),
        1,
        "file action 0 has no action",
    );
}

#[test]
fn other_index_checks() {
    let img = source("local://context");
    let with = |kind: Kind| pb::Op {
        inputs: vec![input(&d(&img), 0)],
        op: Some(kind),
        ..Default::default()
    };
    invalid(
        &def(
            &[
                img.clone(),
                with(Kind::Merge(pb::MergeOp {
                    inputs: vec![pb::MergeInput { input: 1 }],
                })),
            ],
            0,
        ),
        1,
        "merge input 0: 1 is out of range",
    );
    invalid(
        &def(
            &[
                img.clone(),
                with(Kind::Diff(pb::DiffOp {
                    lower: Some(pb::LowerDiffInput { input: 0 }),
                    upper: Some(pb::UpperDiffInput { input: 4 }),
                })),
            ],
            0,
        ),
        1,
        "diff upper input 4 is out of range",
    );
    invalid(
        &def(
            &[
                img.clone(),
                with(Kind::Passthrough(pb::PassthroughOp {
                    id: "p".into(),
                    outputs: vec![1],
                })),
            ],
            0,
        ),
        1,
        "passthrough output 0: input 1 is out of range",
    );
    invalid(
        &def(
            &[
                img.clone(),
                with(Kind::Passthrough(pb::PassthroughOp {
                    id: String::new(),
                    outputs: vec![0],
                })),
            ],
            0,
        ),
        1,
        "passthrough without id",
    );
    invalid(
        &def(
            &[
                img.clone(),
                with(Kind::Build(pb::BuildOp {
                    builder: 3,
                    ..Default::default()
                })),
            ],
            0,
        ),
        1,
        "build builder input 3 is out of range",
    );
    invalid(&def(&[source("")], 0), 0, "source without identifier");
    // An input-only op before the end.
    let bare = pb::Op {
        inputs: vec![input(&d(&img), 0)],
        ..Default::default()
    };
    invalid(&def(&[img, bare], 0), 1, "op has no operation");
}

#[test]
fn duplicate_ops() {
    let img = source("local://context");
    let (e, s) = err(&def(&[img.clone(), img.clone()], 0));
    assert_eq!(
        e,
        LlbError::DuplicateOp {
            op: 1,
            first: 0,
            digest: d(&img)
        }
    );
    assert_eq!(s, format!("op 1 ({}): duplicate of op 0", d(&img)));
}

#[test]
fn digests_parse_print_and_serialize() {
    let dg = digest_of(b"");
    assert_eq!(
        dg.as_str(),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(dg.short(), "e3b0c44298fc");
    assert_eq!(dg.hex().len(), 64);
    assert_eq!(dg.to_string().parse::<Digest>().unwrap(), dg);
    let json = serde_json::to_string(&dg).unwrap();
    assert_eq!(json, format!("\"{dg}\""));
    assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), dg);
    for bad in [
        "",
        "sha256:",
        "sha512:00",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    ] {
        assert_eq!(
            bad.parse::<Digest>().unwrap_err(),
            LlbError::BadDigest(bad.into())
        );
        assert!(serde_json::from_str::<Digest>(&format!("\"{bad}\"")).is_err());
    }
}

#[test]
fn constraints_set_but_empty_encode_as_5a_00() {
    let op = pb::Op {
        constraints: Some(pb::WorkerConstraints::default()),
        op: Some(Kind::Source(pb::SourceOp {
            identifier: "local://x".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let bytes = encode_op(&op);
    assert_eq!(&bytes[..2], [0x5a, 0x00]);
    let without = pb::Op {
        constraints: None,
        ..op.clone()
    };
    assert_eq!(encode_op(&without), bytes[2..]);
}
