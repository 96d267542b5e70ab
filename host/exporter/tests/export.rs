//! Exports checked with the tools people use on them: skopeo reads the archives and layout
//! directories, umoci unpacks them (applying whiteouts and checking diff ids), tar lists
//! them. These tests run as root (whiteouts are device nodes, opaque dirs trusted xattrs).

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use buildwit_exporter::*;
use buildwit_worker::snapshot::{Kind, make_whiteout, set_opaque};
use buildwit_worker::{ContentStore, Layer, LayerMeta, Snapshot, Snapshotter};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// A name longer than a ustar header holds, to need a PAX record.
fn long_name() -> String {
    format!("deep/{}", "d".repeat(120))
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    content: ContentStore,
    snapshotter: Arc<Snapshotter>,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        Fixture {
            content: ContentStore::open(root.join("content")).unwrap(),
            snapshotter: Snapshotter::open(root.join("snapshots"), Kind::Overlayfs).unwrap(),
            root,
            _tmp: tmp,
        }
    }

    fn layer(&self, id: &str, build: impl FnOnce(&Path)) -> Layer {
        let builder = self.snapshotter.new_layer().unwrap();
        build(&builder.dir());
        builder.commit(id, &LayerMeta::default()).unwrap()
    }

    /// Base layer: files the top layer deletes or hides, and some it keeps.
    fn base(&self) -> Layer {
        self.layer("base", |d| {
            fs::create_dir_all(d.join("etc")).unwrap();
            fs::write(d.join("etc/hostname"), "base\n").unwrap();
            fs::write(d.join("etc/old.conf"), "old").unwrap();
            fs::create_dir_all(d.join("opq")).unwrap();
            fs::write(d.join("opq/stale"), "stale").unwrap();
            fs::create_dir_all(d.join("bin")).unwrap();
            fs::write(d.join("bin/tool"), "#!/bin/sh\necho hi\n").unwrap();
            fs::set_permissions(d.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        })
    }

    /// Top layer: a deletion, an opaque dir, a symlink, a hard link pair, an xattr and a
    /// long name.
    fn top(&self) -> Layer {
        self.layer("top", |d| {
            fs::create_dir_all(d.join("etc")).unwrap();
            make_whiteout(&d.join("etc/old.conf")).unwrap();
            fs::create_dir_all(d.join("opq")).unwrap();
            set_opaque(&d.join("opq")).unwrap();
            fs::write(d.join("opq/fresh"), "fresh").unwrap();
            symlink("etc/hostname", d.join("link")).unwrap();
            fs::create_dir_all(d.join("hard")).unwrap();
            fs::write(d.join("hard/a"), "same").unwrap();
            fs::hard_link(d.join("hard/a"), d.join("hard/b")).unwrap();
            fs::write(d.join("x.txt"), "x").unwrap();
            rustix::fs::lsetxattr(
                d.join("x.txt"),
                "user.x",
                b"1",
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
            fs::create_dir_all(d.join("deep")).unwrap();
            fs::write(d.join(long_name()), "long").unwrap();
            // A device that is not a deletion (1/3, like /dev/null) and a fifo.
            let mknod = |name: &str, kind, dev| {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    d.join(name),
                    kind,
                    rustix::fs::Mode::from_raw_mode(0o666),
                    dev,
                )
                .unwrap()
            };
            mknod(
                "null",
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::makedev(1, 3),
            );
            mknod("pipe", rustix::fs::FileType::Fifo, 0);
        })
    }

    /// An image of base + top + an empty layer, with a config whose history has an entry
    /// for each, plus a metadata-only step.
    fn spec(&self) -> ImageSpec {
        let layers = vec![self.base(), self.top(), self.layer("empty", |_| {})];
        ImageSpec::new(Snapshot { layers }, CONFIG.as_bytes().to_vec())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"],"Env":["PATH=/usr/bin:/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:placeholder"]},"history":[{"created":"2024-01-01T00:00:00Z","created_by":"ADD base"},{"created_by":"ENV A=1","empty_layer":true},{"created_by":"RUN change"},{"created_by":"RUN true"}]}"#;

const NAME: &str = "example.com/test/app:v1";

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn skopeo_inspect(transport: &str, path: &Path) -> Value {
    let out = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("{transport}:{}", path.display())));
    serde_json::from_str(&out).unwrap()
}

