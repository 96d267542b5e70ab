//! End to end on real parts: a Debian `docker-registry` on 127.0.0.1 holding a base image
//! made from Debian's `busybox-static`, steps run by `runc`, images checked with `skopeo`
//! and `umoci`. Progress comes as `--progress=rawjson`, so the tests see which steps ran.

use std::process::Command;

mod support;

use support::{setup, text};

#[test]
fn builds_caches_and_rebuilds_only_what_changed() {
    let s = setup();
    let ctx = s.context(
        "app",
        &[
            (
                "Dockerfile",
                "FROM BASE AS build\nWORKDIR /src\nCOPY app.txt .\nRUN cat app.txt > out.txt && echo built >> out.txt\n\
                 FROM BASE\nCOPY --from=build /src/out.txt /out.txt\nCOPY other.txt /other.txt\n\
                 RUN --mount=type=cache,target=/cache echo run >> /cache/runs && cat /other.txt > /seen\n",
            ),
            ("app.txt", "hello\n"),
            ("other.txt", "one\n"),
        ],
    );
    let first = s.build(&ctx, &[]).ok();
    assert!(first.ran_any("RUN cat app.txt"), "ran: {:?}", first.ran);

    // Nothing changed: every step comes from the cache.
    let second = s.build(&ctx, &[]).ok();
    let steps: Vec<&String> = second
        .ran
        .iter()
        .filter(|n| n.contains("RUN") || n.contains("COPY"))
        .collect();
    assert!(steps.is_empty(), "re-ran {steps:?}");
    assert!(
        second
            .cached
            .iter()
            .any(|n| n.contains("RUN --mount=type=cache")),
        "cached: {:?}",
        second.cached
    );
    // Each step is listed as cached once, as BuildKit lists them, not only the last.
    for step in [
        "FROM ",
        "COPY app.txt",
        "RUN cat app.txt",
        "COPY --from=build",
        "COPY other.txt",
        "RUN --mount=type=cache",
    ] {
        let n = second.cached.iter().filter(|c| c.contains(step)).count();
        assert!(n >= 1, "{step} not cached: {:?}", second.cached);
    }
    let mut unique = second.cached.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), second.cached.len(), "{:?}", second.cached);

    // Editing other.txt re-runs only what reads it.
    std::fs::write(ctx.join("other.txt"), "two\n").unwrap();
    let third = s.build(&ctx, &[]).ok();
    assert!(third.ran_any("COPY other.txt"), "ran: {:?}", third.ran);
    assert!(
        third.ran_any("RUN --mount=type=cache"),
        "ran: {:?}",
        third.ran
    );
    assert!(!third.ran_any("RUN cat app.txt"), "ran: {:?}", third.ran);
    assert!(!third.ran_any("COPY app.txt"), "ran: {:?}", third.ran);
}

#[test]
fn a_failing_step_reports_its_exit_code_and_is_not_cached() {
    let s = setup();
    let ctx = s.context(
        "fail",
        &[(
            "Dockerfile",
            "FROM BASE\nRUN echo about to fail && exit 3\n",
        )],
    );
    let b = s.build(&ctx, &[]);
    assert!(!b.out.status.success());
    let err = text(&b.out.stderr);
    assert!(
        err.contains("did not complete successfully: exit code: 3"),
        "{err}"
    );
    assert!(
        err.contains("about to fail"),
        "the step's output is shown: {err}"
    );
    // The failed step ran again on the next build: nothing of it was cached.
    let again = s.build(&ctx, &[]);
    assert!(!again.out.status.success());
    assert!(again.ran_any("exit 3"), "ran: {:?}", again.ran);

    // The history has both builds, with their error.
    let ls = text(&s.buildwit(&["history", "ls"]).stdout);
    let ids: Vec<&str> = ls
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids.len(), 2, "{ls}");
    assert!(ls.lines().skip(1).all(|l| l.contains("Error")), "{ls}");
    let inspect = text(&s.buildwit(&["history", "inspect", ids[0]]).stdout);
    assert!(
        inspect.contains("exit code: 3") && inspect.contains("dockerfile.v0"),
        "{inspect}"
    );
}

