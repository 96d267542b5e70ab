//! Exec and file ops on real parts: overlayfs layers and runc, with a busybox-static rootfs.

use std::os::unix::fs::symlink;
use std::path::Path;

use buildwit_llb::pb;
use buildwit_worker::snapshot::{Kind, LayerMeta};
use buildwit_worker::{OpError, Session, Snapshot, Worker, WorkerOptions};

fn busybox_rootfs(worker: &Worker) -> Snapshot {
    assert!(
        Path::new("/bin/busybox").exists(),
        "apt-get install -y busybox-static"
    );
    let b = worker.snapshots.new_layer().unwrap();
    let root = b.dir();
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for a in ["sh", "echo", "cat", "rm", "test", "id"] {
        symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/gone"), "base").unwrap();
    Snapshot {
        layers: vec![b.commit("busybox", &LayerMeta::default()).unwrap()],
    }
}

fn run(args: &[&str], user: &str) -> pb::ExecOp {
    pb::ExecOp {
        meta: Some(pb::Meta {
            args: args.iter().map(|s| s.to_string()).collect(),
            cwd: "/".into(),
            user: user.into(),
            ..Default::default()
        }),
        mounts: vec![pb::Mount {
            input: 0,
            dest: "/".into(),
            output: 0,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn exec_on_overlayfs() {
    exec_writes_a_layer_on_top_and_reports_failures(Kind::Overlayfs);
}

#[test]
fn exec_on_native_snapshots() {
    exec_writes_a_layer_on_top_and_reports_failures(Kind::Native);
}

fn exec_writes_a_layer_on_top_and_reports_failures(kind: Kind) {
    let root = tempfile::tempdir().unwrap();
    let options = WorkerOptions {
        snapshotter: kind,
        ..Default::default()
    };
    let worker = Worker::open(root.path(), options).unwrap();
    assert_eq!(worker.snapshots.is_native(), kind == Kind::Native);
    let base = busybox_rootfs(&worker);
    let lines = std::sync::Mutex::new(Vec::new());
    let out = |_: u8, l: &str| lines.lock().unwrap().push(l.to_string());
    let op = run(
        &[
            "sh",
            "-c",
            "echo hi > /tmp/x && rm /etc/gone && id -u && echo done",
        ],
        "app",
    );
    let mut op_root = op.clone();
    op_root.meta.as_mut().unwrap().user = String::new();
    let res = worker
        .exec(
            &op_root,
            std::slice::from_ref(&base),
            &Session::default(),
            &|i| format!("l{i}"),
            &out,
        )
        .unwrap();
    let snap = &res[0];
    assert_eq!(snap.layers.len(), 2);
    let top = &snap.layers[1].dir;
    assert_eq!(std::fs::read_to_string(top.join("tmp/x")).unwrap(), "hi\n");
    assert!(buildwit_worker::snapshot::is_whiteout(
        &top.join("etc/gone").symlink_metadata().unwrap()
    ));
    assert!(!top.join("etc/hosts").exists(), "no mount stubs");
    // As BuildKit: the /proc the runtime made in a base without one stays.
    assert!(top.join("proc").is_dir());
    let m = worker.snapshots.mount(snap, None).unwrap();
    assert!(!m.path().join("etc/gone").exists());
    drop(m);
    assert!(
        lines.lock().unwrap().iter().any(|l| l == "0"),
        "{:?}",
        lines.lock().unwrap()
    );

    // As `app` the step gets uid 1000; a failure reports the code and the last lines.
    let fail = run(&["sh", "-c", "id -u; exit 7"], "app");
    match worker.exec(
        &fail,
        std::slice::from_ref(&base),
        &Session::default(),
        &|i| format!("f{i}"),
        &out,
    ) {
        Err(OpError::Exit { code, tail, .. }) => {
            assert_eq!(code, 7);
            assert_eq!(tail, vec!["1000".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        worker.snapshots.layer("f0").is_none(),
        "a failed step commits nothing"
    );
}

#[test]
fn a_thousand_layers_mount() {
    let root = tempfile::tempdir().unwrap();
    let worker = Worker::open(root.path(), WorkerOptions::default()).unwrap();
    let mut snap = Snapshot::default();
    for i in 0..1000 {
        let b = worker.snapshots.new_layer().unwrap();
        std::fs::write(b.dir().join(format!("f{i}")), i.to_string()).unwrap();
        if i > 0 {
            // Each layer deletes the previous layer's file.
            buildwit_worker::snapshot::make_whiteout(&b.dir().join(format!("f{}", i - 1))).unwrap();
        }
        snap.layers
            .push(b.commit(&format!("l{i}"), &LayerMeta::default()).unwrap());
    }
    let upper = worker.snapshots.new_layer().unwrap();
    let m = worker.snapshots.mount(&snap, Some(&upper)).unwrap();
    let names: Vec<String> = std::fs::read_dir(m.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["f999".to_string()]);
    std::fs::write(m.path().join("new"), "x").unwrap();
    m.finish().unwrap();
    assert!(upper.dir().join("new").is_file());
}

#[test]
fn diff_of_unrelated_snapshots_compares_their_files() {
    let root = tempfile::tempdir().unwrap();
    let worker = Worker::open(root.path(), WorkerOptions::default()).unwrap();
    let layer = |id: &str, files: &[(&str, &str)]| {
        let b = worker.snapshots.new_layer().unwrap();
        for (name, content) in files {
            std::fs::write(b.dir().join(name), content).unwrap();
            // Same times on both sides: only content and presence differ.
            buildwit_worker::fileops::set_mtime(&b.dir().join(name), 0).unwrap();
        }
        buildwit_worker::fileops::set_mtime(&b.dir(), 0).unwrap();
        Snapshot {
            layers: vec![b.commit(id, &LayerMeta::default()).unwrap()],
        }
    };
    let lower = layer("lower", &[("same", "x"), ("changed", "1"), ("gone", "g")]);
    let upper = layer("upper", &[("same", "x"), ("changed", "22"), ("new", "n")]);
    let diff = worker.diff(&lower, &upper, "d0").unwrap();
    let dir = &diff.layers[0].dir;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["changed", "gone", "new"]);
    assert!(buildwit_worker::snapshot::is_whiteout(
        &dir.join("gone").symlink_metadata().unwrap()
    ));
    // Stacked snapshots diff to their own top layers, with no copying.
    let mut stacked = lower.clone();
    stacked.layers.extend(upper.layers.clone());
    assert_eq!(worker.diff(&lower, &stacked, "d1").unwrap(), upper);
}