fn skopeo_raw(transport: &str, path: &Path) -> Value {
    let out = run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("{transport}:{}", path.display())));
    serde_json::from_str(&out).unwrap()
}

/// Unpack an OCI layout directory with umoci and return the rootfs.
fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle));
    bundle.join("rootfs")
}

/// Everything in the rootfs that the image should hold, and nothing it should not.
fn check_rootfs(rootfs: &Path) {
    let read = |p: &str| fs::read_to_string(rootfs.join(p)).unwrap();
    assert_eq!(read("etc/hostname"), "base\n");
    assert!(
        !rootfs.join("etc/old.conf").exists(),
        "the deleted file is back"
    );
    assert!(
        !rootfs.join("opq/stale").exists(),
        "the opaque dir let the lower file through"
    );
    assert_eq!(read("opq/fresh"), "fresh");
    assert_eq!(
        fs::metadata(rootfs.join("bin/tool")).unwrap().mode() & 0o777,
        0o755
    );
    assert_eq!(
        fs::read_link(rootfs.join("link")).unwrap(),
        Path::new("etc/hostname")
    );
    let (a, b) = (
        fs::metadata(rootfs.join("hard/a")).unwrap(),
        fs::metadata(rootfs.join("hard/b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hard links were not kept");
    assert_eq!(read("hard/b"), "same");
    let mut value = [0u8; 8];
    let n = rustix::fs::lgetxattr(rootfs.join("x.txt"), "user.x", &mut value).unwrap();
    assert_eq!(&value[..n], b"1");
    assert_eq!(read(&long_name()), "long");
    let null = fs::symlink_metadata(rootfs.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert!(
        fs::symlink_metadata(rootfs.join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let mut names: Vec<String> = fs::read_dir(rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bin", "deep", "etc", "hard", "link", "null", "opq", "pipe", "x.txt"
        ]
    );
}

fn untar(archive: &Path, dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir));
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[test]
fn oci_tar_holds_the_expected_files() {
    let fx = Fixture::new();
    let image = build_image(&fx.content, &fx.spec()).unwrap();
    assert_eq!(
        image.layers.len(),
        3,
        "the empty layer is an empty tar, as in BuildKit"
    );
    let dest = fx.path("image.tar");
    write_oci_tar(&fx.content, &image, &[NAME.to_string()], &dest).unwrap();

    let info = skopeo_inspect("oci-archive", &dest);
    let digests: Vec<&str> = info["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let want: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(digests, want);
    assert_eq!(info["Architecture"], "amd64");
    let raw = skopeo_raw("oci-archive", &dest);
    assert_eq!(raw["mediaType"], OCI_MANIFEST);
    for layer in raw["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], OCI_LAYER_GZIP);
    }

    // The layout files as BuildKit writes them.
    let layout = fx.path("layout");
    untar(&dest, &layout);
    assert_eq!(
        fs::read_to_string(layout.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], image.manifest.digest.as_str());
    assert_eq!(entry["mediaType"], OCI_MANIFEST);
    assert_eq!(entry["annotations"]["io.containerd.image.name"], NAME);
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    assert!(entry["annotations"]["org.opencontainers.image.created"].is_string());
    assert!(!layout.join("manifest.json").exists());

    let rootfs = umoci_unpack(&layout, "v1", &fx.path("bundle"));
    check_rootfs(&rootfs);
}

#[test]
fn config_history_and_rootfs_agree_with_the_layers() {
    let fx = Fixture::new();
    let image = build_image(&fx.content, &fx.spec()).unwrap();
    let config: Value = serde_json::from_slice(&image.config_bytes).unwrap();
    assert_eq!(image.config.digest, sha256(&image.config_bytes));
    assert_eq!(
        fx.content.read(&image.config.digest).unwrap(),
        image.config_bytes
    );

    // Members keep the frontend's order; rootfs gets the real diff ids in place.
    let keys: Vec<&String> = config.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "architecture",
            "os",
            "config",
            "rootfs",
            "history",
            "created"
        ]
    );
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), 3);

    // Each diff id is the sha256 of the layer blob uncompressed.
    for (layer, diff_id) in image.layers.iter().zip(diff_ids) {
        let blob = fx.content.read(&layer.digest).unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(diff_id.as_str().unwrap(), sha256(&tar));
    }

    // The last entry ("RUN true") changed nothing: it keeps its (empty) layer, as in
    // BuildKit; only the metadata step is an empty_layer entry.
    let history = config["history"].as_array().unwrap();
    let empty: Vec<bool> = history.iter().map(|h| h["empty_layer"] == true).collect();
    assert_eq!(empty, [false, true, false, false]);
    assert_eq!(
        history.iter().filter(|h| h["empty_layer"] != true).count(),
        diff_ids.len()
    );
    // Entries without a time were given the base's (no creation time was known for the
    // new layers), and the config's created is the last one.
    assert!(
        history
            .iter()
            .all(|h| h["created"] == "2024-01-01T00:00:00Z")
    );
    assert_eq!(config["created"], "2024-01-01T00:00:00Z");

    let manifest: Value = serde_json::from_slice(&image.manifest_bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG);
    assert_eq!(manifest["config"]["digest"], image.config.digest.as_str());
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 3);
}

