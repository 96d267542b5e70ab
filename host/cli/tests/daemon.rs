//! buildwitd and `buildwit --addr`: builds through the daemon on a unix socket (context
//! streamed, outputs streamed back), 8 concurrent builds, bad requests, TLS with client
//! certificates, `du` and `history` over gRPC, and a clean SIGTERM.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Agent, Build, Daemon, copy_program, text};

/// The `received=N` of the daemon's last finished build: content bytes the client sent.
fn last_received(log: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("build finished"))
        .expect("no finished build in the log");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("received="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no received= in {line:?}"))
}

#[test]
fn builds_through_the_daemon_like_in_process() {
    let s = support::setup();
    let mut d = Daemon::unix(&s, "d");
    let ctx = s.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM BASE\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt && echo from-run >> /b.txt\n",
            ),
            ("a.txt", "hello from the client\n"),
            ("unused.bin", &"x".repeat(100_000)),
        ],
    );
    let out = s.dir.path().join("out");
    let b = d
        .build(&ctx, &["-o", &format!("type=local,dest={}", out.display())])
        .ok();
    assert!(b.ran_any("RUN cat /a.txt"), "{:?}", b.ran);
    assert_eq!(
        std::fs::read_to_string(out.join("b.txt")).unwrap(),
        "hello from the client\nfrom-run\n"
    );
    // Only what the build reads was sent: the Dockerfile and a.txt, not unused.bin.
    let first = last_received(&d.log());
    assert!(first > 0 && first < 10_000, "sent {first} bytes");

    // Unchanged context: metadata only, and every step cached.
    let b = d.build(&ctx, &[]).ok();
    assert!(b.ran.is_empty(), "ran {:?}", b.ran);
    assert_eq!(last_received(&d.log()), 0);

    // One file changed: only it is sent, and the steps after it run again.
    std::fs::write(ctx.join("a.txt"), "changed\n").unwrap();
    let b = d
        .build(&ctx, &["-o", &format!("type=local,dest={}", out.display())])
        .ok();
    assert!(b.ran_any("RUN cat /a.txt"), "{:?}", b.ran);
    assert_eq!(last_received(&d.log()), "changed\n".len() as u64);
    assert_eq!(
        std::fs::read_to_string(out.join("b.txt")).unwrap(),
        "changed\nfrom-run\n"
    );

    // An OCI tarball to standard output comes back through the stream.
    let tar = d.cli(&[
        "build",
        ctx.to_str().unwrap(),
        "--progress=quiet",
        "-o",
        "type=oci,dest=-",
    ]);
    assert!(tar.status.success(), "{}", text(&tar.stderr));
    let names: Vec<String> = tar::Archive::new(&tar.stdout[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "index.json"), "{names:?}");

    // du and history over gRPC read the daemon's root.
    let du = d.cli(&["du"]);
    assert!(du.status.success(), "{}", text(&du.stderr));
    let du = text(&du.stdout);
    assert!(du.starts_with("ID\t") && du.contains("Total:"), "{du}");
    assert!(du.lines().count() > 3, "no records in\n{du}");
    let history = d.cli(&["history", "ls"]);
    let listed = text(&history.stdout);
    assert!(history.status.success(), "{}", text(&history.stderr));
    assert_eq!(listed.matches("Completed").count(), 4, "{listed}");
    assert!(listed.contains(ctx.to_str().unwrap()), "{listed}");
    let id = listed
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let inspect = d.cli(&["history", "inspect", &id[..8]]);
    assert!(
        text(&inspect.stdout).contains("Served by:"),
        "{}",
        text(&inspect.stderr)
    );

    // The same commands in-process on the same root say the same.
    let local = s.buildwit(&["history", "ls"]);
    assert_eq!(
        text(&local.stdout)
            .lines()
            .skip(1)
            .map(|l| &l[..27])
            .collect::<Vec<_>>(),
        listed.lines().skip(1).map(|l| &l[..27]).collect::<Vec<_>>()
    );
    // `debug config` through the daemon shows the daemon's configuration.
    let remote = d.cli(&["debug", "config"]);
    assert!(remote.status.success(), "{}", text(&remote.stderr));
    assert_eq!(
        text(&remote.stdout),
        text(&s.buildwit(&["debug", "config"]).stdout)
    );

    // Another user's client gets mirrors of its own: the whole read context is sent
    // again (the build cache is still shared, so every step is cached).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let other = Command::new("setpriv")
        .args(["--reuid", "1000", "--regid", "0", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_buildwit"))
        .args(["--addr", &d.addr, "build", "--progress=rawjson"])
        .arg(&ctx)
        .output()
        .unwrap();
    let b = Build::new(other).ok();
    assert!(b.ran.is_empty(), "ran {:?}", b.ran);
    assert!(
        last_received(&d.log()) > 0,
        "another user reused the mirror"
    );
    assert!(d.log().contains("peer=uid:1000"), "{}", d.log());

    // SIGTERM: a clean exit and the socket removed.
    assert!(d.stop().success(), "{}", d.log());
    assert!(!s.dir.path().join("d.sock").exists());
    assert!(d.log().contains("SIGTERM"), "{}", d.log());
}

#[test]
fn eight_concurrent_builds_share_one_daemon() {
    let s = support::setup();
    let d = Daemon::unix(&s, "d8");
    let contexts: Vec<PathBuf> = (0..8)
        .map(|i| {
            s.context(
                &format!("ctx{i}"),
                &[
                    (
                        "Dockerfile",
                        "FROM BASE\nRUN echo shared > /shared.txt\nCOPY n.txt /n.txt\nRUN cat /n.txt /shared.txt > /out.txt\n",
                    ),
                    ("n.txt", &format!("build {i}\n")),
                ],
            )
        })
        .collect();
    let children: Vec<(usize, PathBuf, Child)> = contexts
        .iter()
        .enumerate()
        .map(|(i, ctx)| {
            let out = s.dir.path().join(format!("out{i}"));
            let child = Command::new(env!("CARGO_BIN_EXE_buildwit"))
                .args(["--addr", &d.addr, "build"])
                .arg(ctx)
                .args(["--progress=rawjson", "-o"])
                .arg(format!("type=local,dest={}", out.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (i, out, child)
        })
        .collect();
    let mut shared_runs = 0;
    for (i, out, child) in children {
        let b = Build::new(child.wait_with_output().unwrap()).ok();
        assert_eq!(
            std::fs::read_to_string(out.join("out.txt")).unwrap(),
            format!("build {i}\nshared\n"),
            "build {i}"
        );
        if b.ran_any("RUN echo shared") {
            shared_runs += 1;
        }
    }
    // The step all eight share ran once: the others waited for it or found it cached.
    assert_eq!(shared_runs, 1, "the shared step ran {shared_runs} times");
    let history = d.cli(&["history", "ls"]);
    assert_eq!(text(&history.stdout).matches("Completed").count(), 8);
}

#[test]
fn bad_requests_get_a_clear_status_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("buildkitd.toml");
    std::fs::write(&config, "").unwrap();
    let sock = dir.path().join("bad.sock");
    let d = Daemon::start(
        &config,
        &dir.path().join("root"),
        &format!("unix://{}", sock.display()),
        dir.path().join("bad.log"),
    );
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\n").unwrap();

    let out = d.cli(&["build", ctx.to_str().unwrap(), "--frontend", "nope.v0"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("error: invalid frontend: nope.v0"),
        "{}",
        text(&out.stderr)
    );
    let out = d.cli(&["build", ctx.to_str().unwrap(), "-o", "type=bogus"]);
    assert!(!out.status.success());
    // A frontend that never returns is stopped at the client's --frontend-timeout.
    let probe = format!("{}/probe.wasm", buildwit_frontend::BUILT_FRONTENDS_DIR);
    let out = d.cli(&[
        "build",
        ctx.to_str().unwrap(),
        "--frontend-file",
        &probe,
        "--opt",
        "mode=loop",
        "--frontend-timeout",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("exceeded the deadline of 1.0s"),
        "{}",
        text(&out.stderr)
    );

    // A raw client sending a malformed stream: no `start` first.
    use buildwit_daemon::grpc::proto;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        let mut client =
            proto::buildwit_client::BuildwitClient::connect(format!("unix://{}", sock.display()))
                .await
                .unwrap();
        let first = proto::BuildClientMessage {
            msg: Some(proto::build_client_message::Msg::Listing(
                proto::LocalListing::default(),
            )),
        };
        client
            .build(tokio_stream::iter([first]))
            .await
            .expect_err("a build without a start message must fail")
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("`start`"), "{}", status.message());

    // A start naming a component that is no component.
    let status = rt.block_on(async {
        let mut client =
            proto::buildwit_client::BuildwitClient::connect(format!("unix://{}", sock.display()))
                .await
                .unwrap();
        let start = proto::BuildClientMessage {
            msg: Some(proto::build_client_message::Msg::Start(proto::BuildStart {
                frontend: Some(proto::build_start::Frontend::Component(proto::Component {
                    path: "junk.wasm".into(),
                    data: b"not wasm".to_vec(),
                })),
                ..Default::default()
            })),
        };
        let mut stream = client
            .build(tokio_stream::iter([start]))
            .await
            .unwrap()
            .into_inner();
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the build of junk succeeded"),
                Err(status) => break status,
            }
        }
    });
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(!status.message().is_empty());

    // Still serving.
    let info = d.cli(&["info"]);
    assert!(info.status.success(), "{}", text(&info.stderr));
    assert!(text(&info.stdout).contains("dockerfile 1.26.0 (stable)"));
    let log = d.log();
    assert!(log.contains("invalid frontend: nope.v0"), "{log}");
    assert!(log.contains("rejected a request"), "{log}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tls_accepts_a_client_certificate_and_rejects_none() {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let issue = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, stem: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(p(&format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(p(&format!("{stem}-key.pem")), key.serialize_pem()).unwrap();
    };
    issue(
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "server",
    );
    issue(vec![], ExtendedKeyUsagePurpose::ClientAuth, "client");
    std::fs::write(p("ca.pem"), ca.pem()).unwrap();
    let config = p("buildkitd.toml");
    std::fs::write(
        &config,
        format!(
            "[grpc.tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
            p("server.pem").display(),
            p("server-key.pem").display(),
            p("ca.pem").display()
        ),
    )
    .unwrap();
    let addr = format!("tcp://127.0.0.1:{}", free_port());
    let d = Daemon::start(&config, &p("root"), &addr, p("tls.log"));
    let ca_flag = p("ca.pem").display().to_string();
    let cert = p("client.pem").display().to_string();
    let key = p("client-key.pem").display().to_string();
    let with_cert = d.cli(&[
        "--tlscacert",
        &ca_flag,
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
        "--tlsservername",
        "localhost",
        "du",
    ]);
    assert!(with_cert.status.success(), "{}", text(&with_cert.stderr));
    assert!(text(&with_cert.stdout).contains("Total:"));

    let without = d.cli(&[
        "--tlscacert",
        &ca_flag,
        "--tlsservername",
        "localhost",
        "du",
    ]);
    assert!(!without.status.success());
    assert!(
        text(&without.stderr).starts_with("error: "),
        "{}",
        text(&without.stderr)
    );
    let plain = d.cli(&["du"]);
    assert!(!plain.status.success());

    // Still serving clients that have a certificate.
    let again = d.cli(&[
        "--tlscacert",
        &ca_flag,
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
        "--tlsservername",
        "localhost",
        "history",
        "ls",
    ]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let log = d.log();
    assert!(
        log.contains("tls accept error"),
        "the refusals are logged: {log}"
    );
}

#[test]
fn a_bad_address_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_buildwit"))
        .args(["--addr", "ftp://x", "du"])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("use unix:///PATH or tcp://HOST:PORT"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn ssh_agents_are_forwarded_from_the_client() {
    let s = support::setup();
    // Its own root, so the daemon runs the steps the in-process build cached.
    let d = Daemon::start(
        &s.config,
        &s.dir.path().join("daemon-root"),
        &format!("unix://{}", s.dir.path().join("ssh.sock").display()),
        s.dir.path().join("ssh.log"),
    );
    let first = Agent::start(s.dir.path(), "first");
    let second = Agent::start(s.dir.path(), "second");
    let ctx = s.context(
        "ssh",
        &[(
            "Dockerfile",
            "FROM BASE\nCOPY sshroot/ /\n\
             RUN --mount=type=ssh ssh-add -L > /default.keys\n\
             RUN --mount=type=ssh,id=other,target=/agent,uid=1000,mode=0660 \
             stat -c %u:%a /agent > /other.stat && SSH_AUTH_SOCK=/agent ssh-add -L > /other.keys\n",
        )],
    );
    copy_program("/usr/bin/ssh-add", &ctx.join("sshroot"));
    let default = format!("default={}", first.socket.display());
    let other = format!("other={}", second.socket.display());
    for (mode, via) in [("in-process", None), ("buildwitd", Some(&d))] {
        let out = s.dir.path().join(format!("out-{mode}"));
        let args = [
            "--ssh",
            &default,
            "--ssh",
            &other,
            "-o",
            &format!("type=local,dest={}", out.display()),
        ];
        let b = match via {
            None => s.build(&ctx, &args),
            Some(d) => d.build(&ctx, &args),
        }
        .ok();
        assert!(
            b.ran_any("ssh-add -L > /default.keys"),
            "{mode}: {:?}",
            b.ran
        );
        let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
        assert_eq!(read("default.keys").trim(), first.public, "{mode}");
        assert_eq!(read("other.keys").trim(), second.public, "{mode}");
        assert_eq!(read("other.stat").trim(), "1000:660", "{mode}");
    }
    // A step that needs an agent the client did not forward fails and says which.
    let ctx = s.context(
        "ssh-missing",
        &[(
            "Dockerfile",
            "FROM BASE\nRUN --mount=type=ssh,id=nope,required=true true\n",
        )],
    );
    let b = d.build(&ctx, &["--ssh", &default]);
    assert!(!b.out.status.success());
    let err = text(&b.out.stderr);
    assert!(err.contains("no SSH key \"nope\""), "{err}");
}

#[test]
fn a_client_that_goes_away_stops_its_running_step() {
    let s = support::setup();
    let d = Daemon::unix(&s, "cancel");
    let ctx = s.context(
        "slow",
        &[(
            "Dockerfile",
            "FROM BASE\nRUN echo started && sleep 600 && touch /never\n",
        )],
    );
    let mut client = Command::new(env!("CARGO_BIN_EXE_buildwit"))
        .args(["--addr", &d.addr, "build", ctx.to_str().unwrap()])
        .arg("--progress=plain")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let containers = || {
        let out = Command::new("runc")
            .arg("--root")
            .arg(s.root.join("runc"))
            .args(["list", "-q"])
            .output()
            .unwrap();
        text(&out.stdout).lines().count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while containers() == 0 {
        assert!(
            Instant::now() < deadline,
            "the step never started:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    client.kill().unwrap();
    client.wait().unwrap();
    // The container goes well before its `sleep 600` would end.
    let deadline = Instant::now() + Duration::from_secs(60);
    while containers() > 0 {
        assert!(
            Instant::now() < deadline,
            "the step still runs:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The daemon goes on serving.
    let other = s.context("other", &[("Dockerfile", "FROM BASE\nRUN echo fine\n")]);
    d.build(&other, &[]).ok();
}

#[test]
fn oci_layouts_are_synced_blob_by_blob() {
    let s = support::setup();
    // An image in a layout directory on the client, with a blob no image names.
    let ctx = s.context(
        "layout-src",
        &[("Dockerfile", "FROM BASE\nRUN echo from-layout > /l.txt\n")],
    );
    let layout = s.dir.path().join("layout");
    s.build(
        &ctx,
        &[
            "-o",
            &format!("type=oci,dest={},tar=false", layout.display()),
        ],
    )
    .ok();
    std::fs::write(
        layout.join("blobs/sha256").join("ab".repeat(32)),
        vec![0; 50_000],
    )
    .unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_desc = &index["manifests"][0];
    let digest = manifest_desc["digest"].as_str().unwrap().to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap(),
    )
    .unwrap();
    let needed = manifest_desc["size"].as_u64().unwrap()
        + manifest["config"]["size"].as_u64().unwrap()
        + manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum::<u64>();

    // A daemon with a root of its own: none of those blobs are in its store.
    let d = Daemon::start(
        &s.config,
        &s.dir.path().join("daemon-root"),
        &format!("unix://{}", s.dir.path().join("layout.sock").display()),
        s.dir.path().join("layout.log"),
    );
    let empty = s.context("empty", &[("Dockerfile", "")]);
    let probe = format!("{}/probe.wasm", buildwit_frontend::BUILT_FRONTENDS_DIR);
    let out = s.dir.path().join("out");
    let identifier = format!("identifier=oci-layout://store/app@{digest}");
    let args = [
        "--frontend-file",
        &probe,
        "--opt",
        "mode=source",
        "--opt",
        &identifier,
        "--oci-layout",
        &format!("store={}", layout.display()),
        "-o",
        &format!("type=local,dest={}", out.display()),
    ];
    d.build(&empty, &args).ok();
    assert_eq!(
        std::fs::read_to_string(out.join("l.txt")).unwrap(),
        "from-layout\n"
    );
    // Exactly the blobs of the image were sent: not index.json, not the stray blob.
    assert_eq!(last_received(&d.log()), needed);
    // Again: cached, nothing sent.
    d.build(&empty, &args).ok();
    assert_eq!(last_received(&d.log()), 0);
}

/// Bytes of the regular files under `dir`.
fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        total += if md.is_dir() {
            tree_size(&e.path())
        } else {
            md.len()
        };
    }
    total
}

#[test]
fn local_cache_directories_through_the_daemon() {
    let s = support::setup();
    let daemon = |name: &str| {
        Daemon::start(
            &s.config,
            &s.dir.path().join(format!("{name}-root")),
            &format!(
                "unix://{}",
                s.dir.path().join(format!("{name}.sock")).display()
            ),
            s.dir.path().join(format!("{name}.log")),
        )
    };
    let a = daemon("a");
    let ctx = s.context(
        "cached",
        &[("Dockerfile", "FROM BASE\nRUN echo step > /s.txt\n")],
    );
    let cache = s.dir.path().join("cache");
    let export = format!("type=local,dest={},mode=max", cache.display());
    let import = format!("type=local,src={}", cache.display());

    // Export: the daemon writes back a whole cache directory.
    let b = a.build(&ctx, &["--export-cache", &export]).ok();
    assert!(b.ran_any("RUN echo step"), "{:?}", b.ran);
    assert!(cache.join("index.json").is_file());
    // It is a cache: an in-process build on an empty root imports it and runs nothing.
    let b = s.build(&ctx, &["--import-cache", &import]).ok();
    assert!(b.ran.is_empty(), "ran {:?}", b.ran);

    // Exporting the same cache again: the client's directory is what the daemon's mirror
    // holds, so nothing comes from the client.
    let b = a.build(&ctx, &["--export-cache", &export]).ok();
    assert!(!b.ran_any("RUN "), "ran {:?}", b.ran);
    assert!(
        b.ran_any(&format!(
            "exporting cache to local cache {}",
            cache.display()
        )),
        "{:?}",
        b.ran
    );
    assert_eq!(last_received(&a.log()), 0);

    // Another daemon with an empty root imports it: every file of it is sent once (with
    // the Dockerfile).
    let other = daemon("b");
    let b = other.build(&ctx, &["--import-cache", &import]).ok();
    assert!(b.ran.is_empty(), "ran {:?}", b.ran);
    let dockerfile = std::fs::metadata(ctx.join("Dockerfile")).unwrap().len();
    assert_eq!(last_received(&other.log()), tree_size(&cache) + dockerfile);

    // The same cache under another path, to the first daemon: the layer blobs are in its
    // store, so only the small files come from the client.
    let copy = s.dir.path().join("cache-copy");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&cache)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    let b = a
        .build(
            &ctx,
            &[
                "--import-cache",
                &format!("type=local,src={}", copy.display()),
            ],
        )
        .ok();
    assert!(b.ran.is_empty(), "ran {:?}", b.ran);
    let received = last_received(&a.log());
    assert!(
        received > 0 && received < 10_000,
        "{received} of {} bytes",
        tree_size(&copy)
    );

    // A cache directory holding a symlink is refused: the daemon writes into its mirror,
    // and a link there would lead it anywhere.
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), "precious").unwrap();
    let linked = s.dir.path().join("linked-cache");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink(&outside, linked.join("blobs")).unwrap();
    let b = a.build(
        &ctx,
        &[
            "--export-cache",
            &format!("type=local,dest={}", linked.display()),
        ],
    );
    assert!(!b.out.status.success());
    let err = text(&b.out.stderr);
    assert!(err.contains("may not hold symlinks"), "{err}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing was written through the link"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("keep")).unwrap(),
        "precious"
    );
}

#[test]
fn uploaded_frontend_files_obey_the_gateway_policy() {
    let s = support::setup();
    let probe = format!("{}/probe.wasm", buildwit_frontend::BUILT_FRONTENDS_DIR);
    let ctx = s.context("policy", &[("Dockerfile", "")]);
    let base = std::fs::read_to_string(&s.config).unwrap();
    for (name, gateway, allowed) in [
        (
            "restricted",
            "allowedRepositories = [\"example.com/ok\"]\n",
            false,
        ),
        ("disabled", "enabled = false\n", false),
        (
            "opted-in",
            "allowedRepositories = [\"example.com/ok\"]\nallowFrontendFiles = true\n",
            true,
        ),
    ] {
        let config = s.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!("{base}[frontend.\"gateway.v0\"]\n{gateway}"),
        )
        .unwrap();
        let d = Daemon::start(
            &config,
            &s.dir.path().join(format!("{name}-root")),
            &format!(
                "unix://{}",
                s.dir.path().join(format!("{name}.sock")).display()
            ),
            s.dir.path().join(format!("{name}.log")),
        );
        let out = d.cli(&["build", ctx.to_str().unwrap(), "--frontend-file", &probe]);
        let stderr = text(&out.stderr);
        if allowed {
            assert!(out.status.success(), "{name}: {stderr}");
        } else {
            assert!(!out.status.success(), "{name}: the upload ran");
            assert!(
                stderr.contains("frontends given as a file (--frontend-file) are not allowed"),
                "{name}: {stderr}"
            );
        }
    }
}

