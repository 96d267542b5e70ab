//! Pulling images from a real `docker-registry` on 127.0.0.1 into the content store and
//! overlay snapshots. A small TCP proxy in front of the registry counts blob requests (and
//! can hold them back), so "nothing was downloaded" is checked on the wire.

#[path = "../../registry/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use buildwit_config::RegistryConfig;
use buildwit_registry::Registries;
use buildwit_worker::image::{ImageError, PulledImage, chain_ids, pull};
use buildwit_worker::snapshot::{Kind, is_opaque, is_whiteout};
use buildwit_worker::{ContentStore, Snapshotter};
use common::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, digest, pusher, start_registry};
use oci_client::Reference;

const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const PLATFORM: (&str, &str, &str) = ("linux", "amd64", "");

/// A TCP proxy to the registry that counts blob requests and holds back those past a limit.
struct Proxy {
    port: u16,
    blobs: Arc<AtomicUsize>,
    hold_after: Arc<AtomicUsize>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let blobs = Arc::new(AtomicUsize::new(0));
        let hold_after = Arc::new(AtomicUsize::new(usize::MAX));
        let (b, h) = (blobs.clone(), hold_after.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
                let (b, h) = (b.clone(), h.clone());
                std::thread::spawn(move || forward_requests(&mut c_read, &mut s_write, &b, &h));
            }
        });
        Proxy {
            port,
            blobs,
            hold_after,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn blob_requests(&self) -> usize {
        self.blobs.load(Ordering::SeqCst)
    }
}

/// Copies requests to the registry, counting `/blobs/sha256:` request paths (also across
/// read boundaries) and holding a request while its number is past `hold_after`.
fn forward_requests(
    from: &mut TcpStream,
    to: &mut TcpStream,
    blobs: &AtomicUsize,
    hold_after: &AtomicUsize,
) {
    const PATTERN: &[u8] = b"/blobs/sha256:";
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut window = std::mem::take(&mut tail);
        window.extend_from_slice(&buf[..n]);
        // The tail is shorter than the pattern, so every match here is new.
        let found = window
            .windows(PATTERN.len())
            .filter(|w| *w == PATTERN)
            .count();
        for _ in 0..found {
            let number = blobs.fetch_add(1, Ordering::SeqCst) + 1;
            while number > hold_after.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        tail = window[window.len().saturating_sub(PATTERN.len() - 1)..].to_vec();
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// A tar entry: (path, type, mode, uid, link target or contents).
enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, u32, u64, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        match e {
            Entry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::File(p, mode, uid, data) => {
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*uid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                b.append_link(&mut h, p, target).unwrap();
            }
            Entry::Hardlink(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A layer to push: media type, blob, and the diff_id to put in the config.
struct TestLayer {
    media_type: &'static str,
    blob: Vec<u8>,
    diff_id: String,
}

impl TestLayer {
    fn gzip(tar: &[u8]) -> Self {
        TestLayer {
            media_type: OCI_LAYER_GZIP,
            blob: gzip(tar),
            diff_id: digest(tar),
        }
    }

    fn zstd(tar: &[u8]) -> Self {
        TestLayer {
            media_type: OCI_LAYER_ZSTD,
            blob: zstd::encode_all(tar, 3).unwrap(),
            diff_id: digest(tar),
        }
    }

    fn digest(&self) -> String {
        digest(&self.blob)
    }
}

/// The base layer: files, a hard link, a symlink, a set-uid file owned by 1000.
fn base_layer() -> TestLayer {
    TestLayer::gzip(&tar_of(&[
        Entry::Dir("etc/"),
        Entry::File("etc/keep", 0o644, 0, b"keep\n"),
        Entry::File("etc/gone", 0o644, 0, b"gone\n"),
        Entry::Hardlink("etc/hard", "etc/keep"),
        Entry::Dir("bin/"),
        Entry::File("bin/tool", 0o4755, 1000, b"tool\n"),
        Entry::Dir("data/"),
        Entry::File("data/old1", 0o644, 0, b"1"),
        Entry::File("data/old2", 0o644, 0, b"2"),
        Entry::Symlink("link", "etc/keep"),
    ]))
}

/// The top layer: deletes etc/gone, makes data/ opaque with one new file, adds etc/added.
fn top_layer() -> TestLayer {
    TestLayer::zstd(&tar_of(&[
        Entry::Dir("etc/"),
        Entry::File("etc/.wh.gone", 0o644, 0, b""),
        Entry::File("etc/added", 0o600, 0, b"added\n"),
        Entry::Dir("data/"),
        Entry::File("data/.wh..wh..opq", 0o644, 0, b""),
        Entry::File("data/new", 0o644, 0, b"new\n"),
    ]))
}

/// Pushes an image of `layers` as `host/repo:tag`; returns the manifest digest and config.
async fn push(host: &str, repo: &str, tag: &str, layers: &[TestLayer]) -> (String, Vec<u8>) {
    let client = pusher(None);
    let r = Reference::with_tag(host.into(), repo.into(), tag.into());
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/tool"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let mut descriptors = Vec::new();
    for l in layers {
        client
            .push_blob(&r, l.blob.clone(), &l.digest())
            .await
            .unwrap();
        descriptors.push(serde_json::json!({
            "mediaType": l.media_type, "digest": l.digest(), "size": l.blob.len(),
        }));
    }
    client
        .push_blob(&r, config.clone(), &digest(&config))
        .await
        .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest(&config), "size": config.len()},
        "layers": descriptors,
    }))
    .unwrap();
    let manifest_digest = digest(&manifest);
    client
        .push_manifest_raw(&r, manifest, http::HeaderValue::from_static(OCI_MANIFEST))
        .await
        .unwrap();
    (manifest_digest, config)
}