#[test]
fn missing_history_is_added_with_the_layer_time() {
    let fx = Fixture::new();
    let layers = vec![fx.base(), fx.top()];
    let mut spec = ImageSpec::new(
        Snapshot { layers },
        br#"{"os":"linux","architecture":"arm64"}"#.to_vec(),
    );
    spec.created = Some("2025-05-05T05:05:05Z".into());
    let image = build_image(&fx.content, &spec).unwrap();
    let config: Value = serde_json::from_slice(&image.config_bytes).unwrap();
    let history = config["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    for h in history {
        assert_eq!(h["comment"], "buildkit.exporter.image.v0");
        assert_eq!(h["created"], "2025-05-05T05:05:05Z");
    }
    assert_eq!(config["created"], "2025-05-05T05:05:05Z");
    assert_eq!(
        image.descriptor_annotations["org.opencontainers.image.created"],
        "2025-05-05T05:05:05Z"
    );
}

#[test]
fn configs_without_os_are_refused() {
    let fx = Fixture::new();
    let spec = ImageSpec::new(Snapshot::default(), br#"{"architecture":"amd64"}"#.to_vec());
    let err = build_image(&fx.content, &spec).unwrap_err().to_string();
    assert!(err.contains("missing os"), "{err}");
    let spec = ImageSpec::new(Snapshot::default(), b"[1]".to_vec());
    assert!(build_image(&fx.content, &spec).is_err());
}

#[test]
fn oci_dir_holds_the_expected_files() {
    let fx = Fixture::new();
    let image = build_image(&fx.content, &fx.spec()).unwrap();
    let dest = fx.path("oci-dir");
    write_oci_dir(&fx.content, &image, &["app:latest".to_string()], &dest).unwrap();
    let info = skopeo_inspect("oci", &dest);
    assert_eq!(info["Layers"].as_array().unwrap().len(), 3);
    check_rootfs(&umoci_unpack(&dest, "latest", &fx.path("bundle")));

    // Writing again replaces the directory whole.
    fs::write(dest.join("stray"), "x").unwrap();
    write_oci_dir(&fx.content, &image, &["app:latest".to_string()], &dest).unwrap();
    assert!(!dest.join("stray").exists());
    assert!(dest.join("index.json").exists());
    assert_eq!(leftovers(&fx.root), Vec::<String>::new());
}

#[test]
fn docker_tar_loads_with_skopeo() {
    let fx = Fixture::new();
    let image = build_image(&fx.content, &fx.spec()).unwrap();
    let dest = fx.path("docker.tar");
    write_docker_tar(
        &fx.content,
        &image,
        &["app:1".to_string(), "other/app".to_string()],
        &dest,
    )
    .unwrap();
    let info = skopeo_inspect("docker-archive", &dest);
    assert_eq!(info["Layers"].as_array().unwrap().len(), 3);
    assert_eq!(info["Architecture"], "amd64");

    let dir = fx.path("docker");
    untar(&dest, &dir);
    let manifest: Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["app:1", "other/app:latest"])
    );
    let hex = image.config.digest.trim_start_matches("sha256:");
    assert_eq!(manifest[0]["Config"], format!("blobs/sha256/{hex}"));
    assert_eq!(manifest[0]["Layers"].as_array().unwrap().len(), 3);
    assert!(!dir.join("repositories").exists());
    // The OCI layout is there too, as in BuildKit's docker tarballs.
    assert!(dir.join("oci-layout").exists() && dir.join("index.json").exists());
}

