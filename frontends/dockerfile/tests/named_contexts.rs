//! Named build contexts (`context:NAME=VALUE`, BuildKit's `--build-context`): what they
//! change in the LLB.

mod common;

use buildwit_dockerfile::frontend::Dockerfile;
use buildwit_sdk::llb::{self, Definition, OpKind, Source};
use buildwit_sdk::testing::run;
use common::{build, config, gateway, meta_json};

/// `(identifier, attrs, custom name)` of a source op.
type SourceOp = (String, Vec<(String, String)>, String);

/// Every source op.
fn sources(def: &Definition) -> Vec<SourceOp> {
    def.ops
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match &o.kind {
            OpKind::Source(s) => Some((s.identifier.clone(), s.attrs.clone(), custom_name(def, i))),
            _ => None,
        })
        .collect()
}

fn custom_name(def: &Definition, op: usize) -> String {
    def.metadata
        .iter()
        .find(|(p, _)| *p as usize == op)
        .and_then(|(_, m)| m.description.iter().find(|(k, _)| k == "llb.customname"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn exec(def: &Definition) -> (&llb::ExecOp, &llb::Op) {
    def.ops
        .iter()
        .find_map(|o| match &o.kind {
            OpKind::Exec(e) => Some((e, o)),
            _ => None,
        })
        .expect("an exec op")
}

fn attr<'a>(attrs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

#[test]
fn docker_image_replaces_a_stage() {
    let df = "FROM busybox AS base\nRUN echo skipped\nFROM base\nRUN ls\n";
    let gw = gateway(df).option("context:base", "docker-image://alpine:3.20");
    let def = build(&gw).definition.unwrap();
    let src = sources(&def);
    assert_eq!(src.len(), 1, "{src:?}");
    assert_eq!(src[0].0, "docker-image://docker.io/library/alpine:3.20");
    assert_eq!(src[0].2, "[context base] alpine:3.20");
    // The stage's own commands are gone; the image's config applies to the next stage,
    // including its platform.
    let (e, op) = exec(&def);
    assert_eq!(e.meta.args, ["/bin/sh", "-c", "ls"]);
    assert!(
        e.meta.env.contains(&"ALPINE=1".to_string()),
        "{:?}",
        e.meta.env
    );
    assert_eq!(e.meta.cwd, "/home");
    assert_eq!(op.platform.as_ref().unwrap().architecture, "arm64");
}

#[test]
fn docker_image_replaces_an_image_by_its_normalized_name() {
    for from in ["busybox", "busybox:latest", "docker.io/library/busybox"] {
        let gw = gateway(&format!("FROM {from}\nRUN ls\n"))
            .option("context:busybox", "docker-image://alpine:3.20");
        let out = build(&gw);
        let def = out.definition.clone().unwrap();
        let src = sources(&def);
        assert_eq!(src.len(), 1);
        assert_eq!(src[0].0, "docker-image://docker.io/library/alpine:3.20");
        // The platform is the build's, not the context image's.
        let (e, op) = exec(&def);
        assert_eq!(op.platform.as_ref().unwrap().architecture, "amd64");
        assert!(e.meta.env.contains(&"ALPINE=1".to_string()));
        // The context's config is the base image config.
        let base = meta_json(&out, "containerimage.base.config");
        assert_eq!(base["architecture"], "arm64");
    }
    // A tagged reference needs the tag in the name.
    let gw = gateway("FROM alpine:3.20\n").option("context:alpine", "docker-image://busybox");
    let src = sources(&build(&gw).definition.unwrap());
    assert_eq!(
        src[0].0,
        "docker-image://docker.io/library/alpine:3.20@".to_string() + common::DIGEST
    );
}

#[test]
fn platform_specific_name_wins() {
    let gw = gateway("FROM busybox\nRUN ls\n")
        .option("context:busybox", "docker-image://scratch")
        .option("context:busybox::linux/amd64", "docker-image://alpine:3.20");
    let src = sources(&build(&gw).definition.unwrap());
    assert_eq!(src[0].0, "docker-image://docker.io/library/alpine:3.20");
    assert_eq!(src[0].2, "[context busybox::linux/amd64] alpine:3.20");
}

#[test]
fn scratch_context() {
    let gw =
        gateway("FROM busybox\nCOPY a /a\n").option("context:busybox", "docker-image://scratch");
    let out = build(&gw);
    let src = sources(out.definition.as_ref().unwrap());
    assert_eq!(src.len(), 1);
    assert_eq!(src[0].0, "local://context");
    assert_eq!(
        meta_json(&out, "containerimage.config")["rootfs"]["diff_ids"],
        serde_json::Value::Null
    );
}

#[test]
fn local_context_follows_the_paths_used() {
    let df = "FROM busybox\nCOPY --from=src /app/main.go /x\nCOPY --from=src docs /d\n";
    let gw = gateway(df)
        .option("context:src", "local:other")
        .option("sharedkey:localdir:src", "k")
        .file("other", ".dockerignore", "*.md\n");
    let def = build(&gw).definition.unwrap();
    let other: Vec<_> = sources(&def)
        .into_iter()
        .filter(|(id, ..)| id == "local://other")
        .collect();
    // As in BuildKit, each `--from` of a name that is not a stage is a state of its own,
    // and each follows only the paths copied from it.
    assert_eq!(other.len(), 2, "{other:?}");
    let (_, attrs, name) = &other[0];
    assert_eq!(name, "[context src] load from client");
    assert_eq!(attr(attrs, "local.followpaths"), Some(r#"["app/main.go"]"#));
    assert_eq!(attr(attrs, "local.excludepatterns"), Some(r#"["*.md"]"#));
    assert_eq!(attr(attrs, "local.sharedkeyhint"), Some("context:src-k"));
    assert_eq!(attr(&other[1].1, "local.followpaths"), Some(r#"["docs"]"#));
    // Used as a base, the whole context is needed.
    let base = gateway("FROM src\nRUN ls\n")
        .option("context:src", "local:other")
        .file("other", "a", "x");
    let def = build(&base).definition.unwrap();
    let (_, attrs, _) = sources(&def)
        .into_iter()
        .find(|(id, ..)| id == "local://other")
        .unwrap();
    assert_eq!(attr(&attrs, "local.followpaths"), None);
    // The .dockerignore was read first from its own, evaluated source.
    let first = gw
        .solved()
        .into_iter()
        .find(|d| sources(d).iter().any(|(id, ..)| id == "local://other"))
        .unwrap();
    let (_, attrs, name) = &sources(&first)[0];
    assert_eq!(name, "[context src] load .dockerignore");
    assert_eq!(
        attr(attrs, "local.followpaths"),
        Some(r#"[".dockerignore"]"#)
    );
    assert_eq!(
        attr(attrs, "local.sharedkeyhint"),
        Some("context:src-.dockerignore")
    );
}

#[test]
fn input_context_is_spliced_into_the_graph() {
    let input = Source::image("busybox")
        .unwrap()
        .state()
        .file(llb::FileAction::mkdir("/made", 0o755, false, None))
        .marshal();
    let cfg = config("amd64", &["PATH=/bin", "FROM_INPUT=1"], "/work");
    let md = serde_json::json!({
        "containerimage.config": buildwit_dockerfile::subrequests::base64(cfg.as_bytes())
    });
    let gw = gateway("FROM base\nRUN ls\n")
        .input("in", input.clone())
        .option("context:base", "input:in")
        .option("input-metadata:in", &md.to_string());
    let def = build(&gw).definition.unwrap();
    assert!(
        !sources(&def)
            .iter()
            .any(|(id, ..)| id.starts_with("buildwit-input://"))
    );
    let mkdir = def
        .ops
        .iter()
        .position(|o| matches!(&o.kind, OpKind::File(_)))
        .unwrap();
    let (e, op) = exec(&def);
    assert_eq!(op.inputs[0].op as usize, mkdir);
    assert!(e.meta.env.contains(&"FROM_INPUT=1".to_string()));
    assert_eq!(e.meta.cwd, "/work");
    assert_eq!(def.ops.len(), input.ops.len() + 1);
}

#[test]
fn git_and_http_contexts() {
    let df = "FROM scratch\nCOPY --from=repo / /r\nCOPY --from=file context /f\n";
    let gw = gateway(df)
        .option(
            "context:repo",
            "https://github.com/moby/buildkit.git#v0.1:docs",
        )
        .option("context:file", "https://example.com/file.txt");
    let src = sources(&build(&gw).definition.unwrap());
    let git = src
        .iter()
        .find(|(id, ..)| id.starts_with("git://"))
        .unwrap();
    assert_eq!(git.0, "git://github.com/moby/buildkit.git#v0.1:docs");
    assert_eq!(
        git.2,
        "[internal] load git source https://github.com/moby/buildkit.git#v0.1:docs"
    );
    let http = src
        .iter()
        .find(|(id, ..)| id.starts_with("https://"))
        .unwrap();
    assert_eq!(http.0, "https://example.com/file.txt");
    assert_eq!(attr(&http.1, "http.filename"), Some("context"));
    assert_eq!(http.2, "[context file] https://example.com/file.txt");
}

#[test]
fn bad_contexts_name_the_stage() {
    let err = |value: &str| {
        let gw = gateway("FROM scratch\nFROM busybox AS base\nRUN ls\n")
            .option("context:base", value)
            .option("target", "base");
        run::<Dockerfile>(&gw).unwrap_err()
    };
    let e = err("bogus");
    assert_eq!(e.message, "invalid context specifier bogus for base");
    assert_eq!(e.location.unwrap().ranges[0].start.line, 2);
    assert_eq!(
        err("foo:bar").message,
        "unsupported context source foo for base"
    );
    assert_eq!(
        err("input:missing").message,
        "invalid input missing for base"
    );
    assert!(
        err("oci-layout://store/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
            .message
            .contains("is not supported")
    );
}