/// `[registry."host"] http = true`.
fn registries(host: &str) -> Registries {
    let mut config = BTreeMap::new();
    config.insert(
        host.to_string(),
        RegistryConfig {
            http: Some(true),
            ..Default::default()
        },
    );
    Registries::new(&config).unwrap()
}

/// A worker's stores in a temp dir.
struct Stores {
    dir: tempfile::TempDir,
    content: ContentStore,
    snapshots: Arc<Snapshotter>,
}

impl Stores {
    fn new() -> Stores {
        let dir = tempfile::tempdir().unwrap();
        let content = ContentStore::open(dir.path().join("content")).unwrap();
        let snapshots = Snapshotter::open(dir.path().join("snapshots"), Kind::Overlayfs).unwrap();
        Stores {
            dir,
            content,
            snapshots,
        }
    }

    async fn pull(
        &self,
        registries: &Registries,
        reference: &str,
    ) -> Result<PulledImage, ImageError> {
        pull(
            registries,
            &self.content,
            &self.snapshots,
            reference,
            PLATFORM,
        )
        .await
    }

    /// Names in a directory of the stores, sorted.
    fn names(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.path().join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Waits for scratch files to go (a cancelled unpacker finishes in its own thread).
    fn wait_for_no_scratch(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(self.names("snapshots/tmp").is_empty() && self.names("content/ingest").is_empty()) {
            assert!(
                Instant::now() < deadline,
                "scratch files stay: {:?} {:?}",
                self.names("snapshots/tmp"),
                self.names("content/ingest")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn chain_layer_id(diff_ids: &[&TestLayer]) -> String {
    let ids: Vec<String> = diff_ids.iter().map(|l| l.diff_id.clone()).collect();
    format!(
        "chain-{}",
        chain_ids(&ids)
            .last()
            .unwrap()
            .trim_start_matches("sha256:")
    )
}

fn meta_of(path: &Path) -> fs::Metadata {
    path.symlink_metadata()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_unpacks_overlay_layers_and_reuses_them() {
    let reg = start_registry(None);
    let proxy = Proxy::start(reg.port);
    let (base, top) = (base_layer(), top_layer());
    let (manifest_digest, config) =
        push(&reg.host(), "test/app", "v1", &[base_layer(), top_layer()]).await;
    let host = proxy.host();
    let reference = format!("{host}/test/app:v1");
    let stores = Stores::new();
    let regs = registries(&host);

    let image = stores.pull(&regs, &reference).await.unwrap();
    assert_eq!(image.reference, reference);
    assert_eq!(image.digest, manifest_digest);
    assert_eq!(image.manifest_digest, manifest_digest);
    assert_eq!(image.config, config);
    assert_eq!(image.downloaded.len(), 3, "{:?}", image.downloaded);
    assert_eq!(proxy.blob_requests(), 3);

    // Layers are named by ChainID, bottom first, and record diff_id and blob.
    let layers = &image.snapshot.layers;
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0].id, chain_layer_id(&[&base]));
    assert_eq!(layers[1].id, chain_layer_id(&[&base, &top]));
    for (layer, pushed) in layers.iter().zip([&base, &top]) {
        let meta = layer.meta().unwrap();
        assert_eq!(meta.diff_id.as_deref(), Some(pushed.diff_id.as_str()));
        let blob = meta.blob.unwrap();
        assert_eq!(blob.digest, pushed.digest());
        assert_eq!(blob.media_type, pushed.media_type);
        assert_eq!(blob.size, pushed.blob.len() as u64);
        // The compressed blob is in the content store, verified.
        assert_eq!(stores.content.read(&blob.digest).unwrap(), pushed.blob);
    }
    assert_eq!(stores.content.read(&digest(&config)).unwrap(), config);
    assert!(stores.content.has(&manifest_digest));

    // The layer directories are in overlayfs format.
    let (lower, upper) = (&layers[0].dir, &layers[1].dir);
    assert_eq!(
        meta_of(&lower.join("etc/hard")).ino(),
        meta_of(&lower.join("etc/keep")).ino()
    );
    assert!(is_whiteout(&meta_of(&upper.join("etc/gone"))));
    assert!(!upper.join("etc/.wh.gone").exists());
    assert!(is_opaque(&upper.join("data")));
    assert!(!is_opaque(&upper.join("etc")));
    assert!(!upper.join("data/.wh..wh..opq").exists());

    // The merged view.
    let mounted = stores.snapshots.mount(&image.snapshot, None).unwrap();
    let root = mounted.path().to_path_buf();
    assert_eq!(fs::read(root.join("etc/keep")).unwrap(), b"keep\n");
    assert_eq!(fs::read(root.join("etc/hard")).unwrap(), b"keep\n");
    assert_eq!(fs::read(root.join("etc/added")).unwrap(), b"added\n");
    assert!(
        !root.join("etc/gone").exists(),
        "the whiteout hides etc/gone"
    );
    let mut data: Vec<String> = fs::read_dir(root.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    data.sort();
    assert_eq!(
        data,
        ["new"],
        "the opaque data/ hides the base layer's files"
    );
    let tool = meta_of(&root.join("bin/tool"));
    assert_eq!(
        (tool.mode() & 0o7777, tool.uid(), tool.gid()),
        (0o4755, 1000, 1000)
    );
    assert_eq!(tool.mtime(), 1_700_000_000);
    assert_eq!(
        meta_of(&root.join("etc/added")).permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::read_link(root.join("link")).unwrap(),
        PathBuf::from("etc/keep")
    );
    drop(mounted);

    // Pulling again downloads nothing: not with the same Registries, not with new ones.
    let blobs_before = stores.names("content/blobs/sha256");
    let again = stores.pull(&regs, &reference).await.unwrap();
    assert_eq!(again.snapshot, image.snapshot);
    assert_eq!(again.config, config);
    assert!(again.downloaded.is_empty(), "{:?}", again.downloaded);
    let again = stores.pull(&registries(&host), &reference).await.unwrap();
    assert_eq!(again.snapshot, image.snapshot);
    assert_eq!(proxy.blob_requests(), 3, "a second pull made blob requests");
    assert_eq!(stores.names("content/blobs/sha256"), blobs_before);
    assert!(stores.names("content/ingest").is_empty());
    assert!(stores.names("snapshots/tmp").is_empty());

    // A layer removed since is unpacked again from the blob kept in the content store.
    stores.snapshots.remove_layer(&layers[1].id).unwrap();
    let again = stores.pull(&regs, &reference).await.unwrap();
    assert_eq!(again.snapshot, image.snapshot);
    assert!(again.downloaded.is_empty(), "{:?}", again.downloaded);
    assert!(is_whiteout(&meta_of(&upper.join("etc/gone"))));
    assert_eq!(proxy.blob_requests(), 3);

    // Another image on the same base shares its layer and downloads only what is new.
    let other = TestLayer::gzip(&tar_of(&[Entry::File("other", 0o644, 0, b"other\n")]));
    let other_digest = other.digest();
    let (_, other_config) = push(&reg.host(), "test/other", "v1", &[base_layer(), other]).await;
    let second = stores
        .pull(&regs, &format!("{host}/test/other:v1"))
        .await
        .unwrap();
    assert_eq!(second.snapshot.layers[0], image.snapshot.layers[0]);
    assert_ne!(second.snapshot.layers[1], image.snapshot.layers[1]);
    assert_eq!(second.downloaded, [digest(&other_config), other_digest]);
    assert_eq!(proxy.blob_requests(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_with_the_wrong_diff_id_fails_and_keeps_nothing() {
    let reg = start_registry(None);
    let base = base_layer();
    let mut top = top_layer();
    let top_digest = top.digest();
    // The config claims another diff_id for the top layer.
    top.diff_id = digest(b"something else");
    push(&reg.host(), "test/lying", "v1", &[base_layer(), top]).await;
    let host = reg.host();
    let reference = format!("{host}/test/lying:v1");
    let stores = Stores::new();

    let err = stores
        .pull(&registries(&host), &reference)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, ImageError::Image { .. }), "{err:?}");
    let msg = err.to_string();
    for part in [&reference, &host, &top_digest, &digest(b"something else")] {
        assert!(msg.contains(part.as_str()), "{msg} should name {part}");
    }
    assert!(msg.contains("diff_id"), "{msg}");
    // Neither the bad layer nor its blob was kept (the good base layer may have been).
    stores.wait_for_no_scratch();
    let ids = stores.snapshots.layer_ids().unwrap();
    assert!(
        ids.iter().all(|id| *id == chain_layer_id(&[&base])),
        "{ids:?}"
    );
    assert!(!stores.content.has(&top_digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_layer_blob_is_a_digest_mismatch() {
    let reg = start_registry(None);
    let top = top_layer();
    push(
        &reg.host(),
        "test/corrupt",
        "v1",
        &[base_layer(), top_layer()],
    )
    .await;
    // Flip a byte of the stored top layer behind the registry's back (same length).
    let path = reg.blob_path(&top.digest());
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(&path, bytes).unwrap();
    let host = reg.host();
    let reference = format!("{host}/test/corrupt:v1");
    let stores = Stores::new();

    let err = stores
        .pull(&registries(&host), &reference)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, ImageError::Registry(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("digest mismatch"), "{msg}");
    for part in [&reference, &host, &top.digest()] {
        assert!(msg.contains(part.as_str()), "{msg} should name {part}");
    }
    stores.wait_for_no_scratch();
    assert!(!stores.content.has(&top.digest()));
    let top_id = chain_layer_id(&[&base_layer(), &top]);
    assert!(stores.snapshots.layer(&top_id).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_pull_leaves_no_partial_layer() {
    let reg = start_registry(None);
    let proxy = Proxy::start(reg.port);
    let (base, top) = (base_layer(), top_layer());
    let (_, config) = push(&reg.host(), "test/slow", "v1", &[base_layer(), top_layer()]).await;
    let host = proxy.host();
    let reference = format!("{host}/test/slow:v1");
    let stores = Stores::new();
    let regs = registries(&host);

    // Only the config gets through: both layer requests are then open at once (the layers
    // download concurrently), and the pull is cancelled while they hang.
    proxy.hold_after.store(1, Ordering::SeqCst);
    let stuck = tokio::time::timeout(Duration::from_secs(10), async {
        let pulling = stores.pull(&regs, &reference);
        tokio::pin!(pulling);
        while proxy.blob_requests() < 3 {
            tokio::select! {
                r = &mut pulling => panic!("the pull finished while held: {r:?}"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await;
    assert!(stuck.is_ok(), "both layer requests should be open at once");
    stores.wait_for_no_scratch();
    assert!(stores.snapshots.layer_ids().unwrap().is_empty());
    assert!(stores.content.has(&digest(&config)));
    assert!(!stores.content.has(&base.digest()) && !stores.content.has(&top.digest()));

    // Now one layer gets through and the other hangs; cancel again.
    proxy.hold_after.store(4, Ordering::SeqCst);
    let cancelled =
        tokio::time::timeout(Duration::from_secs(2), stores.pull(&regs, &reference)).await;
    assert!(cancelled.is_err(), "the pull should have been stuck");
    assert_eq!(
        proxy.blob_requests(),
        5,
        "no config request, two layer requests"
    );
    stores.wait_for_no_scratch();
    let ids = stores.snapshots.layer_ids().unwrap();
    eprintln!("committed before the cancel: {ids:?}");
    assert!(ids.len() < 2, "{ids:?}");
    for id in &ids {
        // Whatever was committed is complete.
        let layer = stores.snapshots.layer(id).unwrap();
        assert!(layer.meta().unwrap().diff_id.is_some(), "{id}");
    }

    // Reopening (as after a killed daemon) finds nothing half done, and the pull completes.
    let snapshots =
        Snapshotter::open(stores.dir.path().join("snapshots"), Kind::Overlayfs).unwrap();
    assert_eq!(snapshots.layer_ids().unwrap(), ids);
    proxy.hold_after.store(usize::MAX, Ordering::SeqCst);
    let image = stores.pull(&regs, &reference).await.unwrap();
    assert_eq!(image.snapshot.layers[0].id, chain_layer_id(&[&base]));
    assert_eq!(image.snapshot.layers[1].id, chain_layer_id(&[&base, &top]));
    // Only the layers still missing were fetched.
    assert_eq!(
        image.downloaded.len(),
        2 - ids.len(),
        "{:?}",
        image.downloaded
    );
}