#[test]
fn docker_media_types_without_oci_mediatypes() {
    let fx = Fixture::new();
    let mut spec = fx.spec();
    spec.oci_mediatypes = false;
    let image = build_image(&fx.content, &spec).unwrap();
    assert_eq!(image.manifest.media_type, DOCKER_MANIFEST);
    assert_eq!(image.config.media_type, DOCKER_CONFIG);
    assert!(
        image
            .layers
            .iter()
            .all(|l| l.media_type == DOCKER_LAYER_GZIP)
    );
    let dest = fx.path("docker.tar");
    write_docker_tar(&fx.content, &image, &["app:1".to_string()], &dest).unwrap();
    let raw = skopeo_raw("docker-archive", &dest);
    assert_eq!(raw["mediaType"], DOCKER_MANIFEST);
    let oci = fx.path("oci.tar");
    write_oci_tar(&fx.content, &image, &["app:1".to_string()], &oci).unwrap();
    let raw = skopeo_raw("oci-archive", &oci);
    assert_eq!(raw["mediaType"], DOCKER_MANIFEST);
    assert_eq!(raw["layers"][0]["mediaType"], DOCKER_LAYER_GZIP);

    // zstd needs OCI media types, as in BuildKit.
    spec.compression = Compression::Zstd;
    let err = build_image(&fx.content, &spec).unwrap_err().to_string();
    assert!(
        err.contains("\"compression=zstd\" conflicts with \"oci-mediatypes=false\""),
        "{err}"
    );
}

#[test]
fn zstd_layers() {
    let fx = Fixture::new();
    let mut spec = fx.spec();
    spec.compression = Compression::Zstd;
    let image = build_image(&fx.content, &spec).unwrap();
    assert!(image.layers.iter().all(|l| l.media_type == OCI_LAYER_ZSTD));
    let config: Value = serde_json::from_slice(&image.config_bytes).unwrap();
    for (layer, diff_id) in image
        .layers
        .iter()
        .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
    {
        let blob = fx.content.read(&layer.digest).unwrap();
        let tar = zstd::decode_all(&blob[..]).unwrap();
        assert_eq!(diff_id.as_str().unwrap(), sha256(&tar));
    }
    let dest = fx.path("zstd.tar");
    write_oci_tar(&fx.content, &image, &[NAME.to_string()], &dest).unwrap();
    let info = skopeo_inspect("oci-archive", &dest);
    assert_eq!(info["Layers"].as_array().unwrap().len(), 3);
    let raw = skopeo_raw("oci-archive", &dest);
    for layer in raw["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], OCI_LAYER_ZSTD);
    }
    // umoci 0.4.7 reads no zstd: let skopeo decompress the layers (checking their digests)
    // into a gzip layout, and unpack that.
    let layout = fx.path("layout");
    run(Command::new("skopeo")
        .args(["copy", "--dest-compress", "--dest-compress-format", "gzip"])
        .arg(format!("oci-archive:{}", dest.display()))
        .arg(format!("oci:{}:v1", layout.display())));
    check_rootfs(&umoci_unpack(&layout, "v1", &fx.path("bundle")));
}

#[test]
fn uncompressed_layers_have_their_diff_id_as_digest() {
    let fx = Fixture::new();
    let layer = fx.top();
    let (desc, diff_id) = layer_blob(&fx.content, &layer, Compression::Uncompressed).unwrap();
    assert_eq!(desc.media_type, OCI_LAYER);
    assert_eq!(desc.digest, diff_id);
    assert_eq!(
        desc.size,
        fs::metadata(fx.content.path(&desc.digest).unwrap())
            .unwrap()
            .len()
    );
}