#[test]
fn wildcard_copies_and_hard_links_come_through_the_daemon() {
    let s = support::setup();
    let d = Daemon::unix(&s, "wild");
    let ctx = s.context(
        "wild",
        &[
            (
                "Dockerfile",
                "FROM BASE\nCOPY package*.json /app/\nCOPY . /ctx/\n\
                 RUN stat -c %i /ctx/a /ctx/sub/b > /inodes\n",
            ),
            ("package.json", "{}\n"),
            ("package-lock.json", "{\"lock\":1}\n"),
            ("other.json", "no\n"),
            ("a", "linked\n"),
        ],
    );
    std::fs::create_dir_all(ctx.join("sub")).unwrap();
    std::fs::hard_link(ctx.join("a"), ctx.join("sub/b")).unwrap();
    let out = s.dir.path().join("wild-out");
    d.build(&ctx, &["-o", &format!("type=local,dest={}", out.display())])
        .ok();
    let mut app: Vec<String> = std::fs::read_dir(out.join("app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    app.sort();
    assert_eq!(app, ["package-lock.json", "package.json"]);
    let inodes = std::fs::read_to_string(out.join("inodes")).unwrap();
    let lines: Vec<&str> = inodes.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], lines[1], "a hard link of the context stays one");
}

#[test]
fn a_symlink_out_of_the_context_tells_nothing_of_the_daemon_host() {
    let s = support::setup();
    let d = Daemon::unix(&s, "probe");
    // A root-only file of the daemon's machine, and a name that does not exist.
    let secret = s.dir.path().join("private/secret");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, "FROM scratch\n").unwrap();
    let mut errors = Vec::new();
    for target in [secret.clone(), s.dir.path().join("private/none")] {
        let ctx = s.context(&format!("probe-{}", errors.len()), &[("x", "")]);
        std::os::unix::fs::symlink(&target, ctx.join("Dockerfile")).unwrap();
        let out = d.cli(&["build", ctx.to_str().unwrap()]);
        assert!(!out.status.success());
        errors.push(
            text(&out.stderr)
                .replace("probe-0", "probe-N")
                .replace("probe-1", "probe-N"),
        );
    }
    assert_eq!(
        errors[0], errors[1],
        "the two errors tell the targets apart"
    );
    assert!(!errors[0].contains("FROM scratch"), "{}", errors[0]);
}

