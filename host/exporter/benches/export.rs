//! Exporting a layer as an OCI tarball: archive + compress + store the layer blob
//! (recompressed every time with force-compression), then write the OCI tar. Two layers:
//! 2000 small files, and one 64 MiB file; each with gzip and zstd.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use buildwit_exporter::{Compression, ImageSpec, build_image, write_oci_tar};
use buildwit_worker::snapshot::Kind;
use buildwit_worker::{ContentStore, Layer, LayerMeta, Snapshot, Snapshotter};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux","config":{}}"#;

/// Bytes that compress about as well as typical binaries and text (a small alphabet with
/// a skewed distribution), from a fixed seed so every run measures the same input.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // The smaller of two picks: early letters of the alphabet come up more often.
        const ALPHABET: &[u8] = b"etaoinshrdlu \n0123456789{}();";
        let pick = |bits: u64| (bits & 0xff) as usize % ALPHABET.len();
        out.push(ALPHABET[pick(x).min(pick(x >> 8))]);
    }
    out
}

fn make_layer(snapshotter: &Snapshotter, id: &str, fill: impl FnOnce(&Path)) -> Layer {
    let builder = snapshotter.new_layer().unwrap();
    fill(&builder.dir());
    builder.commit(id, &LayerMeta::default()).unwrap()
}

fn bench_export(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let content = ContentStore::open(tmp.path().join("content")).unwrap();
    let snapshotter: Arc<Snapshotter> =
        Snapshotter::open(tmp.path().join("snapshots"), Kind::Auto).unwrap();

    let small = make_layer(&snapshotter, "small-files", |dir| {
        for d in 0..20 {
            let sub = dir.join(format!("dir{d:02}"));
            fs::create_dir(&sub).unwrap();
            for f in 0..100 {
                let body = data(256 + (f * 37) % 1800, (d * 100 + f) as u64);
                fs::write(sub.join(format!("file{f:03}.txt")), body).unwrap();
            }
        }
    });
    let big = make_layer(&snapshotter, "big-file", |dir| {
        fs::write(dir.join("big.bin"), data(64 << 20, 42)).unwrap();
    });

    let mut group = c.benchmark_group("layer_blob+write_oci_tar");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    for (name, layer) in [("2000_small_files", &small), ("64MiB_file", &big)] {
        let bytes: u64 = walk_size(&layer.dir);
        group.throughput(Throughput::Bytes(bytes));
        for compression in [Compression::Gzip, Compression::Zstd] {
            let mut spec = ImageSpec::new(
                Snapshot {
                    layers: vec![layer.clone()],
                },
                CONFIG.to_vec(),
            );
            spec.compression = compression;
            spec.force_compression = true;
            spec.created = Some("2024-01-01T00:00:00Z".into());
            let dest = tmp.path().join(format!("{name}-{compression}.tar"));
            group.bench_with_input(BenchmarkId::new(name, compression), &spec, |b, spec| {
                b.iter(|| {
                    let image = build_image(&content, spec).unwrap();
                    write_oci_tar(&content, &image, &["bench:latest".to_string()], &dest).unwrap();
                })
            });
        }
    }
    group.finish();
}

/// Total size of the regular files under a directory.
fn walk_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let md = entry.metadata().unwrap();
        total += if md.is_dir() {
            walk_size(&entry.path())
        } else {
            md.len()
        };
    }
    total
}

criterion_group!(benches, bench_export);
criterion_main!(benches);
