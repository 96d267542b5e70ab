//! `toml-spec`: a frontend that builds an image from a small TOML spec.
//!
//! It is written only against `buildwit-sdk`, the way a third-party frontend would be:
//! it reads the spec from the `dockerfile` local (option `filename`, default `build.toml`),
//! resolves the base image through the gateway, emits one LLB step per `[[step]]` and
//! returns the image config as `containerimage.config`.
//!
//! ```toml
//! from = "busybox:1.36"          # omit for scratch
//! workdir = "/app"
//! env = { GREETING = "hello" }
//!
//! [[step]]
//! copy = ["app/", "/app/"]       # from the build context
//! [[step]]
//! run = "make"                   # /bin/sh -c
//! cache = "/root/.cache"         # optional cache mount
//! [[step]]
//! file = { path = "/etc/motd", content = "hi\n", mode = 0o644 }
//!
//! [image]
//! entrypoint = ["/app/run"]
//! cmd = []
//! labels = { "org.opencontainers.image.title" = "x" }
//! ```

use std::collections::BTreeMap;

use buildwit_sdk::image::ImageConfig;
use buildwit_sdk::llb::{
    self, CacheSharing, CopyOptions, FileAction, Metadata, MountSpec, Platform, Source, State,
};
use buildwit_sdk::{
    BuildResult, Client, Error, Frontend, FrontendInfo, ResolveImageRequest, ResolveMode,
};
use serde::Deserialize;
use serde_json::json;

/// The spec file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    from: Option<String>,
    platform: Option<String>,
    workdir: Option<String>,
    user: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default, rename = "step")]
    steps: Vec<Step>,
    #[serde(default)]
    image: ImageSpec,
}

/// One build step: exactly one of `run`, `copy`, `file`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    run: Option<String>,
    copy: Option<(String, String)>,
    file: Option<FileSpec>,
    /// A cache mount for `run`.
    cache: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    path: String,
    content: String,
    #[serde(default = "default_mode")]
    mode: i32,
}

fn default_mode() -> i32 {
    0o644
}

/// Settings of the resulting image config.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ImageSpec {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The frontend.
pub struct TomlSpec;

impl Frontend for TomlSpec {
    fn info() -> FrontendInfo {
        FrontendInfo::new("toml-spec", env!("CARGO_PKG_VERSION"), "stable")
    }

    fn build(client: &dyn Client) -> Result<BuildResult, Error> {
        let filename = client
            .option("filename")
            .unwrap_or_else(|| "build.toml".into());
        let text = read_spec(client, &filename)?;
        let spec: Spec = toml::from_str(&text).map_err(|e| spec_error(&filename, &text, &e))?;
        let platform = match client.option("platform").or(spec.platform.clone()) {
            Some(p) => Platform::parse(&p).map_err(|e| Error::invalid(e).at(&filename, 1, 1))?,
            None => client.default_platform(),
        };

        let (mut state, mut config) = base(client, &spec, &platform, &filename)?;
        if let Some(dir) = &spec.workdir {
            state = state.dir(dir);
            let mkdir = FileAction::mkdir(state.get_dir(), 0o755, true, None);
            state = state.file_with(mkdir, Metadata::new().custom_name(format!("WORKDIR {dir}")));
            config.set_working_dir(state.get_dir());
        }
        if let Some(user) = &spec.user {
            state = state.user(user.clone());
            config.set_user(user);
        }
        for (k, v) in &spec.env {
            state = state.env(k.clone(), v.clone());
            config.set_env(k, v);
        }
        let context = Source::local("context")
            .attr("local.sharedkeyhint", "context")
            .metadata(Metadata::new().custom_name("[internal] load build context"))
            .state();

        let total = spec.steps.len();
        for (i, step) in spec.steps.iter().enumerate() {
            let (title, next) = match (&step.run, &step.copy, &step.file) {
                (Some(cmd), None, None) => {
                    let title = format!("RUN {cmd}");
                    let mut exec = state.run_shell(cmd);
                    if let Some(dest) = &step.cache {
                        exec = exec.mount(MountSpec::cache(dest, dest, CacheSharing::Shared));
                    }
                    let name = format!("[{}/{total}] {title}", i + 1);
                    (
                        title,
                        exec.metadata(Metadata::new().custom_name(name))
                            .build()
                            .root(),
                    )
                }
                (None, Some((src, dest)), None) => {
                    let title = format!("COPY {src} {dest}");
                    let action = FileAction::copy(&context, src, dest, CopyOptions::default());
                    let name = format!("[{}/{total}] {title}", i + 1);
                    (
                        title,
                        state.file_with(action, Metadata::new().custom_name(name)),
                    )
                }
                (None, None, Some(f)) => {
                    let title = format!("FILE {}", f.path);
                    let action = FileAction::mkfile(&f.path, f.mode, f.content.as_bytes());
                    let name = format!("[{}/{total}] {title}", i + 1);
                    (
                        title,
                        state.file_with(action, Metadata::new().custom_name(name)),
                    )
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "step {}: give exactly one of run, copy or file",
                        i + 1
                    ))
                    .at(&filename, 1, 1));
                }
            };
            state = next;
            config.add_history(&title, "buildwit toml-spec", false);
        }

        if let Some(ep) = &spec.image.entrypoint {
            config.set_entrypoint(&ep.iter().map(String::as_str).collect::<Vec<_>>());
        }
        if let Some(cmd) = &spec.image.cmd {
            config.set_cmd(&cmd.iter().map(String::as_str).collect::<Vec<_>>());
        }
        for (k, v) in &spec.image.labels {
            config.set_label(k, v);
        }

        let reference = client.solve_definition(state.marshal())?;
        Ok(BuildResult::from_ref(reference).with_image_config(&config))
    }
}

