//! `# syntax=` frontends published as container images, run as BuildKit runs them: BuildKit's
//! own Dockerfile frontend (`../shared/peers/images/dockerfile-frontend`, pushed to a real
//! registry) runs in a runc container and speaks LLBBridge over its stdio to buildwit.
//! Two independent Dockerfile frontends, BuildKit's and buildwit's built-in Wasm one, must
//! then produce the same LLB for every conformance case both accept.

#[path = "../benches/common/mod.rs"]
mod common;
mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{Setup, setup, text};

fn shared() -> PathBuf {
    PathBuf::from(env!("BUILDWIT_SHARED_DIR"))
}

/// Push BuildKit's Dockerfile frontend image to the setup's registry; its reference.
fn push_peer_frontend(s: &Setup) -> String {
    let host = s.image.split('/').next().unwrap();
    let reference = format!("{host}/peer/dockerfile:1");
    let layout = shared().join("peers/images/dockerfile-frontend");
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    reference
}

/// The LLB a build would solve, one op per line, with what varies between runs made
/// equal: op digests become positions, and `local.unique` and `local.session` (a random id
/// and the session's id; BuildKit's frontend sets the second when it has a session, the
/// built-in one the first) are dropped, with their caps.
fn normalized_llb(stdout: &[u8]) -> Vec<Value> {
    let mut ops: Vec<Value> = text(stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let digests: Vec<String> = ops
        .iter()
        .map(|o| o["Digest"].as_str().unwrap_or_default().to_string())
        .collect();
    for op in &mut ops {
        let mut line = op.to_string();
        for (i, d) in digests.iter().enumerate() {
            line = line.replace(d, &format!("<op{i}>"));
        }
        *op = serde_json::from_str(&line).unwrap();
        if let Some(attrs) = op
            .pointer_mut("/Op/Op/source/attrs")
            .and_then(Value::as_object_mut)
        {
            attrs.remove("local.unique");
            attrs.remove("local.session");
        }
        if let Some(caps) = op
            .pointer_mut("/OpMetadata/caps")
            .and_then(Value::as_object_mut)
        {
            caps.remove("source.local.unique");
            caps.remove("source.local.sessionid");
        }
        if let Some(group) = op.pointer_mut("/OpMetadata/progress_group/id") {
            *group = Value::from("<group>");
        }
    }
    ops
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn buildkits_dockerfile_frontend_in_a_container_and_the_built_in_one_agree() {
    let s = setup();
    let frontend = push_peer_frontend(&s);
    let host = s.image.split('/').next().unwrap().to_string();
    let corpus = shared().join("conformance/dockerfile");
    let cases = std::fs::read_to_string(corpus.join("cases.tsv")).unwrap();
    let (mut same, mut refused, mut different) = (0, Vec::new(), Vec::new());
    for line in cases.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, "valid", target, ..] = fields.as_slice() else {
            continue;
        };
        let dockerfile = std::fs::read_to_string(corpus.join(name).join("Dockerfile"))
            .unwrap()
            .replace("127.0.0.1:5000", &host);
        // Written as it is (`Setup::context` would replace the word BASE).
        let ctx = s.dir.path().join(format!("case-{name}"));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), &dockerfile).unwrap();
        let mut args = vec!["build", ctx.to_str().unwrap(), "--dump-llb"];
        if !target.is_empty() {
            args.extend(["--target", target]);
        }
        let built_in = s.buildwit(&args);
        let source = format!("source={frontend}");
        args.extend(["--frontend", "gateway.v0", "--opt", &source]);
        let container = s.buildwit(&args);
        if !built_in.status.success() || !container.status.success() {
            // Only cases both accept are compared (the pinned-digest cases name an image
            // this registry does not have); the two must then fail alike.
            assert_eq!(
                built_in.status.success(),
                container.status.success(),
                "{name}: one frontend failed:\nbuilt-in: {}\ncontainer: {}",
                text(&built_in.stderr),
                text(&container.stderr)
            );
            let error = text(&built_in.stderr);
            let error = error.lines().find(|l| l.starts_with("error")).unwrap_or("");
            refused.push(format!("{name} ({error})"));
            continue;
        }
        let (a, b) = (
            normalized_llb(&built_in.stdout),
            normalized_llb(&container.stdout),
        );
        if a == b {
            same += 1;
        } else {
            let first = a
                .iter()
                .zip(&b)
                .position(|(x, y)| x != y)
                .unwrap_or(a.len().min(b.len()));
            different.push(format!(
                "{name}: op {first} differs\n  built-in:  {}\n  container: {}",
                a.get(first).map(Value::to_string).unwrap_or_default(),
                b.get(first).map(Value::to_string).unwrap_or_default()
            ));
        }
    }
    eprintln!(
        "{same} cases produce the same LLB; both refuse {}:\n{}",
        refused.len(),
        refused.join("\n")
    );
    assert!(different.is_empty(), "{}", different.join("\n"));
    assert!(same >= 50, "only {same} cases compared");
}

