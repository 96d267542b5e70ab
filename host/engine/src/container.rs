//! Frontends published as container images, run as BuildKit runs them for `gateway.v0`:
//! the solver pulls and unpacks the image (pinned by digest), its entrypoint runs in a
//! container with no network, a read-only root and the frontends' memory limit, and it
//! speaks `LLBBridge` over its stdin and stdout to a [`FrontendGateway`] that answers from
//! the same bridge as the Wasm frontends' imports. Nothing of the container is kept.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use buildwit_frontend::bridge::{Bridge, Event, LogLevel};
use buildwit_frontend::{FrontendError, FrontendOutput, Limit};
use buildwit_gateway::FrontendGateway;
use buildwit_llb::pb;
use prost::Message;

use crate::local::LocalBridge;

/// Where BuildKit mounts the LLB of the frontend's own image.
const FRONTEND_BIN: &str = "/run/config/buildkit/metadata/frontend.bin";
/// The image label listing the frontend capabilities it has.
const CAPS_LABEL: &str = "moby.buildkit.frontend.caps";
/// How many lines of its stderr an error quotes.
const TAIL_LINES: usize = 10;

/// A container frontend image, resolved.
#[derive(Debug)]
pub struct ContainerImage {
    /// `name@sha256:…`: exactly what runs.
    pub pinned: String,
    /// Entrypoint (BuildKit's default when the image has none: `/run`).
    pub entrypoint: Vec<String>,
    /// The image's environment.
    pub env: Vec<String>,
    /// Its working directory.
    pub working_dir: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

impl ContainerImage {
    /// The image `pinned` with its config JSON.
    pub fn new(pinned: String, config: &[u8]) -> Result<Self, String> {
        #[derive(serde::Deserialize, Default)]
        #[serde(rename_all = "PascalCase")]
        struct Config {
            entrypoint: Option<Vec<String>>,
            env: Option<Vec<String>>,
            working_dir: Option<String>,
            labels: Option<BTreeMap<String, String>>,
        }
        #[derive(serde::Deserialize)]
        struct Image {
            #[serde(default)]
            config: Option<Config>,
        }
        let image: Image = serde_json::from_slice(config)
            .map_err(|e| format!("its image config is not valid JSON: {e}"))?;
        let config = image.config.unwrap_or_default();
        Ok(ContainerImage {
            pinned,
            entrypoint: config.entrypoint.unwrap_or_else(|| vec!["/run".into()]),
            env: config.env.unwrap_or_default(),
            working_dir: config.working_dir.unwrap_or_default(),
            labels: config.labels.unwrap_or_default(),
        })
    }

    /// BuildKit's check of the caps a request needs against the image's label:
    /// `frontend.caps` (each cut at `+`) and `moby.buildkit.frontend.inputs` with inputs.
    pub fn check_caps(&self, options: &[(String, String)], has_inputs: bool) -> Result<(), String> {
        let has: Vec<&str> = self
            .labels
            .get(CAPS_LABEL)
            .map(|l| {
                l.split(',')
                    .map(|c| c.split('+').next().unwrap_or(c).trim())
                    .collect()
            })
            .unwrap_or_default();
        let requested = options
            .iter()
            .filter(|(k, _)| k == "frontend.caps")
            .flat_map(|(_, v)| v.split(','))
            .map(|c| c.split('+').next().unwrap_or(c).trim())
            .filter(|c| !c.is_empty());
        let inputs = has_inputs.then_some("moby.buildkit.frontend.inputs");
        for cap in requested.chain(inputs) {
            if !has.contains(&cap) {
                return Err(format!("unsupported frontend capability {cap}"));
            }
        }
        Ok(())
    }