/// Read the spec from the `dockerfile` local.
fn read_spec(client: &dyn Client, filename: &str) -> Result<String, Error> {
    let local = Source::local("dockerfile")
        .attr("local.followpaths", json!([filename]).to_string())
        .attr("local.sharedkeyhint", filename)
        .metadata(
            Metadata::new()
                .custom_name(format!("[internal] load build definition from {filename}")),
        )
        .state();
    let reference = client
        .solve_definition(local.marshal())?
        .ok_or_else(|| Error::internal("a local source solved to scratch"))?;
    let data = reference.read_file(filename).map_err(|mut e| {
        e.message = format!("failed to read {filename}: {}", e.message);
        e
    })?;
    String::from_utf8(data).map_err(|_| Error::invalid(format!("{filename} is not UTF-8")))
}

/// A TOML error with the line it points at.
fn spec_error(filename: &str, text: &str, err: &toml::de::Error) -> Error {
    let line = err
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() as u32 + 1)
        .unwrap_or(1);
    let message = err.message().trim_end().to_string();
    Error::invalid(format!("{filename}:{line}: {message}")).at(filename, line, line)
}

/// The base state and image config: the `from` image, resolved through the gateway, or
/// scratch.
fn base(
    client: &dyn Client,
    spec: &Spec,
    platform: &Platform,
    filename: &str,
) -> Result<(State, ImageConfig), Error> {
    let Some(from) = &spec.from else {
        return Ok((
            llb::scratch().platform(platform.clone()),
            ImageConfig::scratch(platform),
        ));
    };
    let reference = buildwit_sdk::reference::ImageRef::parse(from)
        .map_err(|e| Error::invalid(format!("from = {from:?}: {e}")).at(filename, 1, 1))?
        .normalized();
    let resolved = client.resolve_image_config(ResolveImageRequest {
        ref_: reference.clone(),
        platform: Some(platform.clone()),
        resolve_mode: ResolveMode::Default,
        log_name: format!("[internal] load metadata for {reference}"),
    })?;
    let config = ImageConfig::parse(&resolved.config)
        .map_err(|e| Error::invalid(format!("{reference}: {}", e.message)))?;
    let pinned = match reference.split_once('@') {
        Some(_) => reference.clone(),
        None => format!("{reference}@{}", resolved.digest),
    };
    let state = Source::image(&pinned)
        .map_err(Error::invalid)?
        .platform(platform.clone())
        .metadata(Metadata::new().custom_name(format!("FROM {reference}")))
        .state()
        .platform(platform.clone());
    Ok((config.apply(state), config))
}

buildwit_sdk::export_frontend!(TomlSpec);

#[cfg(test)]
mod tests {
    use super::*;
    use buildwit_sdk::llb::{FileActionKind, OpKind};
    use buildwit_sdk::testing::{MemoryGateway, run};
    use serde_json::Value;