#[test]
fn exporting_a_layer_again_reuses_its_blob() {
    let fx = Fixture::new();
    let layer = fx.top();
    let (first, diff_id) = layer_blob(&fx.content, &layer, Compression::Gzip).unwrap();
    let meta = layer.meta().unwrap();
    assert_eq!(meta.blob.as_ref(), Some(&first));
    assert_eq!(meta.diff_id.as_deref(), Some(diff_id.as_str()));

    // Change the files behind the exporter's back: a second compression would give another
    // digest, so an unchanged one shows the blob was reused.
    fs::write(layer.dir.join("added"), "added").unwrap();
    let (again, again_diff) = layer_blob(&fx.content, &layer, Compression::Gzip).unwrap();
    assert_eq!((&again, &again_diff), (&first, &diff_id));
    assert_eq!(layer.meta().unwrap(), meta);

    // force-compression makes a new blob (and records it).
    let forced = LayerCompression {
        compression: Compression::Gzip,
        force: true,
        ..Default::default()
    };
    let (new, _) = layer_blob_with(&fx.content, &layer, &forced).unwrap();
    assert_ne!(new.digest, first.digest);
    assert_eq!(layer.meta().unwrap().blob, Some(new.clone()));

    // Another compression makes a new blob too, and becomes the one kept.
    let (zstd, _) = layer_blob(&fx.content, &layer, Compression::Zstd).unwrap();
    assert_eq!(zstd.media_type, OCI_LAYER_ZSTD);
    assert_eq!(layer.meta().unwrap().blob, Some(zstd.clone()));
    let (zstd_again, _) = layer_blob(&fx.content, &layer, Compression::Zstd).unwrap();
    assert_eq!(zstd_again, zstd);
}

#[test]
fn a_pulled_layer_blob_is_used_as_it_is() {
    let fx = Fixture::new();
    let layer = fx.base();
    // As if pulled: the original blob in the store and recorded with a Docker media type.
    let original = b"pretend this is the registry's gzip blob";
    let digest = fx.content.write(original).unwrap();
    let blob = buildwit_worker::Descriptor {
        media_type: DOCKER_LAYER_GZIP.into(),
        digest: digest.clone(),
        size: original.len() as u64,
    };
    let diff_id = format!("sha256:{}", "1".repeat(64));
    layer
        .set_meta(&LayerMeta {
            diff_id: Some(diff_id.clone()),
            blob: Some(blob),
            ..Default::default()
        })
        .unwrap();
    let (desc, got_diff) = layer_blob(&fx.content, &layer, Compression::Gzip).unwrap();
    assert_eq!(
        (desc.digest.as_str(), got_diff.as_str()),
        (digest.as_str(), diff_id.as_str())
    );
    assert_eq!(desc.media_type, OCI_LAYER_GZIP);
}

#[test]
fn same_files_give_the_same_blob() {
    let fx = Fixture::new();
    let make = |id: &str| {
        fx.layer(id, |d| {
            fs::create_dir_all(d.join("a/b")).unwrap();
            fs::write(d.join("a/b/c"), "c").unwrap();
            fs::write(d.join("z"), "z").unwrap();
        })
    };
    let (one, two) = (make("one"), make("two"));
    // Same times too, so the headers agree.
    for layer in [&one, &two] {
        for p in ["a/b/c", "z", "a/b", "a"] {
            let t = rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: 1_000_000,
                    tv_nsec: 0,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: 1_000_000,
                    tv_nsec: 0,
                },
            };
            rustix::fs::utimensat(
                rustix::fs::CWD,
                layer.dir.join(p),
                &t,
                rustix::fs::AtFlags::empty(),
            )
            .unwrap();
        }
    }
    let (a, _) = layer_blob(&fx.content, &one, Compression::Gzip).unwrap();
    let (b, _) = layer_blob(&fx.content, &two, Compression::Gzip).unwrap();
    assert_eq!(a, b);

    // Entries are sorted depth first, names have no leading "./", directories end in '/'.
    let listing = run(Command::new("tar")
        .arg("-tzf")
        .arg(fx.content.path(&a.digest).unwrap()));
    assert_eq!(listing, "a/\na/b/\na/b/c\nz\n");
}