/// A build with `# syntax=` naming the container frontend: the files and the image config
/// are the built-in frontend's.
#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn a_syntax_container_frontend_builds_what_the_built_in_one_builds() {
    let s = setup();
    let frontend = push_peer_frontend(&s);
    let body = "FROM BASE\nENV GREETING=hi\nWORKDIR /app\nCOPY a.txt .\nRUN echo $GREETING > made.txt && cat a.txt >> made.txt\nCMD [\"cat\", \"made.txt\"]\n";
    let plain = s.context("plain", &[("Dockerfile", body), ("a.txt", "a\n")]);
    let with_syntax = s.context(
        "syntax",
        &[
            ("Dockerfile", &format!("# syntax={frontend}\n{body}")),
            ("a.txt", "a\n"),
        ],
    );
    let build = |ctx: &Path, dest: &str| {
        let out = s.buildwit(&[
            "build",
            ctx.to_str().unwrap(),
            "--progress=plain",
            "-o",
            &format!(
                "type=oci,dest={},name=example.com/app:latest",
                s.dir.path().join(dest).display()
            ),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    build(&plain, "plain.tar");
    let log = build(&with_syntax, "syntax.tar");
    assert!(
        log.contains(&format!("served by {frontend}@sha256:")) && log.contains("container image"),
        "{log}"
    );
    let unpack = |tar: &str| {
        let dir = s.dir.path().join(format!("{tar}.d"));
        std::fs::create_dir_all(&dir).unwrap();
        let rootfs = support::unpack_oci(&s.dir.path().join(tar), &dir);
        std::fs::read_to_string(rootfs.join("app/made.txt")).unwrap()
    };
    assert_eq!(unpack("plain.tar"), "hi\na\n");
    assert_eq!(unpack("syntax.tar"), "hi\na\n");

    // The same through buildwitd, driven by BuildKit's own buildctl.
    let peers = common::peers().expect("../shared/peers/install.sh");
    let daemon = common::buildwitd_for_buildctl(&s, &peers, "bw");
    let out = std::process::Command::new(peers.join("buildctl"))
        .args([
            "--addr",
            &daemon.addr,
            "build",
            "--frontend",
            "dockerfile.v0",
        ])
        .arg(format!("--local=context={}", with_syntax.display()))
        .arg(format!("--local=dockerfile={}", with_syntax.display()))
        .arg(format!(
            "--output=type=oci,dest={},name=example.com/app:latest",
            s.dir.path().join("buildctl.tar").display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(unpack("buildctl.tar"), "hi\na\n");

    // Pinned by digest: exactly that image runs, and the record says which.
    let digest = log
        .split(&format!("{frontend}@"))
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let name = frontend.rsplit_once(':').unwrap().0;
    std::fs::write(
        with_syntax.join("Dockerfile"),
        format!("# syntax={name}@{digest}\n{body}").replace("BASE", &s.image),
    )
    .unwrap();
    let log = build(&with_syntax, "pinned.tar");
    assert!(log.contains(&format!("@{digest}")), "{log}");
    assert_eq!(unpack("pinned.tar"), "hi\na\n");
}

/// Exact pins: a digest pin of `docker/dockerfile` runs exactly that image; a version pin
/// is served by the built-in frontend (with a warning) unless `dockerfilePins = "exact"`,
/// which runs the pinned image. Docker Hub is this test's registry, as a mirror.
#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn dockerfile_pins_run_the_pinned_image() {
    let s = setup();
    let host = s.image.split('/').next().unwrap().to_string();
    let pushed = push_peer_frontend(&s);
    // The same image as docker/dockerfile:1.4.3 on the mirror.
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("docker://{pushed}"))
        .arg(format!("docker://{host}/docker/dockerfile:1.4.3"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mirror = format!(
        "[registry.\"docker.io\"]\nmirrors = [\"{host}\"]\n[registry.\"{host}\"]\nhttp = true\n"
    );
    let builtin = s.dir.path().join("builtin.toml");
    std::fs::write(&builtin, &mirror).unwrap();
    let exact = s.dir.path().join("exact.toml");
    std::fs::write(
        &exact,
        format!("{mirror}[frontend.\"gateway.v0\"]\ndockerfilePins = \"exact\"\n"),
    )
    .unwrap();
    let ctx = s.context("pins", &[("a.txt", "a\n")]);
    let build = |config: &Path, syntax: &str| {
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("# syntax={syntax}\nFROM scratch\nCOPY a.txt /\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_buildwit"))
            .arg("--config")
            .arg(config)
            .arg("--root")
            .arg(&s.root)
            .args([
                "build",
                ctx.to_str().unwrap(),
                "--dump-llb",
                "--progress=plain",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let log = build(&builtin, "docker/dockerfile:1.4.3");
    assert!(
        log.contains("pins Dockerfile frontend 1.4.3; it is served by the built-in 1.26.0"),
        "{log}"
    );
    let log = build(&exact, "docker/dockerfile:1.4.3");
    assert!(
        log.contains("served by docker.io/docker/dockerfile:1.4.3@sha256:")
            && log.contains("container image"),
        "{log}"
    );
    let digest = log
        .split("docker/dockerfile:1.4.3@")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    // A channel tag is still the built-in one; a digest pin is that image, whatever the setting.
    let log = build(&exact, "docker/dockerfile:1");
    assert!(log.contains("built-in dockerfile 1.26.0"), "{log}");
    let log = build(&builtin, &format!("docker/dockerfile@{digest}"));
    assert!(
        log.contains(&format!("served by docker.io/docker/dockerfile@{digest}"))
            && log.contains("container image"),
        "{log}"
    );
}

/// A Wasm frontend inside a stock BuildKit: `frontend push --container` publishes the
/// toml-spec plugin as a container image, `buildkitd` (from `../shared/peers`) runs it for
/// a `# syntax=` line through `buildctl`, and the files and image config are what buildwit
/// builds from the same spec with the component itself.
#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn stock_buildkit_runs_a_wasm_frontend_pushed_as_a_container() {
    let s = setup();
    let peers = common::peers().expect("../shared/peers/install.sh");
    let host = s.image.split('/').next().unwrap().to_string();
    let reference = format!("{host}/buildwit/toml-spec-container:1");
    let component = format!("{}/toml-spec.wasm", buildwit_frontend::BUILT_FRONTENDS_DIR);
    let out = s.buildwit(&["frontend", "push", "--container", &component, &reference]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = support::skopeo(&[
        "inspect",
        "--config",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    assert_eq!(
        config["config"]["Labels"]["moby.buildkit.frontend.network.none"],
        "true"
    );

    // The example, with a first line naming the image.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/toml-spec");
    let spec = std::fs::read_to_string(example.join("build.toml")).unwrap();
    let ctx = s.context(
        "toml-spec",
        &[
            ("build.toml", &format!("# syntax={reference}\n{spec}")),
            (
                "app/run.sh",
                &std::fs::read_to_string(example.join("app/run.sh")).unwrap(),
            ),
        ],
    );
    let bk = common::buildkitd(&s, &peers, "bk", "");
    let dest = |name: &str| s.dir.path().join(name);
    let out = std::process::Command::new(peers.join("buildctl"))
        .args(["--addr", &bk.addr, "build", "--frontend", "dockerfile.v0"])
        .arg(format!("--local=context={}", ctx.display()))
        .arg(format!("--local=dockerfile={}", ctx.display()))
        .arg("--opt=filename=build.toml")
        .arg(format!(
            "--output=type=local,dest={}",
            dest("bk-files").display()
        ))
        .arg(format!(
            "--output=type=oci,dest={},name=example.com/app:latest",
            dest("bk.tar").display()
        ))
        .arg("--progress=plain")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.buildwit(&[
        "build",
        ctx.to_str().unwrap(),
        "-f",
        ctx.join("build.toml").to_str().unwrap(),
        "--frontend-file",
        &component,
        "-o",
        &format!("type=local,dest={}", dest("bw-files").display()),
        "-o",
        &format!(
            "type=oci,dest={},name=example.com/app:latest",
            dest("bw.tar").display()
        ),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The same files, modes and contents.
    let tree = |root: &Path| {
        let mut entries = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let path = e.unwrap().path();
                let md = std::fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                let content = match md.is_file() {
                    true => std::fs::read(&path).unwrap(),
                    false => Vec::new(),
                };
                use std::os::unix::fs::MetadataExt;
                entries.push((rel, md.mode(), content));
                if md.is_dir() {
                    stack.push(path);
                }
            }
        }
        entries.sort();
        entries
    };
    let files = tree(&dest("bw-files"));
    assert!(
        files
            .iter()
            .any(|(p, _, c)| p == "app/VERSION" && c == b"1.0.0\n")
    );
    assert_eq!(tree(&dest("bk-files")), files);
    // The same image config, timestamps aside.
    let image_config = |tar: &str| {
        let dir = dest(&format!("{tar}.d"));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("tar")
            .arg("-xf")
            .arg(dest(tar))
            .arg("-C")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success());
        let blob = |digest: &str| {
            support::json(
                &dir.join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:")),
            )
        };
        let index = support::json(&dir.join("index.json"));
        let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
        blob(manifest["config"]["digest"].as_str().unwrap())["config"].clone()
    };
    assert_eq!(image_config("bk.tar"), image_config("bw.tar"));
}

/// Policy applies to container frontends before anything is pulled, and a frontend that
/// misbehaves gets an error naming it, with nothing of its container left behind.
#[test]
fn container_frontends_under_policy_and_when_they_misbehave() {
    let s = setup();
    let host = s.image.split('/').next().unwrap().to_string();
    // Frontend images made of the busybox base: one without an entrypoint (BuildKit then
    // runs /run, which is not there), one that writes garbage where gRPC is expected, one
    // that never answers.
    let push = |name: &str, dockerfile: &str| {
        let ctx = s.context(name, &[("Dockerfile", dockerfile)]);
        let reference = format!("{host}/bad/{name}:1");
        let out = s.buildwit(&[
            "build",
            ctx.to_str().unwrap(),
            "-o",
            &format!("type=image,name={reference},push=true"),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        reference
    };
    let none = push("noentry", "FROM BASE\n");
    let garbage = push(
        "garbage",
        "FROM BASE\nENTRYPOINT [\"sh\", \"-c\", \"echo this is not http2; echo oops >&2\"]\n",
    );
    let silent = push("silent", "FROM BASE\nENTRYPOINT [\"sleep\", \"600\"]\n");
    let ctx = s.context("user", &[("Dockerfile", "FROM scratch\n")]);
    let run = |source: &str, extra: &[&str]| {
        let source = format!("source={source}");
        let mut args = vec![
            "build",
            ctx.to_str().unwrap(),
            "--dump-llb",
            "--frontend",
            "gateway.v0",
            "--opt",
            &source,
        ];
        args.extend(extra);
        let out = s.buildwit(&args);
        assert!(!out.status.success());
        text(&out.stderr)
    };
    let err = run(&none, &[]);
    assert!(
        err.contains(&format!("{none}@sha256:")) && err.contains("without returning a result"),
        "{err}"
    );
    let err = run(&garbage, &[]);
    assert!(
        err.contains(&format!("{garbage}@sha256:"))
            && err.contains("without returning a result")
            && err.contains("oops"),
        "{err}"
    );
    let err = run(&silent, &["--frontend-timeout", "2"]);
    assert!(
        err.contains(&format!("{silent}@sha256:")) && err.contains("deadline of 2.0s"),
        "{err}"
    );
    // No container of these runs is left.
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(s.root.join("runc"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), "", "containers left behind");

    // allowedRepositories: an unlisted container frontend is refused before it is pulled
    // (this name is not even in the registry).
    let config = s.dir.path().join("allowed.toml");
    std::fs::write(
        &config,
        format!(
            "[registry.\"{host}\"]\nhttp = true\n[frontend.\"gateway.v0\"]\nallowedRepositories = [\"{host}/bad/noentry\"]\n"
        ),
    )
    .unwrap();
    let out = s
        .build_with(
            &config,
            &ctx,
            &[
                "--dump-llb",
                "--frontend",
                "gateway.v0",
                "--opt",
                &format!("source={host}/elsewhere/never-pushed:1"),
            ],
        )
        .out;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "'{host}/elsewhere/never-pushed:1' is not an allowed gateway source"
        )),
        "{err}"
    );
}
