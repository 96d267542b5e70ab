//! Local sources read a directory that someone else may change while it is read (a
//! client's mirror in buildwitd, a context another user can write): whatever is swapped
//! in, nothing outside the directory is ever read into a scan or a layer.

use std::path::Path;
use std::time::{Duration, Instant};

use buildwit_worker::local::{Kind, LocalSource, Locals};
use buildwit_worker::snapshot::{self, Snapshotter};
use sha2::{Digest, Sha256};

/// Every regular file under `dir` (a layer), read whole.
fn contents(dir: &Path, out: &mut Vec<Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let md = e.path().symlink_metadata().unwrap();
        if md.is_dir() {
            contents(&e.path(), out);
        } else if md.is_file() {
            out.push(std::fs::read(e.path()).unwrap());
        }
    }
}

#[test]
fn a_directory_swapped_for_a_symlink_never_leads_outside() {
    let base = tempfile::tempdir().unwrap();
    let ctx = base.path().join("ctx");
    let secret = base.path().join("secret");
    std::fs::create_dir_all(ctx.join("sub")).unwrap();
    std::fs::write(ctx.join("sub/f"), "ours\n").unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    let canary = b"CANARY: a root-only file of the host\n";
    std::fs::write(secret.join("f"), canary).unwrap();
    let canary_hash = hex::encode(Sha256::digest(canary));

    let state = base.path().join("state");
    let locals = Locals::open(state.join("locals")).unwrap();
    let snapshots = Snapshotter::open(state.join("snapshots"), snapshot::Kind::Auto).unwrap();
    let source = LocalSource {
        dir: ctx.clone(),
        follow: Vec::new(),
        include: Vec::new(),
        exclude: Vec::new(),
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut scans, mut layers) = (0, 0);
    std::thread::scope(|s| {
        // The attacker: `sub` flips between its real directory and a link to the secret.
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::rename(ctx.join("sub"), ctx.join("real")).unwrap();
                std::os::unix::fs::symlink(&secret, ctx.join("sub")).unwrap();
                std::thread::yield_now();
                std::fs::remove_file(ctx.join("sub")).unwrap();
                std::fs::rename(ctx.join("real"), ctx.join("sub")).unwrap();
            }
        });
        // Stops the attacker however this thread ends, a failed assertion included.
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            // Errors are fine (the tree changed under the read); leaks are not.
            let Ok(tree) = locals.scan(&source) else {
                continue;
            };
            scans += 1;
            for (rel, e) in &tree.entries {
                assert!(
                    !(e.kind == Kind::File && e.hash == canary_hash),
                    "{rel}: the scan read the secret"
                );
            }
            if let Ok(layer) = locals.materialize(&source, &tree, &snapshots) {
                layers += 1;
                let mut files = Vec::new();
                contents(&layer.dir, &mut files);
                assert!(
                    !files.iter().any(|f| f == canary),
                    "the layer holds the secret"
                );
            }
        }
    });
    assert!(scans > 10 && layers > 0, "{scans} scans, {layers} layers");
}
