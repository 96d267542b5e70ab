//! GC on real parts, offline: graphs of local sources and runc steps fill a small root,
//! then prune rules bring it back under their limits without touching recent or in-use
//! records, and rebuilds re-run exactly the pruned steps.

mod common;

use common::{definition, local};
use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use buildwit_config::PruneRule;
use buildwit_llb::pb;
use buildwit_solver::{CacheDb, Entitlements, ProgressEvent, Solver};
use buildwit_worker::{Session, Worker, WorkerOptions};

fn run(script: &str, cache: Option<&str>) -> pb::Op {
    let mut mounts = vec![pb::Mount {
        input: 0,
        dest: "/".into(),
        output: 0,
        ..Default::default()
    }];
    if let Some(id) = cache {
        mounts.push(pb::Mount {
            input: -1,
            dest: "/cache".into(),
            output: -1,
            mount_type: pb::MountType::Cache as i32,
            cache_opt: Some(pb::CacheOpt {
                id: id.into(),
                sharing: pb::CacheSharingOpt::Shared as i32,
            }),
            ..Default::default()
        });
    }
    pb::Op {
        op: Some(pb::op::Op::Exec(pb::ExecOp {
            meta: Some(pb::Meta {
                args: vec!["/bin/sh".into(), "-c".into(), script.into()],
                cwd: "/".into(),
                ..Default::default()
            }),
            mounts,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// base → one step writing `bytes` bytes.
fn step(name: &str, bytes: usize, cache: Option<&str>) -> pb::Definition {
    let script = format!("dd if=/dev/zero of=/{name} bs=1000 count={}", bytes / 1000);
    definition(vec![
        (local("base"), vec![]),
        (run(&script, cache), vec![0]),
    ])
}

struct Fixture {
    _dirs: Vec<tempfile::TempDir>,
    root: PathBuf,
    base: PathBuf,
    solver: Arc<Solver>,
}

fn fixture() -> Fixture {
    let state = tempfile::tempdir().unwrap();
    let base = tempfile::tempdir().unwrap();
    assert!(
        Path::new("/bin/busybox").exists(),
        "apt-get install -y busybox-static"
    );
    std::fs::create_dir_all(base.path().join("bin")).unwrap();
    std::fs::copy("/bin/busybox", base.path().join("bin/busybox")).unwrap();
    for a in ["sh", "dd", "cat", "echo"] {
        symlink("busybox", base.path().join("bin").join(a)).unwrap();
    }
    let worker = Worker::open(state.path(), WorkerOptions::default()).unwrap();
    let db = CacheDb::open(&state.path().join("cache.db")).unwrap();
    let registries = buildwit_registry::Registries::new(&BTreeMap::new()).unwrap();
    let solver = Arc::new(Solver::new(
        Arc::new(worker),
        Arc::new(registries),
        db,
        None,
    ));
    Fixture {
        root: state.path().to_path_buf(),
        base: base.path().to_path_buf(),
        _dirs: vec![state, base],
        solver,
    }
}

impl Fixture {
    fn session(&self) -> Arc<Session> {
        Arc::new(Session {
            locals: [("base".to_string(), self.base.clone())].into(),
            ..Default::default()
        })
    }

    /// Solve with `session`; the names of the steps that ran.
    fn solve_in(&self, def: &pb::Definition, session: Arc<Session>) -> Vec<String> {
        let events: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = events.clone();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(self.solver.solve(
            def,
            session,
            &Entitlements::default(),
            Arc::new(move |e| {
                if let ProgressEvent::Started { name, .. } = e {
                    sink.lock().unwrap().push(name)
                }
            }),
        ))
        .unwrap();
        events.lock().unwrap().clone()
    }

    fn solve(&self, def: &pb::Definition) -> Vec<String> {
        self.solve_in(def, self.session())
    }

    /// Make the records whose description contains `what` last used `secs` ago.
    fn age(&self, what: &str, secs: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let db = self.solver.db();
        let mut n = 0;
        for (key, mut r) in db.all().unwrap() {
            if r.description.contains(what) {
                r.last_used = now - secs;
                r.created = r.created.min(now - secs);
                db.put(&key, &r).unwrap();
                n += 1;
            }
        }
        assert!(n > 0, "no record of {what}");
    }

    /// Bytes of all layers on disk.
    fn layer_bytes(&self) -> u64 {
        let snapshots = &self.solver.worker().snapshots;
        snapshots
            .layer_ids()
            .unwrap()
            .iter()
            .map(|id| dir_bytes(&snapshots.layer(id).unwrap().dir))
            .sum()
    }

    /// Every remaining record's layers exist.
    fn assert_consistent(&self) {
        for (key, r) in self.solver.db().all().unwrap() {
            for id in r.outputs.iter().flatten() {
                assert!(
                    self.solver.worker().snapshots.layer(id).is_some(),
                    "record {key} ({}) lost layer {id}",
                    r.description
                );
            }
        }
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.path().symlink_metadata().unwrap();
        total += if md.is_dir() {
            dir_bytes(&e.path())
        } else {
            md.len()
        };
    }
    total
}

const DAY: u64 = 24 * 3600;

#[test]
fn policy_frees_oldest_first_and_keeps_recent_and_leased_records() {
    let f = fixture();
    let a = step("a", 200_000, None);
    let b = step("b", 300_000, None);
    let c = step("c", 100_000, None);
    assert_eq!(f.solve(&a).len(), 2);
    assert_eq!(f.solve(&b).len(), 1);
    // C is "running": its session stays alive, so it holds its records.
    let running = f.session();
    assert_eq!(f.solve_in(&c, running.clone()).len(), 1);
    f.age("of=/a", 5 * DAY);
    f.age("of=/b", 3 * DAY);
    f.age("local://base", 5 * DAY);

    let du = f.solver.disk_usage(&[]).unwrap();
    let total: u64 = du.iter().map(|r| r.size).sum();
    assert_eq!(total, f.layer_bytes(), "each layer counted once: {du:#?}");
    let base = du.iter().find(|r| r.record_type == "source.local").unwrap();
    assert!(base.shared && base.in_use, "{base:?}");
    let size = |needle: &str| {
        du.iter()
            .find(|r| r.description.contains(needle))
            .unwrap()
            .size
    };
    assert!(size("of=/a") >= 200_000 && size("of=/b") >= 300_000);
    assert!(du.iter().filter(|r| r.in_use).count() == 2, "{du:#?}");

    // 48h keepDuration and room for all but A: only A (least recently used) goes.
    let rule = PruneRule {
        keep_duration: std::time::Duration::from_secs(2 * DAY),
        max_used_space: (total - size("of=/a") + 1000) as i64,
        ..Default::default()
    };
    let report = f.solver.prune(&rule).unwrap();
    let gone: Vec<&str> = report
        .records
        .iter()
        .map(|r| r.description.as_str())
        .collect();
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert!(gone[0].contains("of=/a"), "{gone:?}");
    assert!(report.freed >= 200_000, "{report:?}");
    assert!(f.layer_bytes() <= rule.max_used_space as u64);
    f.assert_consistent();

    // A tiny limit with --all: everything goes but what the running build holds.
    let rule = PruneRule {
        all: true,
        max_used_space: 1,
        ..Default::default()
    };
    let report = f.solver.prune(&rule).unwrap();
    assert!(
        report
            .records
            .iter()
            .any(|r| r.description.contains("of=/b")),
        "{report:?}"
    );
    let left: Vec<String> = f
        .solver
        .disk_usage(&[])
        .unwrap()
        .into_iter()
        .map(|r| r.description)
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|d| d.contains("of=/c")) && left.iter().any(|d| d == "local://base"));
    f.assert_consistent();

    // The build ends; rebuilds run exactly the pruned steps.
    drop(running);
    assert_eq!(f.solve(&c), Vec::<String>::new());
    let ran = f.solve(&a);
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(ran[0].contains("of=/a"));
    let ran = f.solve(&b);
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(ran[0].contains("of=/b"));
}

#[test]
fn cache_mounts_are_records_pruned_by_type() {
    let f = fixture();
    let def = definition(vec![
        (local("base"), vec![]),
        (
            run(
                "dd if=/dev/zero of=/cache/blob bs=1000 count=50",
                Some("dl"),
            ),
            vec![0],
        ),
    ]);
    f.solve(&def);
    let mounts = f
        .solver
        .disk_usage(&["type==exec.cachemount".to_string()])
        .unwrap();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let m = &mounts[0];
    assert!(m.mutable && !m.in_use && m.size >= 50_000, "{m:?}");
    assert_eq!(m.description, "cached mount /cache with id \"dl\"");
    assert_eq!(m.usage_count, 1);

    // Not old enough for a 48h rule; gone with none.
    let filter = vec!["type==exec.cachemount".to_string()];
    let keep = PruneRule {
        filters: filter.clone(),
        keep_duration: std::time::Duration::from_secs(2 * DAY),
        ..Default::default()
    };
    assert!(f.solver.prune(&keep).unwrap().records.is_empty());
    let report = f
        .solver
        .prune(&PruneRule {
            filters: filter,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(report.records.len(), 1);
    assert!(report.freed >= 50_000);
    assert!(!f.root.join("cache-mounts").join(&m.id).exists());
    // The layer records were not touched.
    assert_eq!(f.solver.db().all().unwrap().len(), 2);
}