#[test]
fn layer_tar_entries() {
    let fx = Fixture::new();
    let layer = fx.top();
    let (desc, _) = layer_blob(&fx.content, &layer, Compression::Gzip).unwrap();
    let listing = run(Command::new("tar")
        .arg("--numeric-owner")
        .arg("-tvzf")
        .arg(fx.content.path(&desc.digest).unwrap()));
    let lines: Vec<&str> = listing.lines().collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(5).unwrap())
        .collect();
    let long = long_name();
    assert_eq!(
        names,
        [
            "deep/",
            long.as_str(),
            "etc/",
            "etc/.wh.old.conf",
            "hard/",
            "hard/a",
            "hard/b",
            "link",
            "null",
            "opq/",
            "opq/.wh..wh..opq",
            "opq/fresh",
            "pipe",
            "x.txt"
        ]
    );
    // hard/b is a link to hard/a, link a symlink; owners are numbers, no user names.
    assert!(
        lines[6].starts_with('h') && lines[6].ends_with("link to hard/a"),
        "{}",
        lines[6]
    );
    assert!(
        lines[7].starts_with('l') && lines[7].ends_with("-> etc/hostname"),
        "{}",
        lines[7]
    );
    assert!(
        lines[8].starts_with('c') && lines[8].contains(" 1,3 "),
        "{}",
        lines[8]
    );
    assert!(lines[12].starts_with('p'), "{}", lines[12]);
    assert!(
        lines
            .iter()
            .all(|l| l.split_whitespace().nth(1).unwrap() == "0/0"),
        "{listing}"
    );
}

/// Files left in a directory that are not the outputs: temporaries of a failed write.
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn a_failed_write_leaves_nothing_at_dest() {
    let fx = Fixture::new();
    let image = build_image(&fx.content, &fx.spec()).unwrap();
    // A layer blob gone from the store: the archive cannot be completed.
    let blob = fx.content.path(&image.layers[1].digest).unwrap();
    fs::remove_file(&blob).unwrap();
    for (what, dest) in [
        ("oci", fx.path("o.tar")),
        ("docker", fx.path("d.tar")),
        ("dir", fx.path("o-dir")),
    ] {
        let result = match what {
            "oci" => write_oci_tar(&fx.content, &image, &[], &dest),
            "docker" => write_docker_tar(&fx.content, &image, &[], &dest),
            _ => write_oci_dir(&fx.content, &image, &[], &dest),
        };
        let err = result.unwrap_err().to_string();
        assert!(err.contains(&image.layers[1].digest), "{what}: {err}");
        assert!(!dest.exists(), "{what}: {} exists", dest.display());
    }
    assert_eq!(leftovers(&fx.root), Vec::<String>::new());

    // A blob whose bytes changed is refused, not exported under its old digest.
    fs::write(&blob, b"tampered").unwrap();
    let err = write_oci_tar(&fx.content, &image, &[], &fx.path("t.tar")).unwrap_err();
    assert!(matches!(err, ExportError::CorruptBlob { .. }), "{err}");
    assert!(!fx.path("t.tar").exists());

    // A destination in a missing directory: the error names it.
    let dest = fx.path("missing/out.tar");
    let err = write_oci_tar(&fx.content, &image, &[], &dest)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&fx.path("missing").display().to_string()),
        "{err}"
    );

    // An invalid name fails before anything is written.
    let err =
        write_oci_tar(&fx.content, &image, &["Bad Name".into()], &fx.path("n.tar")).unwrap_err();
    assert!(err.to_string().contains("\"Bad Name\""), "{err}");
    assert!(!fx.path("n.tar").exists());
    assert_eq!(leftovers(&fx.root), Vec::<String>::new());
}

