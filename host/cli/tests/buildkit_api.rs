//! buildwitd speaks BuildKit's API: the real `buildctl` and `buildx` from `../shared/peers`
//! drive it unchanged, and the same command gives the same result from buildwitd as from
//! `buildkitd` (the files of the image, its config, its layer count), with the progress
//! each CLI shows for BuildKit.

#[path = "../benches/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{Setup, text};

/// A client of `../shared/peers` against `addr`.
fn run<S: AsRef<std::ffi::OsStr>>(bin: &Path, args: &[S], envs: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(bin);
    c.args(args).stdin(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// `buildctl build` of the Dockerfile in `ctx` (context and Dockerfile from the same
/// directory) on the daemon at `addr`, with `extra` flags.
fn buildctl_build(
    buildctl: &Path,
    addr: &str,
    ctx: &Path,
    extra: &[&str],
    envs: &[(&str, &Path)],
) -> Output {
    let context = format!("--local=context={}", ctx.display());
    let dockerfile = format!("--local=dockerfile={}", ctx.display());
    let mut args = vec!["--addr", addr, "build", "--frontend", "dockerfile.v0"];
    args.extend([context.as_str(), dockerfile.as_str()]);
    args.extend_from_slice(extra);
    run(buildctl, &args, envs)
}

/// `buildx create` of a builder named `bw` on buildwitd at `addr` (remote driver).
fn buildx_create(buildx: &Path, addr: &str, envs: &[(&str, &Path)]) {
    ok(
        run(
            buildx,
            &["create", "--name", "bw", "--driver", "remote", addr],
            envs,
        ),
        "buildx create",
    );
}

/// A tar's entries, timestamps aside: path → (type, mode, uid, gid, content digest or
/// link target).
fn entries(tar: &Path) -> BTreeMap<String, String> {
    use sha2::Digest;
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(tar).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let path = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let link = h
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.insert(
            path,
            format!(
                "{:?} {:o} {}:{} {} {link}",
                h.entry_type(),
                h.mode().unwrap() & 0o7777,
                h.uid().unwrap(),
                h.gid().unwrap(),
                hex::encode(sha2::Sha256::digest(&data)),
            ),
        );
    }
    out
}

/// The config of an OCI tarball (skopeo), with its layer count; times and layer digests
/// left out.
fn image_of(oci: &Path) -> (serde_json::Value, usize) {
    let r = format!("oci-archive:{}", oci.display());
    let mut config = support::skopeo(&["inspect", "--config", &r]);
    let layers = config["rootfs"]["diff_ids"].as_array().unwrap().len();
    // Layer digests differ by their files' times, which the tar comparison leaves out.
    for k in ["created", "history", "rootfs"] {
        config.as_object_mut().unwrap().remove(k);
    }
    (config, layers)
}

/// Wait for `what` to hold, at most 25 s (less than the test's `sleep 30` step lasts).
fn wait_until(what: &str, holds: &dyn Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
    while !holds() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited in vain for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether plain progress shows the step named `step` as `CACHED`.
fn cached(progress: &str, step: &str) -> bool {
    progress
        .lines()
        .filter(|l| l.contains(step))
        .filter_map(|l| l.split(' ').next())
        .any(|n| progress.lines().any(|l| l == format!("{n} CACHED")))
}

fn context(s: &Setup) -> PathBuf {
    let ctx = s.dir.path().join("app");
    std::fs::create_dir_all(ctx.join("src/lib")).unwrap();
    let files = [
        (
            "Dockerfile",
            "ARG BASE\nFROM $BASE AS base\nARG GREETING=hello\nWORKDIR /app\nCOPY package*.json ./\nCOPY src/ ./src/\nRUN echo \"$GREETING\" > greeting && chmod 4755 greeting && ln -s greeting link && ln greeting hard\nRUN --mount=type=secret,id=token cat /run/secrets/token > token-copy\nENV MODE=prod\nCMD [\"sh\"]\n\nFROM base AS other\nRUN echo other > /other\n",
        ),
        ("package.json", "{\"name\": \"app\"}\n"),
        ("package-lock.json", "{}\n"),
        ("README.md", "not copied\n"),
        ("src/main.js", "console.log(1)\n"),
        ("src/lib/util.js", "module.exports = {}\n"),
    ];
    for (path, content) in files {
        std::fs::write(ctx.join(path), content).unwrap();
    }
    std::os::unix::fs::symlink("main.js", ctx.join("src/entry.js")).unwrap();
    std::fs::write(s.dir.path().join("token"), "s3cret\n").unwrap();
    ctx
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn buildctl_gets_from_buildwitd_what_it_gets_from_buildkitd() {
    let s = support::setup();
    let peers = common::peers().expect("../shared/peers/install.sh");
    let buildctl = peers.join("buildctl");
    let bw = common::buildwitd(&s, "bw", "");
    let bk = common::buildkitd(&s, &peers, "bk", "");
    let ctx = context(&s);
    let token = format!("id=token,src={}", s.dir.path().join("token").display());
    // `buildctl build` of a context with the Dockerfile frontend, plus `extra` flags.
    let build = |addr: &str, ctx: &Path, extra: &[String]| {
        let mut args = vec![
            "--addr".to_string(),
            addr.to_string(),
            "build".into(),
            "--frontend".into(),
            "dockerfile.v0".into(),
            format!("--local=context={}", ctx.display()),
            format!("--local=dockerfile={}", ctx.display()),
            "--progress=plain".into(),
        ];
        args.extend_from_slice(extra);
        run(&buildctl, &args, &[])
    };
    // The project's build: its arguments, target and secret, plus `extra` flags.
    let project = |addr: &str, extra: &[String]| {
        let mut args: Vec<String> = [
            "--opt",
            &format!("build-arg:BASE={}", s.image),
            "--opt",
            "build-arg:GREETING=hi there",
            "--opt",
            "target=base",
            "--secret",
            &token,
        ]
        .map(str::to_string)
        .to_vec();
        args.extend_from_slice(extra);
        build(addr, &ctx, &args)
    };
    let mut results = Vec::new();
    for (name, d) in [("buildwitd", &bw), ("buildkitd", &bk)] {
        let fs = s.dir.path().join(format!("{name}-fs.tar"));
        let oci = s.dir.path().join(format!("{name}-oci.tar"));
        let md = s.dir.path().join(format!("{name}-md.json"));
        let out = ok(
            project(
                &d.addr,
                &[
                    format!("--output=type=tar,dest={}", fs.display()),
                    format!("--output=type=oci,dest={}", oci.display()),
                    format!("--metadata-file={}", md.display()),
                ],
            ),
            &format!("buildctl build against {name}"),
        );
        let progress = text(&out.stderr);
        for step in [
            "[base 2/6] WORKDIR /app",
            "[base 4/6] COPY src/ ./src/",
            "RUN --mount=type=secret",
            "exporting to client tarball",
            "exporting to oci image format",
        ] {
            assert!(
                progress.contains(step),
                "{name}: no {step:?} in\n{progress}"
            );
        }
        let md = support::json(&md);
        assert!(
            md["containerimage.digest"]
                .as_str()
                .is_some_and(|d| d.starts_with("sha256:")),
            "{name}: {md}"
        );
        results.push((entries(&fs), image_of(&oci)));
    }
    let (bw_fs, bw_image) = &results[0];
    let (bk_fs, bk_image) = &results[1];
    // The busybox base is the same image in both: compare what the build added.
    let app = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter()
            .filter(|(k, _)| k.starts_with("app"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(app(bw_fs), app(bk_fs));
    assert!(bw_fs.contains_key("app/token-copy") && !bw_fs.contains_key("app/README.md"));
    assert_eq!(
        bw_fs.keys().collect::<Vec<_>>(),
        bk_fs.keys().collect::<Vec<_>>()
    );
    assert_eq!(bw_image, bk_image);

    // Rebuilt, every step is cached; a failing step fails the build with its error.
    let rebuilt = ok(project(&bw.addr, &[]), "the rebuild");
    let progress = text(&rebuilt.stderr);
    for step in ["[base 3/6] COPY package*.json", "[base 5/6] RUN echo"] {
        assert!(cached(&progress, step), "{step} not cached:\n{progress}");
    }
    let bad = s.context(
        "bad",
        &[(
            "Dockerfile",
            &format!("FROM {}\nRUN echo about to fail && exit 3\n", s.image),
        )],
    );
    let failed = build(&bw.addr, &bad, &[]);
    let stderr = text(&failed.stderr);
    assert!(!failed.status.success(), "{stderr}");
    assert!(stderr.contains("about to fail"), "{stderr}");
    assert!(stderr.contains("exit code: 3"), "{stderr}");
    assert!(stderr.contains("ERROR"), "{stderr}");

    // A client killed mid-build: the step is cancelled and the daemon serves the next.
    let slow = s.context(
        "slow",
        &[("Dockerfile", &format!("FROM {}\nRUN sleep 30\n", s.image))],
    );
    let mut client = Command::new(&buildctl)
        .args(["--addr", &bw.addr, "build", "--frontend", "dockerfile.v0"])
        .arg(format!("--local=context={}", slow.display()))
        .arg(format!("--local=dockerfile={}", slow.display()))
        .arg("--progress=plain")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let progress = std::io::BufRead::lines(std::io::BufReader::new(client.stderr.take().unwrap()));
    for line in progress {
        if line.unwrap().contains("RUN sleep 30") {
            break;
        }
    }
    // The step's process, as the host sees it.
    let step_runs = || {
        Command::new("pgrep")
            .args(["-fx", "sleep 30"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    wait_until("the step to start", &step_runs);
    client.kill().unwrap();
    client.wait().unwrap();
    ok(project(&bw.addr, &[]), "a build after a client was killed");
    wait_until("the killed client's step to be cancelled", &|| !step_runs());

    // An unknown frontend is refused; the daemon goes on serving.
    let unknown = build(&bw.addr, &bad, &["--frontend=nope.v0".to_string()]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("nope.v0"),
        "{}",
        text(&unknown.stderr)
    );

    // Pushed to a registry, the image is what the OCI tarball held.
    let registry = s.image.split('/').next().unwrap();
    let name = format!("{registry}/buildctl/app:1");
    ok(
        project(
            &bw.addr,
            &[format!("--output=type=image,name={name},push=true")],
        ),
        "the push",
    );
    let pushed = support::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--config",
        &format!("docker://{name}"),
    ]);
    assert_eq!(pushed["config"], bw_image.0["config"]);

    // Build cache to the client's directory and a registry, an OCI layout directory; a
    // daemon that never built this imports either cache and runs no step.
    let cache_dir = s.dir.path().join("cache");
    let layout = s.dir.path().join("layout");
    let registry_cache = format!("type=registry,ref={registry}/buildctl/cache:1");
    ok(
        project(
            &bw.addr,
            &[
                format!("--export-cache=type=local,dest={}", cache_dir.display()),
                format!("--export-cache={registry_cache},mode=max"),
                format!("--output=type=oci,dest={},tar=false", layout.display()),
            ],
        ),
        "the cache export",
    );
    assert!(cache_dir.join("index.json").exists());
    let (layout_image, layers) = {
        let r = format!("oci:{}", layout.display());
        let config = support::skopeo(&["inspect", "--config", &r]);
        let n = config["rootfs"]["diff_ids"].as_array().unwrap().len();
        (config, n)
    };
    assert_eq!(layers, bw_image.1);
    assert_eq!(layout_image["config"], bw_image.0["config"]);
    for import in [
        format!("--import-cache=type=local,src={}", cache_dir.display()),
        format!("--import-cache={registry_cache}"),
    ] {
        let fresh = common::buildwitd(&s, &format!("bw-{}", import.len()), "");
        let out = ok(
            project(&fresh.addr, std::slice::from_ref(&import)),
            "the cache import",
        );
        let progress = text(&out.stderr);
        assert!(
            cached(&progress, "[base 5/6] RUN echo"),
            "{import}:\n{progress}"
        );
    }

    // LLB from buildwit's own frontend run, piped into buildctl: the same files.
    let def = ok(
        Command::new(env!("CARGO_BIN_EXE_buildwit"))
            .arg("--config")
            .arg(&s.config)
            .arg("--root")
            .arg(s.dir.path().join("dump-root"))
            .args(["build", "--dump-llb", "--binary", "--target", "base"])
            .args(["--build-arg", &format!("BASE={}", s.image)])
            .args(["--build-arg", "GREETING=hi there"])
            .arg(&ctx)
            .stdin(Stdio::null())
            .output()
            .unwrap(),
        "buildwit build --dump-llb --binary",
    )
    .stdout;
    let llb_fs = s.dir.path().join("llb-fs.tar");
    let mut child = Command::new(&buildctl)
        .args(["--addr", &bw.addr, "build", "--secret", &token])
        .arg(format!("--local=context={}", ctx.display()))
        .arg(format!("--output=type=tar,dest={}", llb_fs.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &def).unwrap();
    ok(
        child.wait_with_output().unwrap(),
        "buildctl build < definition",
    );
    assert_eq!(app(&entries(&llb_fs)), app(bw_fs));

    // The cache commands print what they print for BuildKit.
    let workers = text(
        &ok(
            run(
                &buildctl,
                &["--addr", &bw.addr, "debug", "workers", "-v"],
                &[],
            ),
            "debug workers",
        )
        .stdout,
    );
    assert!(
        workers.contains("Platforms:") && workers.contains("GC Policy rule#0"),
        "{workers}"
    );
    let du = text(&ok(run(&buildctl, &["--addr", &bw.addr, "du"], &[]), "du").stdout);
    assert!(du.contains("Total:"), "{du}");
    let pruned = text(
        &ok(
            run(&buildctl, &["--addr", &bw.addr, "prune", "--all"], &[]),
            "prune",
        )
        .stdout,
    );
    assert!(pruned.contains("Total:"), "{pruned}");
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn buildx_drives_buildwitd_through_its_remote_driver() {
    let s = support::setup();
    let peers = common::peers().expect("../shared/peers/install.sh");
    let buildx = peers.join("buildx");
    let bw = common::buildwitd(&s, "bw", "");
    let config = s.dir.path().join("buildx-config");
    let docker = s.dir.path().join("docker-config");
    let envs = [
        ("BUILDX_CONFIG", config.as_path()),
        ("DOCKER_CONFIG", docker.as_path()),
    ];
    buildx_create(&buildx, &bw.addr, &envs);
    let inspect = text(
        &ok(
            run(&buildx, &["inspect", "--bootstrap", "bw"], &envs),
            "buildx inspect",
        )
        .stdout,
    );
    assert!(inspect.contains("running"), "{inspect}");
    assert!(inspect.contains("BuildKit version: v"), "{inspect}");
    let ls = text(&ok(run(&buildx, &["ls"], &envs), "buildx ls").stdout);
    assert!(
        ls.lines()
            .any(|l| l.contains("bw0") && l.contains("running")),
        "{ls}"
    );

    let ctx = context(&s);
    let out = s.dir.path().join("buildx-out");
    let token = format!("id=token,src={}", s.dir.path().join("token").display());
    // `buildx build` of the project on the builder, plus `extra` flags.
    let build = |extra: &[&str]| {
        let base = format!("BASE={}", s.image);
        let mut args = vec!["build", "--builder", "bw", "--build-arg", &base];
        args.extend_from_slice(&["--secret", &token]);
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        run(&buildx, &args, &envs)
    };
    let built = ok(
        build(&[
            "--progress=plain",
            "--target",
            "other",
            "-o",
            &format!("type=local,dest={}", out.display()),
        ]),
        "buildx build",
    );
    assert!(
        text(&built.stderr).contains("RUN echo other"),
        "{}",
        text(&built.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("other")).unwrap(),
        "other\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("app/token-copy")).unwrap(),
        "s3cret\n"
    );
    assert_eq!(
        std::fs::read_link(out.join("app/src/entry.js")).unwrap(),
        Path::new("main.js")
    );
    // buildx asks for provenance by default (the daemon says it makes attestations): the
    // image gets BuildKit's attestation manifest. An SBOM is not made; buildx says so.
    let oci = s.dir.path().join("buildx-oci.tar");
    let attested = ok(
        build(&[
            "--sbom=true",
            "-o",
            &format!("type=oci,dest={}", oci.display()),
        ]),
        "buildx build --sbom=true",
    );
    let said = text(&attested.stderr);
    assert!(said.contains("does not make sbom attestations"), "{said}");
    let index = support::skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", oci.display()),
    ]);
    assert!(
        index["manifests"].as_array().is_some_and(|m| m
            .iter()
            .any(|d| d["annotations"]["vnd.docker.reference.type"] == "attestation-manifest")),
        "{index}"
    );

    // --push: buildx's registry output, pushed by the daemon.
    let pushed = format!("{}/buildx/app:1", s.image.split('/').next().unwrap());
    ok(build(&["--push", "-t", &pushed]), "buildx build --push");
    let config = support::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--config",
        &format!("docker://{pushed}"),
    ]);
    assert_eq!(config["config"]["WorkingDir"], "/app");

    // Asking the frontend (`--call`) instead of building.
    let call = |what: &str| {
        let out = build(&["--call", what]);
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        (out.status.success(), said)
    };
    let (answered, targets) = call("targets");
    assert!(answered, "{targets}");
    assert!(
        targets.contains("base") && targets.contains("other (default)"),
        "{targets}"
    );
    let (answered, outline) = call("outline");
    assert!(answered && outline.contains("GREETING"), "{outline}");
    // The lint finds `FROM $BASE` without a default, and says so as BuildKit does.
    let (clean, check) = call("check");
    assert!(!clean, "{check}");
    assert!(check.contains("InvalidDefaultArgInFrom"), "{check}");
    assert!(check.contains("Dockerfile:2"), "{check}");
    // A local cache, written into the client's directory by way of its content store.
    let cache = s.dir.path().join("buildx-cache");
    ok(
        build(&[
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache.display()),
        ]),
        "buildx build --cache-to type=local",
    );
    assert!(cache.join("index.json").exists());
    ok(run(&buildx, &["du", "--builder", "bw"], &envs), "buildx du");
    ok(
        run(&buildx, &["prune", "--builder", "bw", "-f"], &envs),
        "buildx prune",
    );
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn a_buildctl_cache_entry_cannot_name_a_path_on_the_daemons_host() {
    let s = support::setup();
    let peers = common::peers().expect("../shared/peers/install.sh");
    let buildctl = peers.join("buildctl");
    let bw = common::buildwitd(&s, "bw", "");
    let ctx = s.context("smuggle", &[("Dockerfile", "FROM scratch\n")]);
    let target = s.dir.path().join("daemon-side");
    // buildctl reads its flag as CSV: the quoted field is one type, commas and all.
    let spec = format!("\"type=registry,type=local,dest={}\"", target.display());
    for flag in ["--export-cache", "--import-cache"] {
        let spec = spec.replace(
            "dest=",
            if flag == "--export-cache" {
                "dest="
            } else {
                "src="
            },
        );
        let out = buildctl_build(&buildctl, &bw.addr, &ctx, &[flag, &spec], &[]);
        assert!(!out.status.success(), "{flag} {spec} was taken");
        assert!(
            text(&out.stderr).contains("is not supported"),
            "{}",
            text(&out.stderr)
        );
        assert!(!target.exists(), "{flag} {spec} wrote {}", target.display());
    }
    // The daemon serves on.
    ok(
        buildctl_build(&buildctl, &bw.addr, &ctx, &[], &[]),
        "a build after the refused ones",
    );
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn buildctl_forwards_its_ssh_agent_to_steps() {
    let s = support::setup();
    let peers = common::peers().expect("../shared/peers/install.sh");
    let buildctl = peers.join("buildctl");
    let bw = common::buildwitd(&s, "bw", "");
    let agent = support::Agent::start(s.dir.path(), "agent");
    let ctx = s.context(
        "ssh",
        &[(
            "Dockerfile",
            &format!(
                "FROM {}\nCOPY sshroot/ /\nRUN --mount=type=ssh ssh-add -L > /keys\n",
                s.image
            ),
        )],
    );
    support::copy_program("/usr/bin/ssh-add", &ctx.join("sshroot"));
    let out = s.dir.path().join("out");
    let build = |ssh: &str, out: &Path| {
        let dest = format!("type=local,dest={}", out.display());
        buildctl_build(
            &buildctl,
            &bw.addr,
            &ctx,
            &["--ssh", ssh, "--output", &dest],
            &[],
        )
    };
    ok(
        build(&format!("default={}", agent.socket.display()), &out),
        "the build with --ssh",
    );
    assert_eq!(
        std::fs::read_to_string(out.join("keys")).unwrap().trim(),
        agent.public.trim()
    );
    // A step that needs `default` while the client forwards only another id.
    let needs = s.context(
        "ssh-needed",
        &[(
            "Dockerfile",
            &format!(
                "FROM {}\nRUN --mount=type=ssh,required=true true\n",
                s.image
            ),
        )],
    );
    let other = format!("other={}", agent.socket.display());
    let failed = buildctl_build(&buildctl, &bw.addr, &needs, &["--ssh", &other], &[]);
    assert!(!failed.status.success());
    assert!(
        text(&failed.stderr).contains("default"),
        "{}",
        text(&failed.stderr)
    );
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn pulls_and_pushes_use_the_clients_docker_login() {
    let s = support::setup();
    let peers = common::peers().expect("../shared/peers/install.sh");
    let (buildctl, buildx) = (peers.join("buildctl"), peers.join("buildx"));
    // A registry that wants a password, holding the base image.
    let private = support::common::start_password_registry(s.dir.path());
    let host = private.host();
    let base = format!("{host}/base/busybox:1");
    ok(
        run(
            Path::new("skopeo"),
            &[
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                "--dest-creds=tester:s3cret",
                &format!("docker://{}", s.image),
                &format!("docker://{base}"),
            ],
            &[],
        ),
        "skopeo copy to the private registry",
    );
    // The daemon trusts the registry over HTTP and has no credentials for it.
    let bw = common::buildwitd(&s, "bw", &format!("[registry.\"{host}\"]\nhttp = true\n"));
    // The client's `docker login`, and a client without one.
    let logged_in = s.dir.path().join("logged-in");
    std::fs::create_dir_all(&logged_in).unwrap();
    std::fs::write(
        logged_in.join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"dGVzdGVyOnMzY3JldA=="}}}}}}"#),
    )
    .unwrap();
    let anonymous = s.dir.path().join("anonymous");
    std::fs::create_dir_all(&anonymous).unwrap();
    let ctx = s.context(
        "private",
        &[(
            "Dockerfile",
            &format!("FROM {base}\nRUN echo built > /built\n"),
        )],
    );
    let build = |docker_config: &Path, tag: &str| {
        let output = format!("type=image,name={host}/app/built:{tag},push=true");
        buildctl_build(
            &buildctl,
            &bw.addr,
            &ctx,
            &["--output", &output],
            &[("DOCKER_CONFIG", docker_config)],
        )
    };

    // Without credentials the base cannot be pulled, and the error says why.
    let refused = build(&anonymous, "1");
    assert!(!refused.status.success(), "{}", text(&refused.stderr));
    let said = text(&refused.stderr);
    assert!(
        said.contains(&host) && said.contains("docker login"),
        "{said}"
    );

    // With them, buildwitd pulls the base and pushes the result as the client.
    ok(
        build(&logged_in, "1"),
        "buildctl build with the client's login",
    );
    let inspect = |image: &str| {
        run(
            Path::new("skopeo"),
            &[
                "inspect",
                "--tls-verify=false",
                "--creds=tester:s3cret",
                &format!("docker://{image}"),
            ],
            &[],
        )
    };
    let pushed: serde_json::Value = serde_json::from_slice(
        &ok(inspect(&format!("{host}/app/built:1")), "skopeo inspect").stdout,
    )
    .unwrap();
    assert_eq!(pushed["Layers"].as_array().unwrap().len(), 2, "{pushed}");

    // What one client's login unlocked (a cached resolve, a token) is not another's: the
    // anonymous client is refused again after the logged-in build.
    let refused = build(&anonymous, "2");
    assert!(!refused.status.success(), "{}", text(&refused.stderr));
    assert!(!inspect(&format!("{host}/app/built:2")).status.success());

    // buildx, with the same login in its Docker config, pushes through the remote driver.
    let buildx_config = s.dir.path().join("buildx-config");
    let envs = [
        ("BUILDX_CONFIG", buildx_config.as_path()),
        ("DOCKER_CONFIG", logged_in.as_path()),
    ];
    buildx_create(&buildx, &bw.addr, &envs);
    let tag = format!("{host}/app/built:buildx");
    ok(
        run(
            &buildx,
            &[
                "build",
                "--builder",
                "bw",
                "--provenance=false",
                "--push",
                "-t",
                &tag,
                ctx.to_str().unwrap(),
            ],
            &envs,
        ),
        "buildx build --push",
    );
    ok(inspect(&tag), "skopeo inspect of buildx's push");
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn buildctl_caches_in_s3_through_buildwitd_with_the_daemons_credentials() {
    let s = support::setup();
    let peers = common::peers().expect("../shared/peers/install.sh");
    let buildctl = peers.join("buildctl");
    let moto = support::buckets::Server::moto(s.dir.path(), "ci-cache");
    // The credentials and region are the daemon's, as buildkitd reads them.
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let ctx = s.context(
        "s3",
        &[(
            "Dockerfile",
            &format!(
                "FROM {}\nRUN echo one > /one\nRUN cat /one /one > /two\n",
                s.image
            ),
        )],
    );
    let spec = format!(
        "type=s3,bucket=ci-cache,endpoint_url=http://127.0.0.1:{},use_path_style=true",
        moto.port
    );
    let export = format!("{spec},mode=max");
    let first = common::buildwitd_with_env(&s, "bw1", "", &env);
    let out = ok(
        buildctl_build(
            &buildctl,
            &first.addr,
            &ctx,
            &["--progress=plain", "--export-cache", &export],
            &[],
        ),
        "the build exporting its cache",
    );
    assert!(
        text(&out.stderr).contains("blobs written"),
        "{}",
        text(&out.stderr)
    );
    drop(first);

    // Another daemon with an empty root builds nothing: every step comes from the bucket.
    let second = common::buildwitd_with_env(&s, "bw2", "", &env);
    let out = ok(
        buildctl_build(
            &buildctl,
            &second.addr,
            &ctx,
            &["--progress=plain", "--import-cache", &spec],
            &[],
        ),
        "the build importing the cache",
    );
    let progress = text(&out.stderr);
    for step in ["RUN echo one", "RUN cat /one"] {
        assert!(cached(&progress, step), "{step} ran:\n{progress}");
    }
}