#[test]
fn an_unchanged_context_is_not_compared_again_unless_its_mirror_changed() {
    let s = support::setup();
    let d = Daemon::unix(&s, "d");
    let ctx = s.context(
        "ctx",
        &[
            ("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n"),
            ("a.txt", "first\n"),
        ],
    );
    let out = s.dir.path().join("out");
    let local = format!("type=local,dest={}", out.display());
    let unchanged = |d: &Daemon| d.log().matches("a local directory is unchanged").count();
    d.build(&ctx, &[]).ok();
    assert_eq!(unchanged(&d), 0);
    // The same listing as the sync that left the mirror as it is: nothing is compared.
    d.build(&ctx, &["-o", &local]).ok();
    assert!(unchanged(&d) > 0, "{}", d.log());
    assert_eq!(
        std::fs::read_to_string(out.join("a.txt")).unwrap(),
        "first\n"
    );
    // Mirrors removed behind the daemon's back (as a prune does): synced again, whole.
    std::fs::remove_dir_all(s.root.join("sessions")).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    d.build(&ctx, &["-o", &local]).ok();
    assert_eq!(
        std::fs::read_to_string(out.join("a.txt")).unwrap(),
        "first\n"
    );
    assert!(last_received(&d.log()) > 0);
    // An edit is a new listing.
    std::fs::write(ctx.join("a.txt"), "second\n").unwrap();
    d.build(&ctx, &["-o", &local]).ok();
    assert_eq!(
        std::fs::read_to_string(out.join("a.txt")).unwrap(),
        "second\n"
    );
    assert_eq!(last_received(&d.log()), "second\n".len() as u64);
}