#[test]
fn local_and_tar_exports_have_the_files() {
    let fx = Fixture::new();
    // A single layer read directly, as Snapshotter::mount gives it: its whiteout is no file.
    let layer = fx.top();
    let dest = fx.path("out");
    export_local(&layer.dir, None, &dest).unwrap();
    assert!(!dest.join("etc/old.conf").exists() && dest.join("etc").is_dir());
    assert_eq!(fs::read_to_string(dest.join("opq/fresh")).unwrap(), "fresh");
    assert_eq!(
        fs::read_link(dest.join("link")).unwrap(),
        Path::new("etc/hostname")
    );
    let (a, b) = (
        fs::metadata(dest.join("hard/a")).unwrap(),
        fs::metadata(dest.join("hard/b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(fs::read_to_string(dest.join(long_name())).unwrap(), "long");
    let mut value = [0u8; 8];
    let n = rustix::fs::lgetxattr(dest.join("x.txt"), "user.x", &mut value).unwrap();
    assert_eq!(&value[..n], b"1");
    // overlayfs' own xattrs stay behind.
    assert!(rustix::fs::lgetxattr(dest.join("opq"), "trusted.overlay.opaque", &mut value).is_err());
    let src_mtime = fs::metadata(layer.dir.join("opq")).unwrap().mtime();
    assert_eq!(fs::metadata(dest.join("opq")).unwrap().mtime(), src_mtime);

    // Into an existing directory the files are merged: others stay, ours are replaced.
    fs::write(dest.join("mine"), "keep").unwrap();
    fs::write(dest.join("x.txt"), "overwritten?").unwrap();
    export_local(&layer.dir, None, &dest).unwrap();
    assert_eq!(fs::read_to_string(dest.join("mine")).unwrap(), "keep");
    assert_eq!(fs::read_to_string(dest.join("x.txt")).unwrap(), "x");

    // A file where the directory should go is an error naming it.
    let err = export_local(&layer.dir, None, &dest.join("mine"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("mine"), "{err}");

    let tarball = fx.path("files.tar");
    export_tar_file(&[("", &layer.dir)], None, &tarball).unwrap();
    let listing = run(Command::new("tar").arg("-tf").arg(&tarball));
    assert!(listing.lines().any(|l| l == "opq/fresh"));
    assert!(!listing.contains(".wh."), "{listing}");
    let mut bytes = Vec::new();
    export_tar(&[("", &layer.dir)], None, &mut bytes).unwrap();
    assert_eq!(bytes, fs::read(&tarball).unwrap());
    assert_eq!(leftovers(&fx.root), Vec::<String>::new());
}

#[test]
fn an_overlay_mount_exports_the_merged_files() {
    let fx = Fixture::new();
    let snapshot = Snapshot {
        layers: vec![fx.base(), fx.top()],
    };
    let mounted = fx.snapshotter.mount(&snapshot, None).unwrap();
    let dest = fx.path("merged");
    export_local(mounted.path(), None, &dest).unwrap();
    check_rootfs(&dest);
}

#[test]
fn output_strings_build_image_specs() {
    let out =
        parse_output("type=oci,dest=o.tar,compression=zstd,compression-level=5,name=a,b").unwrap();
    assert_eq!(out.names, ["a", "b"]);
    let spec = out.image_spec(Snapshot::default(), Vec::new());
    assert_eq!(
        (spec.compression, spec.compression_level),
        (Compression::Zstd, Some(5))
    );
    // An empty scratch image with the default config builds.
    let fx = Fixture::new();
    let image = build_image(&fx.content, &spec).unwrap();
    assert!(image.layers.is_empty());
    let config: Value = serde_json::from_slice(&image.config_bytes).unwrap();
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["rootfs"],
        serde_json::json!({"type": "layers", "diff_ids": []})
    );
}

/// Each entry of a gzip (or plain) layer blob with its modification time.
fn blob_times(fx: &Fixture, digest: &str) -> Vec<(String, u64)> {
    let bytes = fs::read(fx.content.path(digest).unwrap()).unwrap();
    let data: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&bytes[..]))
    } else {
        Box::new(&bytes[..])
    };
    let mut archive = tar::Archive::new(data);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            (path, e.header().mtime().unwrap())
        })
        .collect()
}

