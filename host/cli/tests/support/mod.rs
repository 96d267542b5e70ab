//! Shared by the end-to-end tests and the benchmarks: a real registry holding a busybox
//! base image, and `buildwit build` runs with their progress parsed.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../../../registry/tests/common/mod.rs"]
pub mod common;

pub mod buckets;

const BUSYBOX: &str = "/bin/busybox";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "touch", "mkdir", "rm", "test", "true", "false", "wc", "id", "env",
    "sleep", "grep", "head", "tail", "stat", "readlink",
];

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A JSON file.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What `skopeo ARGS` prints, as JSON (`inspect --raw`, `inspect --config`).
pub fn skopeo(args: &[&str]) -> serde_json::Value {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn need(bin: &str) {
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: apt-get install -y runc skopeo umoci busybox-static docker-registry"
    );
}

/// A gzip layer of a busybox root filesystem with the `busybox` binary at that path, and
/// its diff id.
fn busybox_layer(busybox: &Path) -> (Vec<u8>, String) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = |path: &str, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        tar.append_data(&mut h, path, &[][..]).unwrap();
    };
    for (d, m) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
    ] {
        dir(d, m);
    }
    let mut file = |path: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        tar.append_data(&mut h, path, data).unwrap();
    };
    file("bin/busybox", 0o755, &std::fs::read(busybox).unwrap());
    file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/tmp:/bin/sh\n",
    );
    file("etc/group", 0o644, b"root:x:0:\napp:x:1000:\n");
    for applet in APPLETS {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_link_name("busybox").unwrap();
        h.set_cksum();
        tar.append_data(&mut h, format!("bin/{applet}"), &[][..])
            .unwrap();
    }
    let raw = tar.into_inner().unwrap();
    let diff_id = common::digest(&raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// Write the base image as an OCI layout and push it with skopeo.
fn push_busybox(host: &str, dir: &Path) -> String {
    let (layer, diff_id) = busybox_layer(Path::new(BUSYBOX));
    let layout = dir.join("busybox-layout");
    let blob = put_blob(&layout, &layer);
    let manifest = image_manifest(
        &layout,
        "amd64",
        (&blob, layer.len(), common::OCI_LAYER_GZIP, &diff_id),
        "busybox-static from Debian",
    );
    push_layout(
        &layout,
        &[manifest],
        &format!("{host}/library/busybox:latest"),
    )
}

/// busybox-static for arm64 from Debian's archive (`apt-get download`; `.ci/run` adds the
/// arm64 architecture to apt), extracted once per target directory.
pub fn arm64_busybox() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox-arm64");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join("lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let binary = dir.join("x/bin/busybox");
    if !binary.exists() {
        let out = Command::new("apt-get")
            .args(["download", "busybox-static:arm64"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "apt-get download busybox-static:arm64 (dpkg --add-architecture arm64 && apt-get update first): {}",
            text(&out.stderr)
        );
        let deb = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().ends_with("_arm64.deb"))
            .expect("the downloaded package")
            .path();
        let out = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("x"))
            .output()
            .unwrap();
        assert!(out.status.success(), "dpkg-deb: {}", text(&out.stderr));
    }
    binary
}

/// Store `data` in the OCI layout `layout`; its digest.
fn put_blob(layout: &Path, data: &[u8]) -> String {
    let d = common::digest(data);
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("blobs/sha256").join(&d[7..]), data).unwrap();
    d
}

/// The manifest of a linux image of one layer (already in `layout`: digest, size, media
/// type, diff id), stored in `layout`; its descriptor for an index.
fn image_manifest(
    layout: &Path,
    architecture: &str,
    (layer_digest, layer_size, media_type, diff_id): (&str, usize, &str, &str),
    created_by: &str,
) -> serde_json::Value {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": architecture, "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": created_by}],
    }))
    .unwrap();
    let config_digest = put_blob(layout, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": common::OCI_MANIFEST,
        "config": {"mediaType": common::OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": media_type, "digest": layer_digest, "size": layer_size}],
    }))
    .unwrap();
    let manifest_digest = put_blob(layout, &manifest);
    serde_json::json!({
        "mediaType": common::OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len(),
        "platform": {"architecture": architecture, "os": "linux"},
    })
}

/// Push the manifests of `layout` to `image` with skopeo: one as it is, several as an index.
fn push_layout(layout: &Path, manifests: &[serde_json::Value], image: &str) -> String {
    need("/usr/bin/skopeo");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let top = match manifests {
        [one] => one.clone(),
        several => {
            let index = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": several,
            }))
            .unwrap();
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": put_blob(layout, &index), "size": index.len(),
            })
        }
    };
    let mut top = top;
    top["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "latest"});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [top]})).unwrap(),
    )
    .unwrap();
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", text(&out.stderr));
    image.to_string()
}