    /// The LLB of the image, as BuildKit makes it for a frontend.
    fn definition(&self) -> pb::Definition {
        let (os, architecture, variant) = crate::parse_platform("");
        let source = pb::Op {
            op: Some(pb::op::Op::Source(pb::SourceOp {
                identifier: format!("docker-image://{}", self.pinned),
                attrs: [("image.recordtype".to_string(), "frontend".to_string())]
                    .into_iter()
                    .collect(),
            })),
            platform: Some(pb::Platform {
                architecture,
                os,
                variant,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let terminal = pb::Op {
            inputs: vec![pb::Input {
                digest: buildwit_llb::digest_of(&source).to_string(),
                index: 0,
            }],
            ..Default::default()
        }
        .encode_to_vec();
        pb::Definition {
            def: vec![source, terminal],
            ..Default::default()
        }
    }
}

impl LocalBridge {
    /// Run a container frontend with `options` and `inputs`; this bridge answers its calls.
    pub(crate) fn run_container(
        self: &Arc<Self>,
        image: &ContainerImage,
        options: Vec<(String, String)>,
        inputs: Vec<(String, pb::Definition)>,
    ) -> Result<FrontendOutput, FrontendError> {
        let label = image.pinned.clone();
        let load = |reason: String| FrontendError::Load {
            frontend: label.clone(),
            reason,
        };
        image
            .check_caps(&options, !inputs.is_empty())
            .map_err(|reason| FrontendError::Build {
                frontend: label.clone(),
                error: buildwit_frontend::GatewayError::new(
                    buildwit_frontend::bridge::ErrorKind::Unsupported,
                    reason,
                ),
            })?;
        let frontends = &self.frontends;
        let solver = frontends.solver().map_err(|e| load(e.to_string()))?;
        let definition = image.definition();
        let events = self.events.clone();
        let progress = Arc::new(move |e: buildwit_solver::ProgressEvent| events.progress(e));
        let rootfs = frontends
            .io
            .block_on(solver.solve(
                &definition,
                self.session.clone(),
                &buildwit_solver::Entitlements::default(),
                progress,
            ))
            .map_err(|e| load(e.to_string()))?
            .unwrap_or_default();

        let limits = frontends.runtime.limits();
        let deadline = self.deadline.unwrap_or(limits.deadline);
        let platforms = crate::worker_platforms(&solver.worker().platforms);
        let mut env = image.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(buildwit_worker::exec::DEFAULT_PATH.to_string());
        }
        let process = buildwit_worker::exec::Process {
            args: image.entrypoint.clone(),
            env: buildwit_gateway::environment(&env, &options, "buildwit", &platforms),
            cwd: image.working_dir.clone(),
            hostname: "buildkitsandbox".into(),
            memory_limit: Some(limits.memory as u64),
            ..Default::default()
        };

        let gateway = FrontendGateway::new(
            self.clone() as Arc<dyn Bridge>,
            label.clone(),
            inputs,
            platforms,
        );
        let io = |e: std::io::Error| load(format!("connecting to it: {e}"));
        // We write its stdin and read its stdout; it gets the other ends.
        let (its_stdin, our_stdin) = std::io::pipe().map_err(io)?;
        let (our_stdout, its_stdout) = std::io::pipe().map_err(io)?;
        {
            let _runtime = frontends.io.enter();
            let tx = tokio::net::unix::pipe::Sender::from_owned_fd(our_stdin.into()).map_err(io)?;
            let rx =
                tokio::net::unix::pipe::Receiver::from_owned_fd(our_stdout.into()).map_err(io)?;
            let gateway = gateway.clone();
            frontends
                .io
                .spawn(async move { gateway.serve(tx, rx).await });
        }
        let pipes = buildwit_worker::exec::Pipes {
            stdin: its_stdin.into(),
            stdout: its_stdout.into(),
        };

        // Its stderr is its log; the last lines explain a failure.
        let tail = std::sync::Mutex::new(std::collections::VecDeque::new());
        let output = |_: u8, line: &str| {
            self.event(Event::Log {
                frontend: label.clone(),
                level: LogLevel::Info,
                message: line.to_string(),
            });
            let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line.to_string());
        };
        let stop = AtomicBool::new(false);
        let timed_out = AtomicBool::new(false);
        let frontend_bin = definition.encode_to_vec();
        let (finished, watch) = std::sync::mpsc::channel::<()>();
        let status = std::thread::scope(|s| {
            // The deadline and the client's cancel stop the container.
            let (stop, timed_out) = (&stop, &timed_out);
            s.spawn(move || {
                let started = Instant::now();
                let tick = Duration::from_millis(50);
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watch.recv_timeout(tick)
                {
                    if started.elapsed() > deadline {
                        timed_out.store(true, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                    }
                    if self.session.is_cancelled() {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
            let status = solver.worker().run_frontend(
                &rootfs,
                &process,
                &[(FRONTEND_BIN, &frontend_bin)],
                pipes,
                &output,
                stop,
            );
            drop(finished);
            status
        });
        let status = status.map_err(|e| load(format!("running it: {e}")))?;
        if timed_out.load(Ordering::Relaxed) {
            return Err(FrontendError::LimitExceeded {
                frontend: label,
                limit: Limit::Deadline(deadline),
                detail: "its container was killed".into(),
            });
        }
        if self.session.is_cancelled() {
            return Err(FrontendError::Build {
                frontend: label,
                error: buildwit_frontend::GatewayError::new(
                    buildwit_frontend::bridge::ErrorKind::Failed,
                    "the build was cancelled",
                ),
            });
        }
        match gateway.returned() {
            Some(Ok(out)) => Ok(out),
            Some(Err(error)) => Err(FrontendError::Build {
                frontend: label,
                error,
            }),
            None => {
                let tail: Vec<String> = tail.into_inner().unwrap_or_default().into();
                let why = match status.code {
                    0 => "exited".to_string(),
                    137 => format!(
                        "was killed (status 137; its memory limit is {} MiB)",
                        limits.memory >> 20
                    ),
                    code => format!("exited with status {code}"),
                };
                Err(FrontendError::Output {
                    frontend: label,
                    reason: format!(
                        "it {why} without returning a result (no result for incomplete build){}",
                        if tail.is_empty() {
                            String::new()
                        } else {
                            format!("; its last output:\n{}", tail.join("\n"))
                        }
                    ),
                })
            }
        }
    }
}

/// `component` compiled as the runner compiles it (the same wasmtime and settings), in a
/// scratch directory `dir` removed afterwards: (file name, bytes) of each artifact.
pub(crate) fn compiled(
    label: &str,
    component: &[u8],
    dir: &std::path::Path,
) -> Result<Vec<(String, Vec<u8>)>, crate::DaemonError> {
    let _ = std::fs::remove_dir_all(dir);
    let made =
        buildwit_frontend::Runtime::new(buildwit_frontend::Limits::default(), Some(dir.into()))
            .and_then(|runtime| runtime.load(label, component).map(|_| ()))
            .map_err(crate::DaemonError::Frontend)
            .and_then(|()| {
                let read = |e: std::io::Error| {
                    crate::DaemonError::Setup(format!("{}: {e}", dir.display()))
                };
                let mut files = Vec::new();
                for entry in std::fs::read_dir(dir).map_err(read)? {
                    let path = entry.map_err(read)?.path();
                    let name = path
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    files.push((name, std::fs::read(&path).map_err(read)?));
                }
                Ok(files)
            });
    let _ = std::fs::remove_dir_all(dir);
    made
}

/// The blobs of an image: config, one layer, manifest.
pub(crate) struct ImageBlobs {
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    pub manifest: Vec<u8>,
}

/// The container image that runs a Wasm frontend inside a stock BuildKit (`frontend push
/// --container`). `compiled` holds the component's compiled form made here (file name,
/// bytes).
pub(crate) fn runner_image(
    runner: &std::path::Path,
    component: &[u8],
    compiled: &[(String, Vec<u8>)],
    record: &crate::FrontendRecord,
) -> Result<ImageBlobs, String> {
    let (layer, diff_id) = runner_layer(runner, component, compiled)?;
    let created = buildwit_exporter::now_rfc3339();
    let config = serde_json::to_vec(&serde_json::json!({
        "created": created,
        "architecture": buildwit_exporter::host_architecture(),
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/buildwit-frontend", "/frontend.wasm"],
            "Env": ["PATH=/bin"],
            "Labels": {
                "moby.buildkit.frontend.network.none": "true",
                "moby.buildkit.frontend.caps": "moby.buildkit.frontend.inputs",
                "org.opencontainers.image.title": record.name,
                "org.opencontainers.image.version": record.version,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "buildwit frontend push --container"}],
    }))
    .expect("json");
    let manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": buildwit_llb::digest_of(&config).to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": buildwit_llb::digest_of(&layer).to_string(),
            "size": layer.len(),
        }],
    }))
    .expect("json");
    Ok(ImageBlobs {
        config,
        layer,
        manifest,
    })
}

/// Its one layer: `runner` (buildwit's `buildwit-frontend` binary) with the C libraries it
/// links at their paths, the component at `/frontend.wasm`, and its compiled form (used
/// where the CPU and wasmtime match; elsewhere the runner compiles it). Returns the gzip
/// blob and its diff id.
fn runner_layer(
    runner: &std::path::Path,
    component: &[u8],
    compiled: &[(String, Vec<u8>)],
) -> Result<(Vec<u8>, String), String> {
    use sha2::Digest;
    use std::io::Write;
    let mut files: Vec<(String, std::path::PathBuf)> =
        vec![("bin/buildwit-frontend".into(), runner.to_path_buf())];
    // What the dynamic loader needs, from `ldd` (the loader itself included).
    let ldd = std::process::Command::new("ldd")
        .arg(runner)
        .output()
        .map_err(|e| format!("ldd {}: {e}", runner.display()))?;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(std::path::PathBuf::from);
        if let Some(path) = path {
            files.push((path.to_string_lossy().trim_start_matches('/').into(), path));
        }
    }
    /// Hashes what goes through it (the tar, for the diff id).
    struct Hashing<W>(W, sha2::Sha256);
    impl<W: Write> Write for Hashing<W> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let n = self.0.write(b)?;
            self.1.update(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush()
        }
    }
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(Hashing(gz, sha2::Sha256::new()));
    tar.mode(tar::HeaderMode::Deterministic);
    let io = |e: std::io::Error| format!("packing the frontend image: {e}");
    let mut add = |name: &str, data: &[u8], mode: u32| -> Result<(), String> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, data).map_err(io)
    };
    for (name, path) in &files {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        add(name, &data, 0o755)?;
    }
    add("frontend.wasm", component, 0o644)?;
    for (name, data) in compiled {
        add(
            &format!(
                "{}/{name}",
                buildwit_gateway::client::COMPILED_DIR.trim_start_matches('/')
            ),
            data,
            0o644,
        )?;
    }
    let Hashing(gz, hash) = tar.into_inner().map_err(io)?;
    let blob = gz.finish().map_err(io)?;
    Ok((blob, format!("sha256:{}", hex::encode(hash.finalize()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_config_and_defaults() {
        let image = ContainerImage::new(
            "r@sha256:00".into(),
            br#"{"config":{"Env":["PATH=/bin"],"Labels":{"moby.buildkit.frontend.caps":"moby.buildkit.frontend.inputs,moby.buildkit.frontend.contexts+forward"}}}"#,
        )
        .unwrap();
        assert_eq!(image.entrypoint, ["/run"]);
        assert_eq!(image.env, ["PATH=/bin"]);
        let opts = |v: &str| vec![("frontend.caps".to_string(), v.to_string())];
        assert!(image.check_caps(&[], true).is_ok());
        assert!(
            image
                .check_caps(&opts("moby.buildkit.frontend.contexts+forward"), false)
                .is_ok()
        );
        assert_eq!(
            image
                .check_caps(&opts("moby.buildkit.frontend.subrequests"), false)
                .unwrap_err(),
            "unsupported frontend capability moby.buildkit.frontend.subrequests"
        );
        let bare = ContainerImage::new("r@sha256:00".into(), b"{}").unwrap();
        assert_eq!(
            bare.check_caps(&[], true).unwrap_err(),
            "unsupported frontend capability moby.buildkit.frontend.inputs"
        );
        assert!(ContainerImage::new("r".into(), b"[").is_err());
    }
}
