//! The `buildwit` command end to end: real binary, real components, real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use buildwit_frontend::BUILT_FRONTENDS_DIR;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn shared() -> PathBuf {
    PathBuf::from(env!("BUILDWIT_SHARED_DIR"))
}

fn root() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("buildwit-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn buildwit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_buildwit"))
        .args(args)
        .env("BUILDWIT_ROOT", root())
        .env(
            "BUILDWIT_CONFIG",
            workspace().join("host/cli/tests/empty.toml"),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn toml_spec() -> String {
    format!("{BUILT_FRONTENDS_DIR}/toml-spec.wasm")
}

#[test]
fn builds_the_example_with_a_frontend_file() {
    let example = workspace().join("examples/toml-spec");
    let out = buildwit(&[
        "build",
        "--frontend-file",
        &toml_spec(),
        example.to_str().unwrap(),
        "--dump-llb",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 4, "{lines:?}");
    // The terminal op comes last and names the result.
    let last = lines.last().unwrap();
    assert_eq!(last["Op"]["Op"], serde_json::json!({}));
    assert!(text(&out.stdout).contains("local://context"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("frontend toml-spec 0.1.0 (stable)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("speaking buildwit:frontend@0.1.0"),
        "{stderr}"
    );

    let dot = buildwit(&[
        "build",
        "--frontend-file",
        &toml_spec(),
        example.to_str().unwrap(),
        "--dump-llb",
        "--dot",
    ]);
    assert!(
        text(&dot.stdout).starts_with("digraph"),
        "{}",
        text(&dot.stdout)
    );
}

#[test]
fn a_spec_error_names_file_and_line() {
    let dir = root().join("bad-spec");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("build.toml"),
        "[[step]]\nrun = \"a\"\n\nbogus = 1\n",
    )
    .unwrap();
    let out = buildwit(&[
        "build",
        "--frontend-file",
        &toml_spec(),
        dir.to_str().unwrap(),
        "--dump-llb",
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("build.toml:"), "{stderr}");
    assert!(stderr.contains("bogus"), "{stderr}");
}

#[test]
fn a_missing_spec_is_a_clear_error() {
    let dir = root().join("empty-context");
    std::fs::create_dir_all(&dir).unwrap();
    let out = buildwit(&[
        "build",
        "--frontend-file",
        &toml_spec(),
        dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("failed to read build.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn unknown_frontends_get_buildkits_error() {
    let out = buildwit(&["build", "--frontend", "nosuch.v0", "."]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid frontend: nosuch.v0"),
        "{}",
        text(&out.stderr)
    );
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn dump_llb_reads_buildkit_definitions() {
    let case = shared().join("conformance/dockerfile/features-mix");
    let pb = std::fs::File::open(case.join("expected.llb.pb")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_buildwit"))
        .args(["debug", "dump-llb"])
        .stdin(pb)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = std::fs::read_to_string(case.join("expected.llb.jsonl")).unwrap();
    let parse = |s: &str| -> Vec<serde_json::Value> {
        s.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert_eq!(parse(&text(&out.stdout)), parse(&expected));
}

#[test]
fn inspect_shows_the_contract() {
    let out = buildwit(&["frontend", "inspect", &toml_spec()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("name:     toml-spec"), "{stdout}");
    assert!(
        stdout.contains("wit:      buildwit:frontend@0.1.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("exports:  buildwit:frontend/builder@0.1.0"),
        "{stdout}"
    );
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn debug_config_prints_the_effective_config() {
    let seed = shared().join("seeds/buildkitd.toml");
    let out = buildwit(&["--config", seed.to_str().unwrap(), "debug", "config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("max-parallelism = 4"),
        "{}",
        text(&out.stdout)
    );
    // The seed's [ghacache] tables are not BuildKit keys: we say so.
    assert!(
        text(&out.stderr).contains("ghacache"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn builds_a_dockerfile_with_the_builtin_frontend() {
    let example = workspace().join("examples/hello");
    let out = buildwit(&["build", example.to_str().unwrap(), "--dump-llb"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("frontend dockerfile 1.26.0 (stable) from dockerfile.v0"),
        "{}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("\"llb.customname\":\"[build 1/2] COPY hello.txt /srv/hello.txt\""),
        "{stdout}"
    );
    let all = stdout.lines().count();

    // --target stops at the first stage; -f names the file explicitly.
    let dockerfile = example.join("Dockerfile");
    let out = buildwit(&[
        "build",
        example.to_str().unwrap(),
        "-f",
        dockerfile.to_str().unwrap(),
        "--target",
        "build",
        "--dump-llb",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).lines().count() < all);
}

#[test]
fn a_dockerfile_error_names_file_and_line() {
    let dir = root().join("bad-dockerfile");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nFOO bar\n").unwrap();
    let out = buildwit(&["build", dir.to_str().unwrap(), "--dump-llb"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(stderr.contains("unknown instruction: FOO"), "{stderr}");
}

#[test]
fn a_disabled_frontend_is_refused() {
    let dir = root().join("disabled");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("buildkitd.toml");
    std::fs::write(&config, "[frontend.\"dockerfile.v0\"]\nenabled = false\n").unwrap();
    let example = workspace().join("examples/hello");
    let out = buildwit(&[
        "--config",
        config.to_str().unwrap(),
        "build",
        example.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid frontend: dockerfile.v0"),
        "{}",
        text(&out.stderr)
    );
}

fn config_file(name: &str, text: &str) -> String {
    let dir = root().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("buildkitd.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn gateway(config: Option<&str>, source: &str) -> Output {
    let example = workspace().join("examples/hello");
    let mut args = Vec::new();
    if let Some(c) = config {
        args.extend(["--config", c]);
    }
    let source = format!("source={source}");
    args.extend([
        "build",
        example.to_str().unwrap(),
        "--frontend",
        "gateway.v0",
        "--opt",
        &source,
        "--dump-llb",
    ]);
    buildwit(&args)
}

#[test]
fn docker_dockerfile_references_are_served_by_the_builtin_components() {
    let out = gateway(None, "docker/dockerfile:1");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("frontend dockerfile 1.26.0 (stable) from docker/dockerfile:1 (built-in dockerfile 1.26.0 stable)"), "{stderr}");

    let out = gateway(None, "docker.io/docker/dockerfile-upstream:1.7-labs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("frontend dockerfile 1.26.0 (labs)"),
        "{}",
        text(&out.stderr)
    );

    // A pin of another version is served too, offline, and said so.
    let out = gateway(None, "docker/dockerfile:1.4.3");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "WARNING: docker/dockerfile:1.4.3 pins Dockerfile frontend 1.4.3; it is served by the built-in 1.26.0"
        ),
        "{}",
        text(&out.stderr)
    );

    let out = gateway(None, "docker/dockerfile:1.99");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("WARNING: docker/dockerfile:1.99 asks for a newer Dockerfile frontend"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn gateway_policy_is_buildkits() {
    let allow = config_file(
        "allow",
        "[frontend.\"gateway.v0\"]\nallowedRepositories = [\"docker/dockerfile\"]\n",
    );
    assert!(
        gateway(Some(&allow), "docker.io/docker/dockerfile:1.7-labs")
            .status
            .success()
    );
    let out = gateway(Some(&allow), "docker/dockerfile-upstream:1");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains("'docker/dockerfile-upstream:1' is not an allowed gateway source"),
        "{}",
        text(&out.stderr)
    );

    let off = config_file(
        "gateway-off",
        "[frontend.\"gateway.v0\"]\nenabled = false\n",
    );
    let out = gateway(Some(&off), "docker/dockerfile:1");
    assert!(
        text(&out.stderr).contains("invalid frontend: gateway.v0"),
        "{}",
        text(&out.stderr)
    );

    // Any other reference is a Wasm frontend image from its registry; with no network and
    // no earlier pull, the error says both.
    let out = gateway(None, "example.com/someone/frontend:1");
    let err = text(&out.stderr);
    assert!(
        err.contains("frontend example.com/someone/frontend:1") && err.contains("never pulled"),
        "{err}"
    );
}

fn context_with(name: &str, dockerfile: &str) -> PathBuf {
    let dir = root().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir
}

#[test]
fn syntax_directives_forward_through_gateway_v0_offline() {
    let example = workspace().join("examples/hello");
    let out = buildwit(&["build", example.to_str().unwrap(), "--dump-llb"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("served by docker/dockerfile:1 (built-in dockerfile 1.26.0 stable)"),
        "{stderr}"
    );

    // The labs channel: a labs-only flag fails through :1 and works through :1-labs.
    let labs = "FROM scratch\nRUN --device=vendor.com/gpu=all true\n";
    let stable = context_with(
        "device-stable",
        &format!("# syntax=docker/dockerfile:1\n{labs}"),
    );
    let out = buildwit(&["build", stable.to_str().unwrap(), "--dump-llb"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("only supported in Dockerfile frontend 1.14.0-labs or later"),
        "{}",
        text(&out.stderr)
    );
    let lab = context_with(
        "device-labs",
        &format!("# syntax=docker/dockerfile:1-labs\n{labs}"),
    );
    let out = buildwit(&["build", lab.to_str().unwrap(), "--dump-llb"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("vendor.com/gpu=all"),
        "{}",
        text(&out.stdout)
    );

    // BUILDKIT_SYNTAX wins over the directive.
    let out = buildwit(&[
        "build",
        stable.to_str().unwrap(),
        "--build-arg",
        "BUILDKIT_SYNTAX=docker/dockerfile:1-labs",
        "--dump-llb",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_syntax_directive_cannot_reach_a_disabled_gateway() {
    let off = config_file(
        "gateway-off-syntax",
        "[frontend.\"gateway.v0\"]\nenabled = false\n",
    );
    let example = workspace().join("examples/hello");
    let out = buildwit(&[
        "--config",
        &off,
        "build",
        example.to_str().unwrap(),
        "--dump-llb",
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("invalid frontend: gateway.v0"), "{stderr}");
    assert!(stderr.contains("Dockerfile:1"), "{stderr}");
}

#[test]
fn a_call_the_frontend_does_not_answer_is_refused() {
    let example = workspace().join("examples/toml-spec");
    let call = |what: &str| {
        buildwit(&[
            "build",
            "--frontend-file",
            &toml_spec(),
            example.to_str().unwrap(),
            "--call",
            what,
        ])
    };
    let out = call("outline");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unsupported request frontend.outline"),
        "{stderr}"
    );
    // describe lists what it answers: describe alone.
    let out = call("describe");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("subrequests.describe"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn calls_and_checks() {
    let dir = context_with(
        "lint",
        "# check=error=false\nFROM scratch as Build\nMAINTAINER someone\nCOPY . /\n\n# the final image\nFROM scratch AS final\nCOPY --from=build / /\n",
    );
    let out = buildwit(&["build", dir.to_str().unwrap(), "--call", "targets"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("build") && stdout.contains("final"),
        "{stdout}"
    );

    let out = buildwit(&["build", dir.to_str().unwrap(), "--call", "check"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("MaintainerDeprecated"), "{stdout}");
    assert!(stdout.contains("FromAsCasing"), "{stdout}");

    // During a build the same findings are warnings with their line.
    let out = buildwit(&["build", dir.to_str().unwrap(), "--dump-llb"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("WARNING: MaintainerDeprecated"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_build_context_gets_a_new_local_unique_per_session() {
    let ctx = root().join("unique");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY a /a\n").unwrap();
    std::fs::write(ctx.join("a"), "a\n").unwrap();
    let unique = || {
        let out = buildwit(&["build", ctx.to_str().unwrap(), "--dump-llb"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let line: serde_json::Value = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .find(|v: &serde_json::Value| {
                v["Op"]["Op"]["source"]["identifier"] == "local://context"
            })
            .unwrap_or_else(|| panic!("no context source: {stdout}"));
        // As BuildKit's: the attribute, its capability, and a 25-character id.
        assert_eq!(line["OpMetadata"]["caps"]["source.local.unique"], true);
        let id = line["Op"]["Op"]["source"]["attrs"]["local.unique"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(id.len(), 25, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
        id
    };
    assert_ne!(unique(), unique());
}
