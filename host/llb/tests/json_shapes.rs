//! JSON of op kinds the corpus does not cover, in the shape Go's `encoding/json` gives
//! BuildKit's types (proto field names as keys, zero values left out, oneofs under
//! `"Op"` / `"Action"` / `"User"`, bytes as base64).

use std::collections::BTreeMap;

use buildwit_llb::pb::{self, op::Op as Kind};
use buildwit_llb::{digest_of, dump_json_lines, encode_op, to_dot};
use serde_json::{Value, json};

fn op_json(op: pb::Op, meta: Option<pb::OpMetadata>) -> Value {
    let bytes = encode_op(&op);
    let mut def = pb::Definition {
        def: vec![bytes.clone()],
        ..Default::default()
    };
    if let Some(m) = meta {
        def.metadata.insert(digest_of(&bytes).to_string(), m);
    }
    let line = &dump_json_lines(&def).unwrap()[0];
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["Digest"], digest_of(&bytes).as_str());
    v
}

#[test]
fn merge_diff_passthrough_build() {
    let v = op_json(
        pb::Op {
            op: Some(Kind::Merge(pb::MergeOp {
                inputs: vec![pb::MergeInput { input: 0 }, pb::MergeInput { input: 1 }],
            })),
            ..Default::default()
        },
        None,
    );
    assert_eq!(
        v["Op"],
        json!({"Op": {"merge": {"inputs": [{}, {"input": 1}]}}})
    );
    assert_eq!(v["OpMetadata"], json!({}));

    let v = op_json(
        pb::Op {
            op: Some(Kind::Diff(pb::DiffOp {
                lower: Some(pb::LowerDiffInput { input: -1 }),
                upper: Some(pb::UpperDiffInput { input: 0 }),
            })),
            ..Default::default()
        },
        None,
    );
    assert_eq!(
        v["Op"],
        json!({"Op": {"diff": {"lower": {"input": -1}, "upper": {}}}})
    );

    let v = op_json(
        pb::Op {
            op: Some(Kind::Passthrough(pb::PassthroughOp {
                id: "x".into(),
                outputs: vec![0, 2],
            })),
            ..Default::default()
        },
        None,
    );
    assert_eq!(
        v["Op"],
        json!({"Op": {"passthrough": {"id": "x", "outputs": [0, 2]}}})
    );

    let inner = pb::Definition {
        def: vec![b"ab".to_vec()],
        metadata: BTreeMap::from([(
            "sha256:00".to_string(),
            pb::OpMetadata {
                caps: BTreeMap::from([("a".to_string(), true)]),
                ..Default::default()
            },
        )]),
        source: None,
    };
    let v = op_json(
        pb::Op {
            op: Some(Kind::Build(pb::BuildOp {
                builder: -1,
                inputs: BTreeMap::from([("ctx".to_string(), pb::BuildInput { input: 0 })]),
                def: Some(inner),
                attrs: BTreeMap::from([("llbbuild.filename".to_string(), "f".to_string())]),
            })),
            ..Default::default()
        },
        None,
    );
    assert_eq!(
        v["Op"],
        json!({"Op": {"build": {
            "builder": -1,
            "inputs": {"ctx": {}},
            "def": {"def": ["YWI="], "metadata": {"sha256:00": {"caps": {"a": true}}}},
            "attrs": {"llbbuild.filename": "f"}
        }}})
    );
}

