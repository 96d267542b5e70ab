//! The other side of the protocol: a buildwit Wasm frontend run inside a stock BuildKit as
//! a container frontend. The process dials BuildKit over its stdin and stdout, reads its
//! options from the environment BuildKit sets, runs the component, and answers the
//! component's gateway imports with `LLBBridge` calls ([`BuildkitBridge`]), so the
//! frontend's LLB is the same as under buildwit.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use buildwit_frontend::bridge::{
    Bridge, ErrorKind, Event, FrontendOutput, GatewayError, ImageRequest, LogLevel, ResolveMode,
    ResolvedImage, SolvedRef, Stat,
};
use buildwit_frontend::{FrontendError, Limits, Runtime};
use buildwit_llb::pb;
use prost::Message;
use tokio::net::unix::pipe;
use tonic::transport::{Channel, Endpoint};

use crate::proto::google::rpc::Status as RpcStatus;
use crate::proto::moby::buildkit::v1::frontend::{
    EvaluateRequest, FileRange, InputsRequest, PingRequest, ReadDirRequest, ReadFileRequest,
    ResolveImageConfigRequest, Result as GatewayResult, ReturnRequest, SolveRequest,
    StatFileRequest, WarnRequest, llb_bridge_client::LlbBridgeClient, result,
};
use crate::{MAX_MESSAGE, Pipes, wire};

/// Where the image keeps the component's compiled form (written by `frontend push
/// --container` for the machine it ran on; recompiled elsewhere).
pub const COMPILED_DIR: &str = "/buildwit/compiled";

/// The component's gateway imports, answered by BuildKit over `LLBBridge`.
pub struct BuildkitBridge {
    rt: tokio::runtime::Runtime,
    client: LlbBridgeClient<Channel>,
    /// Ref ids BuildKit gave out, by the digest of the definition they build.
    refs: Mutex<HashMap<String, String>>,
}

fn failed(e: tonic::Status) -> GatewayError {
    wire::error_of(e.code(), e.message().to_string())
}

