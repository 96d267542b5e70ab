//! The files a build produces are BuildKit's: a corpus of Dockerfiles (every kind of COPY
//! and ADD, modes, owners, setuid bits, hard links, archives, RUN layers, busybox and
//! Debian bases) is built by buildwit and by the real BuildKit (`buildkitd` from
//! `../shared/peers`, through `buildctl`), and their results are compared: the final
//! filesystem path by path (type, mode with setuid/setgid, owner, size, content, link
//! target, hard-link groups), each layer's entries (what a step changed, no more), and the
//! image config but for its timestamps. A difference fails the test unless [`ALLOWED`]
//! lists it with its reason.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::{Setup, text};

/// Differences allowed, each with its reason: (case, path, reason).
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "hardlinks",
        "ctx/one",
        "`RUN ln /ctx/one /ctx/again` on a file of a lower layer: BuildKit's differ leaves the \
         unchanged `one` out of the step's layer, so the image holds `again` as a copy, not a \
         link; buildwit keeps `one` in the layer as the link's target, so the image holds \
         the hard link the step made (the final filesystems are the same)",
    ),
    (
        "hardlinks",
        "(hard links)",
        "the same: in that layer, buildwit's `again` is a hard link of `one`",
    ),
];

/// One file of a tree: what is compared.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    content: String,
    link: String,
}

/// A tar's entries by path, and its groups of hard-linked paths.
struct Tree {
    nodes: BTreeMap<String, Node>,
    links: BTreeSet<BTreeSet<String>>,
}

fn clean(path: &[u8]) -> String {
    let p = String::from_utf8_lossy(path);
    p.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

fn read_tar(data: impl Read) -> Tree {
    let mut nodes = BTreeMap::new();
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = clean(&entry.path_bytes());
        if path.is_empty() {
            continue;
        }
        let h = entry.header();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            _ => 'f',
        };
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        if kind == 'h' {
            let target = clean(link.as_bytes());
            let node = nodes.get(&target).cloned();
            groups
                .entry(target.clone())
                .or_insert_with(|| BTreeSet::from([target]))
                .insert(path.clone());
            if let Some(node) = node {
                nodes.insert(path, node);
            }
            continue;
        }
        let node = Node {
            kind,
            mode: h.mode().unwrap() & 0o7777,
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            size: if kind == 'f' { entry.size() } else { 0 },
            content: if kind == 'f' {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                hex::encode(Sha256::digest(&data))
            } else {
                String::new()
            },
            link: if kind == 'l' { link } else { String::new() },
        };
        nodes.insert(path, node);
    }
    Tree {
        nodes,
        links: groups.into_values().collect(),
    }
}

/// An OCI image archive: its config, and each layer's tree.
fn read_oci(path: &Path) -> (serde_json::Value, Vec<Tree>) {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = clean(&entry.path_bytes());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(name, data);
    }
    let blob = |digest: &str| -> &Vec<u8> {
        let key = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        files.get(&key).unwrap_or_else(|| panic!("{key} missing"))
    };
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
    let index = json(&files["index.json"]);
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let config = json(blob(manifest["config"]["digest"].as_str().unwrap()));
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let data = blob(l["digest"].as_str().unwrap());
            read_tar(flate2::read::GzDecoder::new(&data[..]))
        })
        .collect();
    (config, layers)
}

/// The image config with what differs from build to build left out.
fn comparable_config(mut config: serde_json::Value) -> serde_json::Value {
    let obj = config.as_object_mut().unwrap();
    obj.remove("created");
    let layers = obj["rootfs"]["diff_ids"].as_array().map_or(0, Vec::len);
    obj.insert("rootfs".into(), serde_json::json!({"layers": layers}));
    if let Some(history) = obj.get_mut("history").and_then(|h| h.as_array_mut()) {
        for h in history {
            h.as_object_mut().unwrap().remove("created");
        }
    }
    // BuildKit records the frontend's inputs for cache import: not the image's content.
    obj.remove("moby.buildkit.cache.v0");
    config
}