#[test]
fn exec_extras_file_actions_and_metadata() {
    let exec = pb::ExecOp {
        meta: Some(pb::Meta {
            args: vec!["a".into()],
            extra_hosts: vec![pb::HostIp {
                host: "h".into(),
                ip: "1.2.3.4".into(),
            }],
            ulimit: vec![pb::Ulimit {
                name: "nofile".into(),
                soft: 1,
                hard: 2,
            }],
            valid_exit_codes: vec![0, 1],
            ..Default::default()
        }),
        mounts: vec![pb::Mount {
            dest: "/".into(),
            ..Default::default()
        }],
        network: pb::NetMode::None as i32,
        security: pb::SecurityMode::Insecure as i32,
        secretenv: vec![pb::SecretEnv {
            id: "s".into(),
            name: "S".into(),
            optional: true,
        }],
        cdi_devices: vec![pb::CdiDevice {
            name: "vendor.com/gpu=0".into(),
            optional: false,
        }],
    };
    let v = op_json(
        pb::Op {
            op: Some(Kind::Exec(exec)),
            ..Default::default()
        },
        Some(pb::OpMetadata {
            ignore_cache: true,
            export_cache: Some(pb::ExportCache { value: true }),
            progress_group: Some(pb::ProgressGroup {
                id: "g".into(),
                name: "n".into(),
                weak: false,
            }),
            ..Default::default()
        }),
    );
    assert_eq!(
        v["Op"]["Op"]["exec"],
        json!({
            "meta": {"args": ["a"], "extraHosts": [{"Host": "h", "IP": "1.2.3.4"}],
                     "ulimit": [{"Name": "nofile", "Soft": 1, "Hard": 2}], "validExitCodes": [0, 1]},
            "mounts": [{"dest": "/"}],
            "network": 2,
            "security": 1,
            "secretenv": [{"ID": "s", "name": "S", "optional": true}],
            "cdiDevices": [{"name": "vendor.com/gpu=0"}]
        })
    );
    assert_eq!(
        v["OpMetadata"],
        json!({"ignore_cache": true, "export_cache": {"Value": true},
               "progress_group": {"id": "g", "name": "n"}})
    );

    let owner = pb::ChownOpt {
        user: Some(pb::UserOpt {
            user: Some(pb::user_opt::User::ByName(pb::NamedUserOpt {
                name: "app".into(),
                input: -1,
            })),
        }),
        group: None,
    };
    let actions = vec![
        pb::FileAction {
            input: -1,
            secondary_input: -1,
            output: -1,
            action: Some(pb::file_action::Action::Mkfile(pb::FileActionMkFile {
                path: "/f".into(),
                mode: 0o644,
                data: b"hi\n".to_vec(),
                owner: Some(owner),
                timestamp: -1,
            })),
        },
        pb::FileAction {
            input: 0,
            secondary_input: -1,
            output: 0,
            action: Some(pb::file_action::Action::Symlink(pb::FileActionSymlink {
                oldpath: "/f".into(),
                newpath: "/l".into(),
                ..Default::default()
            })),
        },
    ];
    let op = pb::Op {
        op: Some(Kind::File(pb::FileOp { actions })),
        ..Default::default()
    };
    let v = op_json(op.clone(), None);
    assert_eq!(
        v["Op"]["Op"]["file"]["actions"],
        json!([
            {"input": -1, "secondaryInput": -1, "output": -1, "Action": {"mkfile": {
                "path": "/f", "mode": 420, "data": "aGkK",
                "owner": {"user": {"User": {"byName": {"name": "app", "input": -1}}}},
                "timestamp": -1}}},
            {"input": 0, "secondaryInput": -1, "output": 0, "Action": {"symlink": {
                "oldpath": "/f", "newpath": "/l"}}}
        ])
    );
    let def = pb::Definition {
        def: vec![encode_op(&op)],
        ..Default::default()
    };
    assert!(
        to_dot(&def)
            .unwrap()
            .contains("\\nmkfile{path=/f},symlink{oldpath=/f, newpath=/l}\" shape=\"note\"];")
    );
}

#[test]
fn go_escapes_html_characters() {
    let v = pb::Op {
        op: Some(Kind::Source(pb::SourceOp {
            identifier: "local://a<b>&c".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let def = pb::Definition {
        def: vec![encode_op(&v)],
        ..Default::default()
    };
    let line = &dump_json_lines(&def).unwrap()[0];
    assert!(
        line.contains(r#""identifier":"local://a\u003cb\u003e\u0026c""#),
        "{line}"
    );
}