#[test]
fn run_mounts_secrets_tmpfs_bind_and_users() {
    let s = setup();
    let ctx = s.context(
        "mounts",
        &[
            (
                "Dockerfile",
                "FROM BASE AS data\nRUN mkdir /d && echo from-stage > /d/f\n\
                 FROM BASE\n\
                 RUN --mount=type=secret,id=tok test \"$(cat /run/secrets/tok)\" = s3cret && echo secret-ok\n\
                 RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && test -f /scratch/x\n\
                 RUN --mount=type=bind,from=data,source=/d,target=/mnt cat /mnt/f > /copied\n\
                 ADD bundle.tar.gz /unpacked/\n\
                 RUN --mount=type=ssh test -S /run/buildkit/ssh_agent.0 && echo ssh-ok\n\
                 RUN --mount=type=cache,target=/c,uid=1000,mode=0700,sharing=private test \"$(stat -c %u:%a /c)\" = 1000:700 && echo cache-ok\n\
                 RUN --mount=type=cache,id=twice,target=/a,sharing=locked --mount=type=cache,id=twice,target=/b,sharing=locked touch /a/x && test -f /b/x && echo locked-twice-ok\n\
                 USER app\nRUN id -u > /tmp/uid\n",
            ),
            ("tok.txt", "s3cret"),
            ("bundle/inner/file.txt", "from the archive\n"),
        ],
    );
    let tar = Command::new("tar")
        .arg("-czf")
        .arg(ctx.join("bundle.tar.gz"))
        .arg("-C")
        .arg(ctx.join("bundle"))
        .arg("inner")
        .status()
        .unwrap();
    assert!(tar.success());
    // Any unix socket stands in for an SSH agent: the step only checks it is there.
    let agent = s.dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&agent).unwrap();
    let ssh = format!("default={}", agent.display());
    let secret = format!("id=tok,src={}", ctx.join("tok.txt").display());
    let out = s.dir.path().join("image.tar");
    let b = s
        .build(
            &ctx,
            &[
                "--secret",
                &secret,
                "--ssh",
                &ssh,
                "-t",
                "app:latest",
                "--output",
                &format!("type=oci,dest={}", out.display()),
            ],
        )
        .ok();
    for marker in ["secret-ok", "ssh-ok", "cache-ok", "locked-twice-ok"] {
        assert!(
            b.logs.iter().any(|l| l.contains(marker)),
            "{marker}: {:?}",
            b.logs
        );
    }
    let files = support::unpack_oci(&out, s.dir.path());
    assert_eq!(
        std::fs::read_to_string(files.join("copied")).unwrap(),
        "from-stage\n"
    );
    assert_eq!(
        std::fs::read_to_string(files.join("tmp/uid")).unwrap(),
        "1000\n"
    );
    assert_eq!(
        std::fs::read_to_string(files.join("unpacked/inner/file.txt")).unwrap(),
        "from the archive\n",
        "ADD extracts local archives"
    );
    // Mount points of secrets, ssh and tmpfs are not left in the image.
    for stub in ["run/secrets", "run/buildkit", "scratch"] {
        assert!(!files.join(stub).exists(), "{stub}");
    }
}

#[test]
fn host_network_needs_both_entitlements() {
    let s = setup();
    let ctx = s.context(
        "net",
        &[("Dockerfile", "FROM BASE\nRUN --network=host true\n")],
    );
    let b = s.build(&ctx, &["--allow", "network.host"]);
    assert!(!b.out.status.success());
    let err = text(&b.out.stderr);
    assert!(
        err.contains("network.host is not allowed by build daemon configuration"),
        "{err}"
    );
    assert!(
        b.ran.is_empty(),
        "nothing runs before the check: {:?}",
        b.ran
    );
}

#[test]
fn links_downloads_image_copies_and_pushes() {
    let s = setup();
    let host = s.image.split('/').next().unwrap().to_string();
    // The base image's config blob, served by the registry, is the download.
    let manifest = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{}", s.image),
        ])
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let url = format!("http://{host}/v2/library/busybox/blobs/{config_digest}");
    let dockerfile = format!(
        "FROM BASE\nCOPY --link a.txt /linked/a.txt\nADD --checksum={config_digest} {url} /cfg.json\n\
         COPY --from=BASE /bin/busybox /copied-busybox\nRUN test -s /cfg.json && test -x /copied-busybox\n"
    );
    let ctx = s.context(
        "link",
        &[("Dockerfile", &dockerfile), ("a.txt", "linked\n")],
    );
    let pushed = format!("{host}/app:1");
    let out = s.dir.path().join("link.tar");
    s.build(
        &ctx,
        &[
            "--output",
            &format!("type=oci,dest={},name=app:latest", out.display()),
            "--output",
            &format!("type=image,name={pushed},push=true"),
        ],
    )
    .ok();
    let files = support::unpack_oci(&out, s.dir.path());
    assert_eq!(
        std::fs::read_to_string(files.join("linked/a.txt")).unwrap(),
        "linked\n"
    );
    assert!(files.join("cfg.json").is_file());
    assert!(
        files.join("bin/busybox").is_file(),
        "the base layer is in the image"
    );

    // The pushed image is in the registry, with the same layers.
    let inspect = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{pushed}"),
        ])
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", text(&inspect.stderr));
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), 5, "{info}");

    // A wrong checksum fails the download and names the URL.
    let bad = s.context(
        "bad-checksum",
        &[(
            "Dockerfile",
            &format!(
                "FROM BASE\nADD --checksum=sha256:{} {url} /x\n",
                "0".repeat(64)
            ),
        )],
    );
    let b = s.build(&bad, &[]);
    assert!(!b.out.status.success());
    let err = text(&b.out.stderr);
    assert!(err.contains(&url) && err.contains("digest"), "{err}");
}

#[test]
fn a_killed_build_leaves_nothing_a_later_build_takes() {
    let s = setup();
    let ctx = s.context(
        "killed",
        &[(
            "Dockerfile",
            "FROM BASE\nRUN echo started && sleep 30 && echo done > /marker\n",
        )],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_buildwit"))
        .arg("--config")
        .arg(&s.config)
        .arg("--root")
        .arg(&s.root)
        .args(["build", "--progress=plain"])
        .arg(&ctx)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the step runs, then kill -9.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "the build ended before its step started");
        if line.contains("started") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Kill the orphaned container too, as a daemon restart would.
    let _ = Command::new("pkill")
        .args(["-9", "-f", "sleep 30"])
        .status();

    // The store opens, the step runs again (nothing of it was cached) and completes.
    let fixed = s.context(
        "killed",
        &[(
            "Dockerfile",
            "FROM BASE\nRUN echo started && sleep 1 && echo done > /marker\n",
        )],
    );
    let b = s.build(&fixed, &[]).ok();
    assert!(b.ran_any("sleep 1"), "ran: {:?}", b.ran);
}