/// Every difference between two trees, as `path: what`.
fn compare(what: &str, ours: &Tree, theirs: &Tree) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, t) in &theirs.nodes {
        match ours.nodes.get(path) {
            None => out.push((path.clone(), format!("{what}: missing (BuildKit: {t:?})"))),
            Some(o) if o != t => out.push((
                path.clone(),
                format!("{what}: buildwit {o:?}, BuildKit {t:?}"),
            )),
            _ => {}
        }
    }
    for (path, o) in &ours.nodes {
        if !theirs.nodes.contains_key(path) {
            out.push((path.clone(), format!("{what}: extra (buildwit {o:?})")));
        }
    }
    if ours.links != theirs.links {
        out.push((
            "(hard links)".into(),
            format!(
                "{what}: buildwit {:?}, BuildKit {:?}",
                ours.links, theirs.links
            ),
        ));
    }
    out
}

/// buildkitd from ../shared/peers, with buildctl beside it.
struct BuildKit {
    child: Child,
    buildctl: PathBuf,
    addr: String,
}

impl Drop for BuildKit {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn peers() -> PathBuf {
    let script = Path::new(env!("BUILDWIT_SHARED_DIR")).join("peers/install.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        text(&out.stderr)
    );
    PathBuf::from(text(&out.stdout).trim())
}

impl BuildKit {
    fn start(s: &Setup) -> BuildKit {
        let bin = peers();
        let registry = s.image.split('/').next().unwrap();
        let sock = s.dir.path().join("bk.sock");
        let config = s.dir.path().join("bk.toml");
        std::fs::write(
            &config,
            format!(
                "root = \"{}\"\n[grpc]\naddress = [\"unix://{}\"]\n[worker.oci]\nenabled = true\n[worker.containerd]\nenabled = false\n[registry.\"{registry}\"]\nhttp = true\n",
                s.dir.path().join("bk-root").display(),
                sock.display()
            ),
        )
        .unwrap();
        let log = s.dir.path().join("bk.log");
        let child = Command::new(bin.join("buildkitd"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "buildkitd did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        BuildKit {
            child,
            buildctl: bin.join("buildctl"),
            addr: format!("unix://{}", sock.display()),
        }
    }

    fn build(&self, ctx: &Path, args: &[(&str, &str)], fs: &Path, image: &Path) {
        let mut cmd = Command::new(&self.buildctl);
        cmd.args(["--addr", &self.addr, "build", "--frontend", "dockerfile.v0"])
            .arg(format!("--local=context={}", ctx.display()))
            .arg(format!("--local=dockerfile={}", ctx.display()))
            .arg(format!("--output=type=tar,dest={}", fs.display()))
            .arg(format!("--output=type=oci,dest={}", image.display()))
            .arg("--progress=plain");
        for (k, v) in args {
            cmd.arg(format!("--opt=build-arg:{k}={v}"));
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "BuildKit failed on {}:\n{}",
            ctx.display(),
            text(&out.stderr)
        );
    }
}

fn buildwit(s: &Setup, ctx: &Path, args: &[(&str, &str)], fs: &Path, image: &Path) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_buildwit"));
    cmd.arg("--config")
        .arg(&s.config)
        .arg("--root")
        .arg(&s.root)
        .arg("build")
        .arg(ctx)
        .arg("--progress=plain")
        .arg("-o")
        .arg(format!("type=tar,dest={}", fs.display()))
        .arg("-o")
        .arg(format!("type=oci,dest={}", image.display()));
    for (k, v) in args {
        cmd.args(["--build-arg", &format!("{k}={v}")]);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "buildwit failed on {} (BuildKit built it):\n{}",
        ctx.display(),
        text(&out.stderr)
    );
}

/// A context's files: path, content, mode.
type Files = Vec<(&'static str, Vec<u8>, u32)>;

fn write_context(dir: &Path, files: &Files) {
    for (path, content, mode) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
}

/// An entry of a tar made here: path, kind, mode, uid, gid, data or link target.
type TarEntry<'a> = (&'a str, tar::EntryType, u32, u64, u64, &'a [u8]);

/// A tar made here.
fn tar_of(entries: &[TarEntry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, mode, uid, gid, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(*mode);
        h.set_uid(*uid);
        h.set_gid(*gid);
        h.set_mtime(1_700_000_000);
        if matches!(kind, tar::EntryType::Link | tar::EntryType::Symlink) {
            h.set_size(0);
            b.append_link(&mut h, path, std::str::from_utf8(data).unwrap())
                .unwrap();
        } else {
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, *data).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn compress(tool: &str, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool)
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A case: name, Dockerfile, context files, build args.
type Case = (
    &'static str,
    String,
    Files,
    Vec<(&'static str, &'static str)>,
);

/// The corpus: name, Dockerfile (`BASE` is the busybox image, `DEBIAN` the Debian one),
/// files of the context, build args.
fn corpus() -> Vec<Case> {
    let f = |p: &'static str, c: &str, m: u32| (p, c.as_bytes().to_vec(), m);
    let file = tar::EntryType::Regular;
    let dir = tar::EntryType::Directory;
    let archive = tar_of(&[
        ("top/", dir, 0o750, 0, 0, b""),
        ("top/tool", file, 0o4755, 0, 0, b"setuid tool\n"),
        ("top/shared", file, 0o2755, 1000, 1000, b"setgid\n"),
        ("top/link", tar::EntryType::Link, 0o600, 0, 0, b"top/tool"),
        ("top/.wh.kept", file, 0o644, 0, 0, b"not a whiteout here\n"),
        (
            "implied/deep/file.txt",
            file,
            0o644,
            0,
            0,
            b"implied parents\n",
        ),
        ("top/sym", tar::EntryType::Symlink, 0o777, 0, 0, b"tool"),
    ]);
    vec![
        (
            "wildcards",
            "FROM BASE\nARG SRC=conf\nCOPY package*.json ./app/\nCOPY conf/*.txt /g/\nCOPY *.md /r/\n\
             COPY con?/ /q/\nCOPY ${SRC}/*.txt /s/\nCOPY --parents a/**/x.txt /p/\nCOPY [\"conf/b.*\", \"/bracket/\"]\n"
                .into(),
            vec![
                f("package.json", "{}\n", 0o644),
                f("package-lock.json", "{\"lock\":1}\n", 0o644),
                f("conf/a.txt", "a\n", 0o644),
                f("conf/b.txt", "b\n", 0o600),
                f("conf/c.cfg", "c\n", 0o644),
                f("README.md", "# r\n", 0o644),
                f("NOTES.md", "n\n", 0o644),
                f("a/x.txt", "ax\n", 0o644),
                f("a/b/x.txt", "abx\n", 0o644),
                f("a/b/y.txt", "aby\n", 0o644),
            ],
            vec![],
        ),
        (
            "modes",
            "FROM BASE AS src\nRUN mkdir -p /opt/d && echo s > /opt/d/s && chmod 4755 /opt/d/s && chmod 0700 /opt/d \
             && echo g > /opt/g && chmod 2711 /opt/g\n\
             FROM BASE\nCOPY suid /ctx/suid\nCOPY --from=src /opt/d /fromstage/\nCOPY --from=src /opt/g /g\n\
             COPY --from=src /opt/d /newdest\nCOPY --chmod=0700 plain.txt /made/by/copy/\n\
             COPY --chmod=u+rwx,go-rwx plain.txt /sym/parent/\nCOPY --chown=1000:1000 plain.txt /owned/deeper/\n\
             COPY --parents src/./pkg1/lib.c /dst/\n"
                .into(),
            vec![
                f("suid", "#!/bin/sh\n", 0o4755),
                f("plain.txt", "plain\n", 0o640),
                f("src/pkg1/lib.c", "int x;\n", 0o644),
                f("src/pkg2/lib.c", "int y;\n", 0o644),
            ],
            vec![],
        ),
        (
            "hardlinks",
            "FROM BASE\nCOPY . /ctx/\nRUN ln /ctx/one /ctx/again\n".into(),
            vec![
                f("one", "linked\n", 0o644),
                f("three", "linked too\n", 0o600),
                f("sub/other", "x\n", 0o755),
            ],
            vec![],
        ),
        (
            "archives",
            "FROM BASE\nADD plain.txt.gz /gz/\nADD a.tar /t/\nADD a.tar.gz /tgz/\nADD a.tar.xz /txz/\n\
             ADD a.tar.bz2 /tbz/\nADD --chown=1000:1000 a.tar /chowned/\nADD not-a-tar.bin /bin-file\n"
                .into(),
            vec![
                ("plain.txt.gz", compress("gzip", b"just text\n"), 0o644),
                ("a.tar", archive.clone(), 0o644),
                ("a.tar.gz", compress("gzip", &archive), 0o644),
                ("a.tar.xz", compress("xz", &archive), 0o644),
                ("a.tar.bz2", compress("bzip2", &archive), 0o644),
                ("not-a-tar.bin", b"\x00\x01\x02 binary".to_vec(), 0o644),
            ],
            vec![],
        ),
        (
            "run-layers",
            "FROM BASE\nRUN id -G > /groups && id > /id\nUSER 1000:1000\nRUN id -G > /tmp/groups-user\nUSER root\n\
             RUN --mount=type=cache,target=/var/cache/apt --mount=type=tmpfs,target=/mnt/scratch echo cached\n\
             RUN : >> /etc/group\nRUN true\nRUN mkdir -p /newdir && echo x > /newdir/x\n"
                .into(),
            vec![],
            vec![],
        ),
        (
            "node-app",
            "FROM BASE\nWORKDIR /app\nCOPY package*.json ./\nRUN mkdir node_modules && cat package.json > node_modules/installed\n\
             COPY . .\nRUN chown -R 1000:1000 /app/src\nUSER app\nEXPOSE 3000\nCMD [\"sh\", \"-c\", \"cat src/index.js\"]\n"
                .into(),
            vec![
                f("package.json", "{\"name\":\"app\"}\n", 0o644),
                f("package-lock.json", "{}\n", 0o644),
                f("src/index.js", "console.log(1)\n", 0o644),
                f("src/lib/util.js", "module.exports = 1\n", 0o644),
                f("node_modules/stale/x.js", "ignored\n", 0o644),
                f(".dockerignore", "node_modules\n*.log\n", 0o644),
                f("debug.log", "ignored\n", 0o644),
                f("bin/start", "#!/bin/sh\n", 0o755),
            ],
            vec![],
        ),
        (
            "instructions",
            "FROM BASE AS base\nARG VERSION=1.0\nENV APP_VERSION=$VERSION PATH=/opt/bin:$PATH\nLABEL org.example.v=$VERSION\n\
             SHELL [\"/bin/sh\", \"-ec\"]\nWORKDIR /srv/data\nRUN echo $APP_VERSION > version && mkdir -p /opt/bin\n\
             VOLUME /srv/data\nSTOPSIGNAL SIGTERM\nHEALTHCHECK --interval=30s CMD true\nONBUILD RUN true\n\
             ENTRYPOINT [\"/bin/sh\"]\nUSER 1000\nRUN echo user > /tmp/user.txt\n"
                .into(),
            vec![],
            vec![("VERSION", "2.5")],
        ),
        (
            "stages",
            "FROM BASE AS build\nRUN mkdir -p /out/bin /out/share && echo tool > /out/bin/tool && chmod 755 /out/bin/tool \
             && ln -s ../bin/tool /out/share/link && mkdir /out/empty\n\
             FROM BASE AS other\nRUN echo other > /o.txt\n\
             FROM BASE\nCOPY --from=build /out/ /usr/local/\nCOPY --from=build --chown=1000:1000 /out/bin /home/app/bin\n\
             COPY --from=other /o.txt /o.txt\nCOPY --link --from=build /out/share /linked/\n\
             RUN --mount=type=bind,from=build,source=/out,target=/mnt/out cp /mnt/out/bin/tool /copied-tool\n\
             RUN rm -rf /tmp && mkdir -m 1777 /tmp\n"
                .into(),
            vec![],
            vec![],
        ),
        (
            "debian",
            "FROM DEBIAN\nRUN useradd -m -u 1234 app && echo hi > /home/app/x && chown app:app /home/app/x\n\
             COPY --from=DEBIAN /usr/bin/passwd /copied/passwd\nRUN chmod u+s /copied/passwd && ls -l /usr/bin/passwd > /ls.txt\n"
                .into(),
            vec![],
            vec![],
        ),
    ]
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn builds_produce_the_files_buildkit_produces() {
    let s = support::setup();
    let debian = s.push_debian();
    let bk = BuildKit::start(&s);
    let only = std::env::var("DIFFERENTIAL_CASE").ok();
    let mut failures = Vec::new();
    let mut compared = 0;
    for (name, dockerfile, files, args) in corpus() {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let ctx = s.dir.path().join(format!("case-{name}"));
        std::fs::create_dir_all(&ctx).unwrap();
        write_context(&ctx, &files);
        std::fs::write(
            ctx.join("Dockerfile"),
            dockerfile
                .replace("BASE", &s.image)
                .replace("DEBIAN", &debian),
        )
        .unwrap();
        if name == "hardlinks" {
            std::fs::hard_link(ctx.join("one"), ctx.join("sub/two")).unwrap();
            std::fs::hard_link(ctx.join("three"), ctx.join("sub/four")).unwrap();
        }
        let out = |who: &str, what: &str| s.dir.path().join(format!("{name}-{who}.{what}.tar"));
        bk.build(&ctx, &args, &out("bk", "fs"), &out("bk", "oci"));
        buildwit(&s, &ctx, &args, &out("bw", "fs"), &out("bw", "oci"));
        let open = |p: PathBuf| read_tar(std::fs::File::open(p).unwrap());
        let mut diffs = compare("filesystem", &open(out("bw", "fs")), &open(out("bk", "fs")));
        let (our_config, our_layers) = read_oci(&out("bw", "oci"));
        let (their_config, their_layers) = read_oci(&out("bk", "oci"));
        if our_layers.len() != their_layers.len() {
            diffs.push((
                "(layers)".into(),
                format!(
                    "{} layers, BuildKit {}",
                    our_layers.len(),
                    their_layers.len()
                ),
            ));
        } else {
            for (i, (o, t)) in our_layers.iter().zip(&their_layers).enumerate() {
                diffs.extend(compare(&format!("layer {i}"), o, t));
            }
        }
        let (ours, theirs) = (
            comparable_config(our_config),
            comparable_config(their_config),
        );
        if ours != theirs {
            diffs.push((
                "(config)".into(),
                format!("buildwit {ours}\nBuildKit {theirs}"),
            ));
        }
        compared += 1;
        for (path, what) in diffs {
            let allowed = ALLOWED.iter().any(|(c, p, _)| *c == name && *p == path);
            if !allowed {
                failures.push(format!("{name}: {path}: {what}"));
            }
        }
    }
    assert!(compared > 0, "no case ran");
    assert!(
        failures.is_empty(),
        "{} differences from BuildKit:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Provenance fields BuildKit writes and buildwit does not, each with its reason (a path
/// names the field and everything below it).
const PROVENANCE_NOT_WRITTEN: &[(&str, &str)] = &[
    (
        "statement.predicate.buildDefinition.externalParameters.request.root",
        "BuildKit records the request its Dockerfile frontend forwards to itself; buildwit \
         runs the frontend once, directly",
    ),
    (
        "statement.predicate.buildDefinition.externalParameters.request.compatibilityVersion",
        "a version number of BuildKit's own",
    ),
    (
        "statement.predicate.runDetails.metadata.buildkit_metadata.source",
        "buildwit's Dockerfile frontend attaches no source map to its LLB yet (provenance \
         writes one for frontends that do)",
    ),
    (
        "statement.predicate.runDetails.metadata.buildkit_metadata.layers",
        "the layers each step made are not recorded yet",
    ),
];

/// The paths of the fields of `v` (array elements as `[]`), not looking inside maps whose
/// keys are data (digests, build arguments, ops).
fn shape(v: &serde_json::Value, path: &str, out: &mut BTreeSet<String>) {
    const DATA: &[&str] = &["digest", "args", "digestMapping", "op", "annotations"];
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{path}.{k}");
                out.insert(p.clone());
                if !DATA.contains(&k.as_str()) {
                    shape(v, &p, out);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                shape(item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// The shapes of an OCI layout's index, attestation manifest and provenance statement.
fn provenance_shape(layout: &Path) -> BTreeSet<String> {
    let read = |digest: &serde_json::Value| -> serde_json::Value {
        let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let index = read(&top["manifests"][0]["digest"]);
    let attestation = read(&index["manifests"][1]["digest"]);
    let statement = read(&attestation["layers"][0]["digest"]);
    let mut out = BTreeSet::new();
    shape(&index, "index", &mut out);
    shape(&attestation, "attestation", &mut out);
    shape(&statement, "statement", &mut out);
    out
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn provenance_has_the_fields_buildkit_writes() {
    let s = support::setup();
    let bk = BuildKit::start(&s);
    let ctx = s.dir.path().join("provenance");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {} AS base\nARG GREETING=hi\nCOPY a.txt /a.txt\nRUN echo $GREETING > /g\n\
             FROM scratch\nCOPY --from=base /g /g\n",
            s.image
        ),
    )
    .unwrap();
    std::fs::write(ctx.join("a.txt"), "a\n").unwrap();
    let mut failures = Vec::new();
    for mode in ["min", "max"] {
        let theirs = s.dir.path().join(format!("bk-provenance-{mode}"));
        let out = Command::new(&bk.buildctl)
            .args(["--addr", &bk.addr, "build", "--frontend", "dockerfile.v0"])
            .arg(format!("--local=context={}", ctx.display()))
            .arg(format!("--local=dockerfile={}", ctx.display()))
            .arg(format!("--opt=attest:provenance=mode={mode}"))
            .arg("--opt=build-arg:GREETING=hello")
            // `buildwit build` names the Dockerfile as buildx does.
            .arg("--opt=filename=Dockerfile")
            .arg(format!(
                "--output=type=oci,dest={},tar=false,name=example.com/app:1",
                theirs.display()
            ))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "BuildKit: {}", text(&out.stderr));
        let ours = s.dir.path().join(format!("bw-provenance-{mode}"));
        let out = s.buildwit(&[
            "build",
            ctx.to_str().unwrap(),
            "--provenance",
            &format!("mode={mode}"),
            "--build-arg",
            "GREETING=hello",
            "-t",
            "example.com/app:1",
            "-o",
            &format!("type=oci,dest={},tar=false", ours.display()),
        ]);
        assert!(out.status.success(), "buildwit: {}", text(&out.stderr));
        let not_written = |p: &String| PROVENANCE_NOT_WRITTEN.iter().any(|(n, _)| p.starts_with(n));
        let theirs: BTreeSet<String> = provenance_shape(&theirs)
            .into_iter()
            .filter(|p| !not_written(p))
            .collect();
        let ours = provenance_shape(&ours);
        for missing in theirs.difference(&ours) {
            failures.push(format!(
                "mode={mode}: BuildKit writes {missing}, buildwit does not"
            ));
        }
        for extra in ours.difference(&theirs) {
            failures.push(format!(
                "mode={mode}: buildwit writes {extra}, BuildKit does not"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An OCI layout's times: the manifest descriptor's `created` annotation, the config's
/// `created` and its history's, and each layer's entries with their modification times.
struct Times {
    annotation: serde_json::Value,
    config: serde_json::Value,
    history: Vec<serde_json::Value>,
    layers: Vec<BTreeMap<String, u64>>,
}

fn layout_times(layout: &Path) -> Times {
    let blob = |digest: &serde_json::Value| -> Vec<u8> {
        let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
        std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
    };
    let json = |b: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
    let index = json(std::fs::read(layout.join("index.json")).unwrap());
    let descriptor = &index["manifests"][0];
    let manifest = json(blob(&descriptor["digest"]));
    let config = json(blob(&manifest["config"]["digest"]));
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| tar_times(flate2::read::GzDecoder::new(&blob(&l["digest"])[..])))
        .collect();
    Times {
        annotation: descriptor["annotations"]["org.opencontainers.image.created"].clone(),
        config: config["created"].clone(),
        history: config["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["created"].clone())
            .collect(),
        layers,
    }
}

fn tar_times(data: impl Read) -> BTreeMap<String, u64> {
    let mut archive = tar::Archive::new(data);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (clean(&e.path_bytes()), e.header().mtime().unwrap())
        })
        .filter(|(p, _)| !p.is_empty())
        .collect()
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn source_date_epoch_gives_the_times_buildkit_gives() {
    const EPOCH: &str = "1700000000";
    let s = support::setup();
    let bk = BuildKit::start(&s);
    let ctx = s.dir.path().join("epoch");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}\nWORKDIR /app\nCOPY a.txt .\nRUN echo ran > /app/run.txt && mkdir -p /app/d/e\nENV X=1\n",
            s.image
        ),
    )
    .unwrap();
    std::fs::write(ctx.join("a.txt"), "a\n").unwrap();
    let out = |who: &str, what: &str| s.dir.path().join(format!("epoch-{who}-{what}"));
    let image = |who| {
        format!(
            "type=oci,tar=false,rewrite-timestamp=true,dest={}",
            out(who, "oci").display()
        )
    };
    let files = |who| format!("type=tar,dest={}", out(who, "fs.tar").display());
    let built = Command::new(&bk.buildctl)
        .args(["--addr", &bk.addr, "build", "--frontend", "dockerfile.v0"])
        .arg(format!("--local=context={}", ctx.display()))
        .arg(format!("--local=dockerfile={}", ctx.display()))
        .arg(format!("--opt=build-arg:SOURCE_DATE_EPOCH={EPOCH}"))
        .arg(format!("--output={}", image("bk")))
        .arg(format!("--output={}", files("bk")))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(built.status.success(), "BuildKit: {}", text(&built.stderr));
    let ctx_arg = ctx.to_str().unwrap();
    let arg = format!("SOURCE_DATE_EPOCH={EPOCH}");
    let built = s.buildwit(&[
        "build",
        ctx_arg,
        "--build-arg",
        &arg,
        "-o",
        &image("bw"),
        "-o",
        &files("bw"),
    ]);
    assert!(built.status.success(), "buildwit: {}", text(&built.stderr));

    let (ours, theirs) = (
        layout_times(&out("bw", "oci")),
        layout_times(&out("bk", "oci")),
    );
    assert_eq!(ours.annotation, serde_json::json!("2023-11-14T22:13:20Z"));
    assert_eq!(ours.annotation, theirs.annotation, "the created annotation");
    assert_eq!(ours.config, theirs.config, "the config's created");
    assert_eq!(ours.history, theirs.history, "the history's times");
    assert_eq!(ours.layers.len(), theirs.layers.len());
    for (i, (o, t)) in ours.layers.iter().zip(&theirs.layers).enumerate() {
        assert_eq!(o, t, "the times in layer {i}");
    }
    let epoch: u64 = EPOCH.parse().unwrap();
    assert!(
        ours.layers[1..]
            .iter()
            .flat_map(|l| l.values())
            .all(|&t| t <= epoch)
    );
    let open = |p: PathBuf| tar_times(std::fs::File::open(p).unwrap());
    let (ours, theirs) = (open(out("bw", "fs.tar")), open(out("bk", "fs.tar")));
    assert_eq!(ours, theirs, "the times of the exported files");
    assert!(ours.values().all(|&t| t == epoch));

    // Built again from nothing, the image is the same, byte for byte.
    let first = std::fs::read(out("bw", "oci").join("index.json")).unwrap();
    let pruned = s.buildwit(&["prune", "--all"]);
    assert!(pruned.status.success(), "{}", text(&pruned.stderr));
    let again = s.dir.path().join("epoch-bw-again");
    let dest = format!(
        "type=oci,tar=false,rewrite-timestamp=true,dest={}",
        again.display()
    );
    let built = s.buildwit(&["build", ctx_arg, "--build-arg", &arg, "-o", &dest]);
    assert!(built.status.success(), "buildwit: {}", text(&built.stderr));
    assert_eq!(
        text(&std::fs::read(again.join("index.json")).unwrap()),
        text(&first),
        "a rebuild from an empty cache made another image"
    );
}