/// A Debian bookworm minbase root filesystem as a tar, made with mmdebstrap from the
/// machine's apt mirror once per target directory (about a minute; 170 MB).
pub fn debian_rootfs() -> PathBuf {
    need("/usr/bin/mmdebstrap");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let tar = dir.join("debian-bookworm-minbase.tar");
    // One maker at a time across test processes; the others wait and reuse it.
    let lock = std::fs::File::create(dir.join("debian-bookworm-minbase.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    if !tar.exists() {
        let partial = dir.join("debian-bookworm-minbase.partial.tar");
        let out = Command::new("mmdebstrap")
            .args(["--variant=minbase", "--quiet"])
            // The mirror may serve a snapshot whose Release files are past their date.
            .arg("--aptopt=Acquire::Check-Valid-Until \"false\"")
            .arg("bookworm")
            .arg(&partial)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "mmdebstrap: {}", text(&out.stderr));
        std::fs::rename(&partial, &tar).unwrap();
    }
    tar
}

/// A registry with the base image, a config trusting it over HTTP, a state root.
pub struct Setup {
    registry: Option<common::RegistryProcess>,
    pub dir: tempfile::TempDir,
    pub image: String,
    pub config: PathBuf,
    pub root: PathBuf,
}

pub fn setup() -> Setup {
    need("/usr/sbin/runc");
    let registry = common::start_registry(None);
    let dir = tempfile::tempdir().unwrap();
    let image = push_busybox(&registry.host(), dir.path());
    let config = dir.path().join("buildkitd.toml");
    std::fs::write(
        &config,
        format!("[registry.\"{}\"]\nhttp = true\n", registry.host()),
    )
    .unwrap();
    let root = dir.path().join("root");
    Setup {
        registry: Some(registry),
        dir,
        image,
        config,
        root,
    }
}

impl Setup {
    /// Push [`debian_rootfs`] as the one-layer image `library/debian:bookworm` (an
    /// uncompressed layer); its reference.
    pub fn push_debian(&self) -> String {
        let rootfs = debian_rootfs();
        let layout = self.dir.path().join("debian-layout");
        let data = std::fs::read(&rootfs).unwrap();
        let diff_id = put_blob(&layout, &data);
        let host = self.registry.as_ref().expect("the registry runs").host();
        let manifest = image_manifest(
            &layout,
            "amd64",
            (&diff_id, data.len(), OCI_LAYER_TAR, &diff_id),
            "mmdebstrap --variant=minbase bookworm",
        );
        push_layout(
            &layout,
            &[manifest],
            &format!("{host}/library/debian:bookworm"),
        )
    }

    /// busybox for linux/amd64 and linux/arm64 as one index, `library/busybox:multi`; its
    /// reference.
    pub fn push_multiarch_busybox(&self) -> String {
        let layout = self.dir.path().join("multi-layout");
        let mut manifests = Vec::new();
        for (arch, binary) in [
            ("amd64", PathBuf::from(BUSYBOX)),
            ("arm64", arm64_busybox()),
        ] {
            let (layer, diff_id) = busybox_layer(&binary);
            let blob = put_blob(&layout, &layer);
            manifests.push(image_manifest(
                &layout,
                arch,
                (&blob, layer.len(), common::OCI_LAYER_GZIP, &diff_id),
                "busybox-static from Debian",
            ));
        }
        let host = self.registry.as_ref().expect("the registry runs").host();
        push_layout(
            &layout,
            &manifests,
            &format!("{host}/library/busybox:multi"),
        )
    }

    /// Stop the registry: what follows runs offline.
    pub fn stop_registry(&mut self) {
        self.registry = None;
    }

    /// Run `buildwit` with this setup's config and root.
    pub fn buildwit(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_buildwit"))
            .arg("--config")
            .arg(&self.config)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let ctx = self.dir.path().join(name);
        for (path, content) in files {
            let p = ctx.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content.replace("BASE", &self.image)).unwrap();
        }
        ctx
    }

    pub fn build(&self, ctx: &Path, extra: &[&str]) -> Build {
        self.build_with(&self.config, ctx, extra)
    }

    /// [`Setup::build`] with another config.
    pub fn build_with(&self, config: &Path, ctx: &Path, extra: &[&str]) -> Build {
        let out = Command::new(env!("CARGO_BIN_EXE_buildwit"))
            .arg("--config")
            .arg(config)
            .arg("--root")
            .arg(&self.root)
            .arg("build")
            .arg(ctx)
            .arg("--progress=rawjson")
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Build::new(out)
    }
}

/// A finished build and what its progress said.
pub struct Build {
    pub out: Output,
    /// Names of the steps that ran (not cached).
    pub ran: Vec<String>,
    /// Names of the steps answered from the cache.
    pub cached: Vec<String>,
    /// Output lines of steps.
    pub logs: Vec<String>,
}

