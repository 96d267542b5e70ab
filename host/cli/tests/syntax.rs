//! `# syntax=` with Wasm frontend images: pushed by `buildwit frontend push` to a real
//! registry, resolved, pulled once, compiled once, and usable offline afterwards.

mod support;

use buildwit_frontend::BUILT_FRONTENDS_DIR;
use support::{setup, text};

const SPEC: &str = "workdir = \"/app\"\n[[step]]\nfile = { path = \"/app/VERSION\", content = \"1.0.0\\n\", mode = 0o644 }\n";

#[test]
fn syntax_frontends_from_a_registry() {
    let mut s = setup();
    let host = s.image.split('/').next().unwrap().to_string();
    let reference = format!("{host}/buildwit/toml-spec:1");
    let component = format!("{BUILT_FRONTENDS_DIR}/toml-spec.wasm");

    // Push: the component is checked, then published as a Wasm artifact.
    let out = s.buildwit(&["frontend", "push", &component, &reference]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pushed = text(&out.stdout);
    let digest = pushed
        .split('@')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let manifest = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.title"],
        "toml-spec"
    );
    // Something that is not a component is refused before anything is pushed.
    let not_wasm = s.dir.path().join("not.wasm");
    std::fs::write(&not_wasm, b"\0asm junk").unwrap();
    let out = s.buildwit(&[
        "frontend",
        "push",
        not_wasm.to_str().unwrap(),
        &format!("{host}/bad:1"),
    ]);
    assert!(!out.status.success());

    // A spec whose first line names the frontend image.
    let ctx = s.context(
        "spec",
        &[("build.toml", &format!("# syntax={reference}\n{SPEC}"))],
    );
    let file = ctx.join("build.toml");
    let build = |s: &support::Setup| {
        s.buildwit(&[
            "build",
            ctx.to_str().unwrap(),
            "-f",
            file.to_str().unwrap(),
            "--progress=plain",
            "--dump-llb",
        ])
    };
    let out = build(&s);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("served by {reference}@{digest}")),
        "{err}"
    );
    assert!(
        text(&out.stdout).contains("/app/VERSION"),
        "{}",
        text(&out.stdout)
    );

    // Named on a Dockerfile's first line, the plugin is told to read `Dockerfile` (as
    // buildx tells it), and its errors name it, not the Dockerfile frontend.
    let dockerfile = s.context(
        "spec-dockerfile",
        &[("Dockerfile", &format!("# syntax={reference}\n{SPEC}"))],
    );
    let out = s.buildwit(&["build", dockerfile.to_str().unwrap(), "--dump-llb"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("/app/VERSION"));
    std::fs::write(
        dockerfile.join("Dockerfile"),
        format!("# syntax={reference}\nworkdir = [\n"),
    )
    .unwrap();
    let out = s.buildwit(&["build", dockerfile.to_str().unwrap(), "--dump-llb"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("(frontend {reference}@{digest})")),
        "{err}"
    );

    let out = s.buildwit(&["frontend", "ls"]);
    let listing = text(&out.stdout);
    assert!(
        listing.contains(&reference) && listing.contains("toml-spec"),
        "{listing}"
    );

    // The registry goes away: the tag resolves to the digest last seen, with a warning;
    // a reference pinned by digest needs no network at all.
    s.stop_registry();
    let out = build(&s);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("using ") && err.contains("last seen"), "{err}");
    std::fs::write(
        &file,
        format!("# syntax={host}/buildwit/toml-spec@{digest}\n{SPEC}"),
    )
    .unwrap();
    let out = build(&s);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("last seen"),
        "{}",
        text(&out.stderr)
    );

    // Removing it from the store: now the offline build has nothing to fall back to.
    let out = s.buildwit(&["frontend", "rm", &reference]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("deleted sha256:"),
        "{}",
        text(&out.stdout)
    );
    std::fs::write(&file, format!("# syntax={reference}\n{SPEC}")).unwrap();
    let out = build(&s);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("frontend {reference}")) && err.contains("never pulled"),
        "{err}"
    );
}

#[test]
fn a_frontend_image_that_forwards_to_the_dockerfile_frontend() {
    let s = setup();
    let host = s.image.split('/').next().unwrap().to_string();
    let probe = format!("{host}/buildwit/probe:1");
    let out = s.buildwit(&[
        "frontend",
        "push",
        &format!("{BUILT_FRONTENDS_DIR}/probe.wasm"),
        &probe,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ctx = s.context(
        "forwarded",
        &[
            ("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n"),
            ("a.txt", "a\n"),
        ],
    );
    let out = s.buildwit(&[
        "build",
        ctx.to_str().unwrap(),
        "--frontend",
        "gateway.v0",
        "--opt",
        &format!("source={probe}"),
        "--opt",
        "mode=forward",
        "--opt",
        "to=dockerfile.v0",
        "--progress=plain",
        "-o",
        s.dir.path().join("files").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("frontend probe") && err.contains(&probe),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(s.dir.path().join("files/a.txt")).unwrap(),
        "a\n"
    );
}
