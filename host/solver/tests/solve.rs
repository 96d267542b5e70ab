//! The solver on real parts, offline: a local source holding a busybox root filesystem,
//! steps run by runc on overlayfs.

mod common;

use common::{definition, local};
use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use buildwit_llb::pb;
use buildwit_solver::{CacheDb, Entitlements, ProgressEvent, SolveError, Solver};
use buildwit_worker::{Session, Worker, WorkerOptions};

fn run(script: &str) -> pb::Op {
    pb::Op {
        op: Some(pb::op::Op::Exec(pb::ExecOp {
            meta: Some(pb::Meta {
                args: vec!["/bin/sh".into(), "-c".into(), script.into()],
                cwd: "/".into(),
                ..Default::default()
            }),
            mounts: vec![pb::Mount {
                input: 0,
                dest: "/".into(),
                output: 0,
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn copy_from_ctx(src: &str, dest: &str) -> pb::Op {
    pb::Op {
        op: Some(pb::op::Op::File(pb::FileOp {
            actions: vec![pb::FileAction {
                input: 0,
                secondary_input: 1,
                output: 0,
                action: Some(pb::file_action::Action::Copy(pb::FileActionCopy {
                    src: src.into(),
                    dest: dest.into(),
                    mode: -1,
                    timestamp: -1,
                    create_dest_path: true,
                    ..Default::default()
                })),
            }],
        })),
        ..Default::default()
    }
}

/// A directory holding a busybox root filesystem.
fn rootfs(dir: &Path) {
    assert!(
        Path::new("/bin/busybox").exists(),
        "apt-get install -y busybox-static"
    );
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for a in ["sh", "echo", "cat", "sleep", "ls"] {
        symlink("busybox", dir.join("bin").join(a)).unwrap();
    }
}

struct Fixture {
    _dirs: Vec<tempfile::TempDir>,
    solver: Arc<Solver>,
    session: Arc<Session>,
    ctx: std::path::PathBuf,
}

fn fixture(parallelism: Option<usize>) -> Fixture {
    let state = tempfile::tempdir().unwrap();
    let base = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    rootfs(base.path());
    std::fs::write(ctx.path().join("a.txt"), "a").unwrap();
    std::fs::write(ctx.path().join("b.txt"), "b").unwrap();
    let worker = Worker::open(state.path(), WorkerOptions::default()).unwrap();
    let db = CacheDb::open(&state.path().join("cache.db")).unwrap();
    let registries = buildwit_registry::Registries::new(&BTreeMap::new()).unwrap();
    let solver = Arc::new(Solver::new(
        Arc::new(worker),
        Arc::new(registries),
        db,
        parallelism,
    ));
    let session = Arc::new(Session {
        locals: [
            ("base".to_string(), base.path().to_path_buf()),
            ("ctx".to_string(), ctx.path().to_path_buf()),
        ]
        .into(),
        ..Default::default()
    });
    let ctx_path = ctx.path().to_path_buf();
    Fixture {
        _dirs: vec![state, base, ctx],
        solver,
        session,
        ctx: ctx_path,
    }
}

type Events = Arc<Mutex<Vec<ProgressEvent>>>;

fn solve(
    f: &Fixture,
    def: &pb::Definition,
) -> (
    Result<Option<buildwit_worker::Snapshot>, SolveError>,
    Vec<ProgressEvent>,
) {
    let events: Events = Arc::default();
    let sink = events.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(f.solver.solve(
        def,
        f.session.clone(),
        &Entitlements::default(),
        Arc::new(move |e| sink.lock().unwrap().push(e)),
    ));
    let ev = events.lock().unwrap().clone();
    (r, ev)
}

fn started(events: &[ProgressEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::Started { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn cached_rebuilds_run_nothing_and_copies_key_on_their_sources() {
    let f = fixture(None);
    let def = definition(vec![
        (local("base"), vec![]),
        (local("ctx"), vec![]),
        (copy_from_ctx("/a.txt", "/a.txt"), vec![0, 1]),
        (run("cat /a.txt > /seen"), vec![2]),
    ]);
    let (r, ev) = solve(&f, &def);
    let snap = r.unwrap().unwrap();
    assert_eq!(started(&ev).len(), 4, "{ev:?}");
    let m = f.solver.worker().snapshots.mount(&snap, None).unwrap();
    assert_eq!(std::fs::read_to_string(m.path().join("seen")).unwrap(), "a");
    drop(m);

    // Unchanged: nothing runs.
    let (r, ev) = solve(&f, &def);
    r.unwrap();
    assert!(started(&ev).is_empty(), "{ev:?}");

    // b.txt is not read by the copy: still nothing runs but the context's own layer.
    std::fs::write(f.ctx.join("b.txt"), "changed").unwrap();
    let (r, ev) = solve(&f, &def);
    r.unwrap();
    assert!(started(&ev).is_empty(), "{:?}", started(&ev));

    // a.txt is: the copy and the step after it run again.
    std::fs::write(f.ctx.join("a.txt"), "A").unwrap();
    let (r, ev) = solve(&f, &def);
    let snap = r.unwrap().unwrap();
    assert_eq!(
        started(&ev),
        vec!["local://ctx", "file", "/bin/sh -c cat /a.txt > /seen"]
    );
    let m = f.solver.worker().snapshots.mount(&snap, None).unwrap();
    assert_eq!(std::fs::read_to_string(m.path().join("seen")).unwrap(), "A");
}

#[test]
fn a_vertex_wanted_by_two_builds_at_once_runs_once() {
    let f = fixture(Some(2));
    let def = definition(vec![
        (local("base"), vec![]),
        (run("sleep 0.5; echo x >> /count"), vec![0]),
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let events: Events = Arc::default();
    let results = rt.block_on(async {
        let a = {
            let (s, sess, ev) = (f.solver.clone(), f.session.clone(), events.clone());
            let def = def.clone();
            tokio::spawn(async move {
                s.solve(
                    &def,
                    sess,
                    &Entitlements::default(),
                    Arc::new(move |e| ev.lock().unwrap().push(e)),
                )
                .await
            })
        };
        let b = {
            let (s, sess, ev) = (f.solver.clone(), f.session.clone(), events.clone());
            let def = def.clone();
            tokio::spawn(async move {
                s.solve(
                    &def,
                    sess,
                    &Entitlements::default(),
                    Arc::new(move |e| ev.lock().unwrap().push(e)),
                )
                .await
            })
        };
        (a.await.unwrap(), b.await.unwrap())
    });
    let (a, b) = results;
    assert_eq!(a.unwrap(), b.unwrap());
    let runs: Vec<String> = started(&events.lock().unwrap())
        .into_iter()
        .filter(|n| n.contains("count"))
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
}

#[test]
fn failed_steps_are_not_cached_and_host_network_needs_entitlements() {
    let f = fixture(None);
    let def = definition(vec![
        (local("base"), vec![]),
        (run("echo partial > /p; exit 4"), vec![0]),
    ]);
    for _ in 0..2 {
        let (r, ev) = solve(&f, &def);
        match r {
            Err(SolveError::Step {
                exit_code: Some(4), ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(
            started(&ev).iter().any(|n| n.contains("exit 4")),
            "the failed step runs again"
        );
    }
    let mut host = run("true");
    if let Some(pb::op::Op::Exec(e)) = &mut host.op {
        e.network = pb::NetMode::Host as i32;
    }
    let def = definition(vec![(local("base"), vec![]), (host, vec![0])]);
    let (r, ev) = solve(&f, &def);
    let err = r.unwrap_err().to_string();
    assert!(err.contains("network.host is not allowed"), "{err}");
    assert!(ev.is_empty(), "nothing ran: {ev:?}");
}

/// `sha256:<hex>`, and the bytes stored under it in a layout.
fn put_blob(layout: &Path, data: &[u8]) -> String {
    use sha2::Digest as _;
    let hex = hex::encode(sha2::Sha256::digest(data));
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    format!("sha256:{hex}")
}

#[test]
fn oci_layout_sources_come_from_the_clients_layout() {
    let mut f = fixture(None);
    // A one-layer image of the busybox root filesystem, as an uncompressed tar.
    let layout = tempfile::tempdir().unwrap();
    let base = f.session.locals["base"].clone();
    std::fs::write(base.join("hello"), "from the layout\n").unwrap();
    let tar = Command::new("tar")
        .arg("-cf")
        .arg("-")
        .arg("--owner=0")
        .arg("--group=0")
        .arg("-C")
        .arg(&base)
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success());
    let layer = put_blob(layout.path(), &tar.stdout);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer}"]}}}}"#
    );
    let config_digest = put_blob(layout.path(), config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{}}}]}}"#,
        config.len(),
        tar.stdout.len()
    );
    let manifest_digest = put_blob(layout.path(), manifest.as_bytes());
    Arc::get_mut(&mut f.session)
        .unwrap()
        .oci_layouts
        .insert("store".into(), layout.path().to_path_buf());
    let source = pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: format!("oci-layout://store/app@{manifest_digest}"),
            attrs: [("oci.store".to_string(), "store".to_string())].into(),
        })),
        ..Default::default()
    };
    let def = definition(vec![(source, vec![]), (run("cat /hello > /seen"), vec![0])]);
    let (r, _) = solve(&f, &def);
    let snap = r.unwrap().unwrap();
    let m = f.solver.worker().snapshots.mount(&snap, None).unwrap();
    assert_eq!(
        std::fs::read_to_string(m.path().join("seen")).unwrap(),
        "from the layout\n"
    );
    drop(m);

    // A blob that is not what its name says is refused.
    let bad = pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: format!("oci-layout://store/app@sha256:{}", "1".repeat(64)),
            attrs: [("oci.store".to_string(), "store".to_string())].into(),
        })),
        ..Default::default()
    };
    std::fs::write(
        layout.path().join("blobs/sha256").join("1".repeat(64)),
        "garbage",
    )
    .unwrap();
    let (r, _) = solve(&f, &definition(vec![(bad, vec![])]));
    let err = r.unwrap_err().to_string();
    assert!(err.contains("digest"), "{err}");
}