impl BuildkitBridge {
    /// Dial BuildKit over this process's stdin and stdout.
    pub fn over_stdio() -> std::io::Result<Self> {
        use std::os::fd::AsFd;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let channel = rt.block_on(async {
            let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
            let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
            let io = Mutex::new(Some(Pipes {
                read: pipe::Receiver::from_owned_fd(stdin)?,
                write: pipe::Sender::from_owned_fd(stdout)?,
            }));
            Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let io = io.lock().unwrap_or_else(|e| e.into_inner()).take();
                    async move {
                        io.map(hyper_util::rt::TokioIo::new)
                            .ok_or_else(|| std::io::Error::other("stdio is already connected"))
                    }
                }))
                .await
                .map_err(std::io::Error::other)
        })?;
        let client = LlbBridgeClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(BuildkitBridge {
            rt,
            client,
            refs: Mutex::default(),
        })
    }

    /// The ref BuildKit knows a result by, solving its definition the first time.
    fn ref_id(&self, r: &SolvedRef) -> Result<String, GatewayError> {
        let bytes = r.definition.encode_to_vec();
        let key = buildwit_llb::digest_of(&bytes).to_string();
        if let Some(id) = self
            .refs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(id.clone());
        }
        let result = self.call_solve(SolveRequest {
            definition: bytes,
            ..Default::default()
        })?;
        let id = match result.result {
            Some(result::Result::Ref(r)) if !r.id.is_empty() => r.id,
            _ => {
                return Err(GatewayError::new(
                    ErrorKind::Internal,
                    "BuildKit returned no ref",
                ));
            }
        };
        self.refs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, id.clone());
        Ok(id)
    }

    fn call_solve(&self, mut request: SolveRequest) -> Result<GatewayResult, GatewayError> {
        request.allow_result_return = true;
        request.allow_result_array_ref = true;
        let mut client = self.client.clone();
        let response = self
            .rt
            .block_on(client.solve(request))
            .map_err(failed)?
            .into_inner();
        Ok(response.result.unwrap_or_default())
    }

    /// A `Solve`; the refs it returns are remembered by their definitions.
    fn solve(&self, request: SolveRequest) -> Result<FrontendOutput, GatewayError> {
        let result = self.call_solve(request)?;
        wire::from_result(result, |r| {
            let definition = buildwit_llb::decode_definition(&r.def)
                .map_err(|e| GatewayError::new(ErrorKind::Internal, e.to_string()))?;
            // By our encoding, as `ref_id` looks it up (maps are encoded sorted).
            let key = buildwit_llb::digest_of(&definition.encode_to_vec()).to_string();
            self.refs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, r.id);
            Ok(SolvedRef {
                definition: Arc::new(definition),
            })
        })
    }

    /// The definitions the caller passed (`Inputs`).
    fn inputs(&self) -> Result<Vec<(String, pb::Definition)>, GatewayError> {
        let mut client = self.client.clone();
        let response = self.rt.block_on(client.inputs(InputsRequest {}));
        let definitions = match response {
            Ok(r) => r.into_inner().definitions,
            // An older daemon without `frontend.inputs`: nothing was passed.
            Err(e) if e.code() == tonic::Code::Unimplemented => Default::default(),
            Err(e) => return Err(failed(e)),
        };
        let mut inputs = Vec::new();
        for (name, bytes) in definitions {
            let def = buildwit_llb::decode_definition(&bytes)
                .map_err(|e| GatewayError::new(ErrorKind::InvalidArgument, e.to_string()))?;
            inputs.push((name, def));
        }
        inputs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(inputs)
    }

    /// Hand BuildKit the result, or the error.
    fn finish(&self, result: Result<FrontendOutput, FrontendError>) -> Result<(), GatewayError> {
        let request = match result {
            Ok(out) => ReturnRequest {
                result: Some(wire::to_result(out, |r| self.ref_id(r))?),
                error: None,
            },
            Err(e) => {
                let code = match &e {
                    FrontendError::Build { error, .. } => wire::code_of(error.kind),
                    _ => tonic::Code::Unknown,
                };
                ReturnRequest {
                    result: None,
                    error: Some(RpcStatus {
                        code: code as i32,
                        message: e.to_string(),
                    }),
                }
            }
        };
        let mut client = self.client.clone();
        self.rt
            .block_on(client.r#return(request))
            .map(|_| ())
            .map_err(failed)
    }
}

impl Bridge for BuildkitBridge {
    fn worker_platforms(&self) -> Vec<pb::Platform> {
        std::env::var("BUILDKIT_WORKERS")
            .map(|w| crate::worker_platforms(&w))
            .unwrap_or_default()
    }