    const BUSYBOX: &str = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]},"history":[{"created_by":"base"}]}"#;

    fn gateway(spec: &str) -> MemoryGateway {
        MemoryGateway::new()
            .file("dockerfile", "build.toml", spec)
            .image(
                "docker.io/library/busybox:1.36",
                "sha256:1111111111111111111111111111111111111111111111111111111111111111",
                BUSYBOX,
            )
    }

    const SPEC: &str = r#"
from = "busybox:1.36"
workdir = "/app"
env = { GREETING = "hello" }

[[step]]
copy = ["app/", "/app/"]

[[step]]
run = "echo \"$GREETING\" > /app/motd"

[[step]]
file = { path = "/app/VERSION", content = "1.0.0\n", mode = 0o644 }

[[step]]
run = "sh /app/check.sh"
cache = "/root/.cache"

[image]
entrypoint = ["/bin/sh", "/app/run.sh"]
"#;

    #[test]
    fn builds_a_multi_step_graph_on_a_resolved_image() {
        let out = run::<TomlSpec>(&gateway(SPEC)).unwrap();
        let def = out.definition.as_ref().unwrap();
        let kinds: Vec<&str> = def
            .ops
            .iter()
            .map(|o| match &o.kind {
                OpKind::Source(s) if s.identifier.starts_with("docker-image://") => "image",
                OpKind::Source(_) => "local",
                OpKind::File(_) => "file",
                OpKind::Exec(_) => "exec",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            ["image", "file", "local", "file", "exec", "file", "exec"]
        );
        let OpKind::Source(img) = &def.ops[0].kind else {
            panic!()
        };
        assert!(img.identifier.ends_with(
            "busybox:1.36@sha256:1111111111111111111111111111111111111111111111111111111111111111"
        ));
        let OpKind::Exec(run) = &def.ops[4].kind else {
            panic!()
        };
        assert_eq!(run.meta.cwd, "/app");
        assert!(run.meta.env.contains(&"GREETING=hello".to_string()));
        assert!(run.meta.env.contains(&"PATH=/usr/bin:/bin".to_string()));
        let OpKind::Exec(cached) = &def.ops[6].kind else {
            panic!()
        };
        assert!(cached.mounts.iter().any(|m| m.dest == "/root/.cache"));
        let OpKind::File(f) = &def.ops[5].kind else {
            panic!()
        };
        let FileActionKind::Mkfile(m) = &f.actions[0].action else {
            panic!()
        };
        assert_eq!(
            (m.path.as_str(), m.data.as_slice()),
            ("/app/VERSION", b"1.0.0\n".as_slice())
        );
        let config: Value =
            serde_json::from_str(&out.metadata_str("containerimage.config").unwrap()).unwrap();
        assert_eq!(
            config["config"]["Entrypoint"],
            json!(["/bin/sh", "/app/run.sh"])
        );
        assert_eq!(config["config"]["WorkingDir"], "/app");
        assert_eq!(config["history"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn builds_the_example() {
        let spec = include_str!("../../../examples/toml-spec/build.toml");
        let out = run::<TomlSpec>(&gateway(spec)).unwrap();
        assert_eq!(out.definition.unwrap().ops.len(), 4);
    }

    #[test]
    fn scratch_spec_and_bad_step() {
        let out = run::<TomlSpec>(&gateway(
            "[[step]]\nfile = { path = \"/a\", content = \"x\" }\n",
        ))
        .unwrap();
        assert_eq!(out.definition.unwrap().ops.len(), 1);
        let err = run::<TomlSpec>(&gateway("[[step]]\nrun = \"a\"\ncopy = [\"a\", \"b\"]\n"))
            .unwrap_err();
        assert!(
            err.message.contains("exactly one of run, copy or file"),
            "{}",
            err.message
        );
    }

    #[test]
    fn syntax_error_points_at_the_line() {
        let err = run::<TomlSpec>(&gateway("from = \"busybox:1.36\"\n\nstep = [\n")).unwrap_err();
        let loc = err.location.expect("a location");
        assert_eq!(loc.filename, "build.toml");
        assert!(err.message.starts_with("build.toml:"), "{}", err.message);
    }

    #[test]
    fn unknown_image_is_an_error() {
        let err = run::<TomlSpec>(&gateway("from = \"nosuch\"\n")).unwrap_err();
        assert_eq!(err.kind, buildwit_sdk::ErrorKind::NotFound);
    }
}