#[test]
fn rewrite_timestamp_clamps_the_new_layers_and_keeps_the_base_images() {
    const EPOCH: i64 = 1_700_000_000;
    let fx = Fixture::new();
    let base = fx.base();
    // The base image's layer as a pull leaves it: its blob and diff id recorded.
    let (base_blob, base_diff) = layer_blob(&fx.content, &base, Compression::Gzip).unwrap();
    let top = fx.top();
    let long_ago = rustix::fs::Timespec {
        tv_sec: 1_000,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        top.dir.join("x.txt"),
        &rustix::fs::Timestamps {
            last_access: long_ago,
            last_modification: long_ago,
        },
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    let (plain_top, _) = layer_blob(&fx.content, &top, Compression::Gzip).unwrap();

    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "history": [
            {"created": "2030-01-01T00:00:00Z", "created_by": "base"},
            {"created_by": "RUN top", "comment": "buildkit.dockerfile.v0"}
        ]
    });
    let base_config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [base_diff]},
        "history": [{"created": "2030-01-01T00:00:00Z", "created_by": "base"}]
    });
    let snapshot = Snapshot {
        layers: vec![base.clone(), top.clone()],
    };
    let mut spec = ImageSpec::new(snapshot, serde_json::to_vec(&config).unwrap());
    spec.epoch = Some(EPOCH);
    spec.rewrite_timestamp = true;
    spec.base_config = Some(serde_json::to_vec(&base_config).unwrap());
    let image = build_image(&fx.content, &spec).unwrap();

    // The base image's layer is its own blob; the new one has no time after the epoch, and
    // older times stay.
    assert_eq!(image.layers[0].digest, base_blob.digest);
    assert_ne!(image.layers[1].digest, plain_top.digest);
    let times = blob_times(&fx, &image.layers[1].digest);
    assert!(times.iter().all(|(_, t)| *t <= EPOCH as u64), "{times:?}");
    assert!(times.contains(&("x.txt".to_string(), 1_000)), "{times:?}");
    // The base image's history keeps its time; the build's and the config get the epoch.
    let config: Value = serde_json::from_slice(&image.config_bytes).unwrap();
    assert_eq!(config["history"][0]["created"], "2030-01-01T00:00:00Z");
    assert_eq!(config["history"][1]["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(
        image.descriptor_annotations["org.opencontainers.image.created"],
        "2023-11-14T22:13:20Z"
    );

    // The rewritten blob is remembered beside the layer's own, and used again.
    let meta = top.meta().unwrap();
    assert_eq!(meta.blob.as_ref(), Some(&plain_top));
    let rewritten = meta.rewritten.clone().unwrap();
    assert_eq!(
        (rewritten.epoch, &rewritten.blob.digest),
        (EPOCH, &image.layers[1].digest)
    );
    fs::write(top.dir.join("added"), "added").unwrap();
    let again = build_image(&fx.content, &spec).unwrap();
    assert_eq!(again.manifest, image.manifest);
    assert_eq!(meta.blobs().count(), 2);

    // Without rewrite-timestamp the layer's own blob is exported.
    spec.rewrite_timestamp = false;
    let plain = build_image(&fx.content, &spec).unwrap();
    assert_eq!(plain.layers[1].digest, plain_top.digest);
}

#[test]
fn file_exports_under_an_epoch_give_every_file_its_time() {
    const EPOCH: i64 = 1_700_000_000;
    let fx = Fixture::new();
    let layer = fx.top();
    let mut bytes = Vec::new();
    export_tar(&[("linux_amd64", &layer.dir)], Some(EPOCH), &mut bytes).unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut seen = 0;
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        if e.header().entry_type() != tar::EntryType::XHeader {
            assert_eq!(e.header().mtime().unwrap(), EPOCH as u64);
            seen += 1;
        }
    }
    assert!(seen > 5);

    let dest = fx.path("local");
    export_local(&layer.dir, Some(EPOCH), &dest).unwrap();
    for p in ["", "x.txt", "hard/a", "opq", "link"] {
        let md = fs::symlink_metadata(dest.join(p)).unwrap();
        assert_eq!((md.mtime(), md.atime()), (EPOCH, EPOCH), "{p}");
    }
}