    fn read_file(
        &self,
        r: &SolvedRef,
        path: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<u8>, GatewayError> {
        let request = ReadFileRequest {
            r#ref: self.ref_id(r)?,
            file_path: path.to_string(),
            range: range.map(|(offset, length)| FileRange {
                offset: offset as i64,
                length: length as i64,
            }),
        };
        let mut client = self.client.clone();
        Ok(self
            .rt
            .block_on(client.read_file(request))
            .map_err(failed)?
            .into_inner()
            .data)
    }

    fn read_dir(
        &self,
        r: &SolvedRef,
        path: &str,
        include_pattern: Option<&str>,
    ) -> Result<Vec<Stat>, GatewayError> {
        let request = ReadDirRequest {
            r#ref: self.ref_id(r)?,
            dir_path: path.to_string(),
            include_pattern: include_pattern.unwrap_or_default().to_string(),
        };
        let mut client = self.client.clone();
        let entries = self
            .rt
            .block_on(client.read_dir(request))
            .map_err(failed)?
            .into_inner()
            .entries;
        Ok(entries.into_iter().map(wire::from_stat).collect())
    }

    fn stat_file(&self, r: &SolvedRef, path: &str) -> Result<Stat, GatewayError> {
        let request = StatFileRequest {
            r#ref: self.ref_id(r)?,
            path: path.to_string(),
        };
        let mut client = self.client.clone();
        let s = self
            .rt
            .block_on(client.stat_file(request))
            .map_err(failed)?
            .into_inner()
            .stat
            .unwrap_or_default();
        Ok(wire::from_stat(s))
    }

    fn evaluate(&self, r: &SolvedRef) -> Result<(), GatewayError> {
        let request = EvaluateRequest {
            r#ref: self.ref_id(r)?,
        };
        let mut client = self.client.clone();
        self.rt
            .block_on(client.evaluate(request))
            .map(|_| ())
            .map_err(failed)
    }

    fn resolve_image_config(&self, request: &ImageRequest) -> Result<ResolvedImage, GatewayError> {
        let mode = match request.resolve_mode {
            ResolveMode::Default => "default",
            ResolveMode::Pull => "pull",
            ResolveMode::Local => "local",
        };
        let call = ResolveImageConfigRequest {
            r#ref: request.reference.clone(),
            platform: request.platform.clone(),
            resolve_mode: mode.into(),
            log_name: request.log_name.clone(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let response = self
            .rt
            .block_on(client.resolve_image_config(call))
            .map_err(failed)?
            .into_inner();
        Ok(ResolvedImage {
            reference: match response.r#ref.is_empty() {
                true => request.reference.clone(),
                false => response.r#ref,
            },
            digest: response.digest,
            config: response.config,
        })
    }

    fn forward(
        &self,
        frontend: &str,
        options: Vec<(String, String)>,
        inputs: Vec<(String, pb::Definition)>,
    ) -> Result<FrontendOutput, GatewayError> {
        self.solve(SolveRequest {
            frontend: frontend.to_string(),
            frontend_opt: options.into_iter().collect(),
            frontend_inputs: inputs
                .into_iter()
                .map(|(k, d)| (k, d.encode_to_vec()))
                .collect(),
            ..Default::default()
        })
    }

    fn event(&self, event: Event) {
        match event {
            Event::Warning { warning, .. } => {
                let request = WarnRequest {
                    level: warning.level.into(),
                    short: warning.short.into_bytes(),
                    detail: warning.detail.into_iter().map(String::into_bytes).collect(),
                    url: warning.url,
                    ..Default::default()
                };
                let mut client = self.client.clone();
                let _ = self.rt.block_on(client.warn(request));
            }
            // BuildKit shows a frontend's stderr in its own log.
            Event::Log { level, message, .. } => {
                let level = match level {
                    LogLevel::Debug => "debug",
                    LogLevel::Info => "info",
                    LogLevel::Warn => "warning",
                    LogLevel::Error => "error",
                };
                eprintln!("{level}: {message}");
            }
            Event::Progress { .. } => {}
        }
    }
}

/// The options BuildKit passed: `BUILDKIT_FRONTEND_OPT_<i>=<key>=<value>`.
pub fn options_from_env() -> Vec<(String, String)> {
    let mut options: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("BUILDKIT_FRONTEND_OPT_"))
        .filter_map(|(_, v)| v.split_once('=').map(|(k, v)| (k.into(), v.into())))
        .collect();
    options.sort();
    options
}

/// Run the component at `path` as BuildKit's frontend: its result or its error goes back
/// through `Return`. An error here means BuildKit could not be told.
pub fn run_in_buildkit(path: &Path) -> Result<(), String> {
    let bridge =
        Arc::new(BuildkitBridge::over_stdio().map_err(|e| format!("connecting to BuildKit: {e}"))?);
    let mut client = bridge.client.clone();
    bridge
        .rt
        .block_on(client.ping(PingRequest {}))
        .map_err(|e| format!("BuildKit does not answer: {e}"))?;
    let compiled = Path::new(COMPILED_DIR);
    let result =
        Runtime::new(Limits::default(), Some(compiled.to_path_buf())).and_then(|runtime| {
            let loaded = runtime.load_file(path)?;
            let inputs = bridge.inputs().map_err(|error| FrontendError::Build {
                frontend: loaded.label.clone(),
                error,
            })?;
            runtime.run(&loaded, options_from_env(), inputs, bridge.clone(), None)
        });
    bridge
        .finish(result)
        .map_err(|e| format!("returning the result to BuildKit: {e}"))
}