impl Build {
    pub fn new(out: Output) -> Self {
        let mut b = Build {
            out,
            ran: Vec::new(),
            cached: Vec::new(),
            logs: Vec::new(),
        };
        for line in text(&b.out.stderr).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            for vx in v["vertexes"].as_array().into_iter().flatten() {
                let name = vx["name"].as_str().unwrap_or_default().to_string();
                if vx["cached"] == true {
                    b.cached.push(name);
                } else if vx.get("started").is_some() {
                    b.ran.push(name);
                }
            }
            for log in v["logs"].as_array().into_iter().flatten() {
                b.logs.push(
                    log["data"]
                        .as_str()
                        .unwrap_or_default()
                        .trim_end()
                        .to_string(),
                );
            }
        }
        b
    }

    pub fn ok(self) -> Self {
        assert!(
            self.out.status.success(),
            "build failed:\n{}",
            text(&self.out.stderr)
        );
        self
    }

    pub fn ran_any(&self, needle: &str) -> bool {
        self.ran.iter().any(|n| n.contains(needle))
    }
}

/// A buildwitd started by a test, stopped (SIGTERM) when dropped.
pub struct Daemon {
    child: Option<std::process::Child>,
    /// Its address, for `--addr`.
    pub addr: String,
    log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, root: &Path, addr: &str, log: PathBuf) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_buildwitd"))
            .arg("--config")
            .arg(config)
            .arg("--root")
            .arg(root)
            .args(["--addr", addr, "--debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon {
            child: Some(child),
            addr: addr.to_string(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !d.log().contains("listening on") {
            assert!(
                Instant::now() < deadline,
                "buildwitd did not start:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn unix(s: &Setup, name: &str) -> Daemon {
        let sock = s.dir.path().join(format!("{name}.sock"));
        Daemon::start(
            &s.config,
            &s.root,
            &format!("unix://{}", sock.display()),
            s.dir.path().join(format!("{name}.log")),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `buildwit --addr … ARGS`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_buildwit"))
            .args(["--addr", &self.addr])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn build(&self, ctx: &Path, extra: &[&str]) -> Build {
        let mut args = vec!["build", ctx.to_str().unwrap(), "--progress=rawjson"];
        args.extend_from_slice(extra);
        Build::new(self.cli(&args))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon runs").id()
    }

    /// SIGKILL, as a crash would end it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "buildwitd did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Files left in a root's scratch directories, which only a running build uses.
pub fn scratch_leftovers(root: &Path) -> Vec<PathBuf> {
    ["tmp", "bundles", "snapshots/tmp", "content/ingest"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).into_iter().flatten())
        .map(|e| e.unwrap().path())
        .collect()
}

/// The median of some timings (benchmarks).
pub fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

/// Remove everything builds cached under `root`, keeping the compiled frontends
/// (benchmarks: a cold build that does not measure compiling the frontend).
pub fn wipe_cache(root: &Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if entry.file_name() != "frontends" {
            let p = entry.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
}

/// A real `ssh-agent` holding a new key, and the key's public line.
pub struct Agent {
    child: std::process::Child,
    pub socket: PathBuf,
    pub public: String,
}

impl Agent {
    pub fn start(dir: &Path, name: &str) -> Agent {
        need("/usr/bin/ssh-agent");
        let socket = dir.join(format!("{name}.agent"));
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let key = dir.join(name);
        let keygen = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(keygen.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let add = Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap();
        assert!(add.status.success(), "{}", text(&add.stderr));
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        Agent {
            child,
            socket,
            public: public.trim().to_string(),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copy a dynamically linked program and the libraries it loads into `root`, at the
/// same paths, so a busybox image can run it.
pub fn copy_program(program: &str, root: &Path) {
    let ldd = Command::new("ldd").arg(program).output().unwrap();
    let mut files = vec![program.to_string()];
    for line in text(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(str::to_string);
        files.extend(path);
    }
    for f in files {
        let dest = root.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
}

/// Unpack an OCI archive with umoci (after skopeo has read it) and return the rootfs.
pub fn unpack_oci(archive: &Path, dir: &Path) -> PathBuf {
    need("/usr/bin/umoci");
    let inspect = Command::new("skopeo")
        .args(["inspect", &format!("oci-archive:{}", archive.display())])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "skopeo inspect: {}",
        text(&inspect.stderr)
    );
    let layout = dir.join("unpacked-layout");
    std::fs::create_dir_all(&layout).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(st.success());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or("latest")
        .to_string();
    let bundle = dir.join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci unpack: {}", text(&out.stderr));
    bundle.join("rootfs")
}

/// Run cargo with `args` in a crate of its own (a frontend author's), without the outer
/// build's settings; what it printed.
pub fn cargo(krate: &Path, target_dir: &Path, args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(krate)
        .args(args)
        .arg("--target-dir")
        .arg(target_dir);
    // The outer build's settings are for the host, not for this crate.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
    ] {
        c.env_remove(var);
    }
    let out = c.output().unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "cargo {args:?}: {said}");
    said
}

/// `program`, found on PATH, or a failure that says how to install it.
pub fn program(name: &str, install: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} is missing: {install} (as .ci/run does)"))
}

/// Run `command` to its end, failing the test if it takes longer than `limit` (a hang, not
/// a slow run: the limit is generous).
pub fn output_within(mut command: Command, limit: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{command:?} still ran after {limit:?}");
        }
    }
}
