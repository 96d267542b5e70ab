//! The gateway a container frontend talks to. As in BuildKit, the daemon is the gRPC
//! server and the frontend process the client, over plain HTTP/2 on the process's stdin
//! and stdout; the frontend learns its options, session and workers from its environment.
//! Every call is answered from a [`Bridge`], the same one the Wasm frontends' imports use,
//! so policy, nesting limits and file access are the engine's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use buildwit_frontend::bridge::{
    Bridge, Event, FrontendOutput, GatewayError, ImageRequest, LineRange, ResolveMode, SolvedRef,
    SourceLocation, Warning,
};
use buildwit_llb::pb;
use tokio::net::unix::pipe;
use tonic::{Request, Response, Status};

use crate::proto::moby::buildkit::v1::frontend::{
    EvaluateRequest, EvaluateResponse, InputsRequest, InputsResponse, PingRequest, PongResponse,
    ReadDirRequest, ReadDirResponse, ReadFileRequest, ReadFileResponse, ResolveImageConfigRequest,
    ResolveImageConfigResponse, ReturnRequest, ReturnResponse, SolveRequest, SolveResponse,
    StatFileRequest, StatFileResponse, WarnRequest, WarnResponse,
    llb_bridge_server::{LlbBridge, LlbBridgeServer},
};
use crate::proto::moby::buildkit::v1::types::WorkerRecord;
use crate::{LLB_CAPS, MAX_MESSAGE, Pipes, caps, wire};

/// The gateway calls a container frontend may make of buildwit.
const FRONTEND_CAPS: &[&str] = &[
    "frontend.inputs",
    "gateway.evaluate",
    "gateway.solve.evaluate",
    "gateway.solve.metadata",
    "gateway.warnings",
    "proto.refarray",
    "readdir",
    "readfile",
    "resolveimage",
    "resolveimage.resolvemode",
    "return",
    "returnmap",
    "solve.base",
    "statfile",
];

/// One run of a container frontend: its refs, its inputs, and what it returned.
pub struct FrontendGateway {
    bridge: Arc<dyn Bridge>,
    /// The frontend, as events name it.
    label: String,
    inputs: Vec<(String, pb::Definition)>,
    workers: Vec<WorkerRecord>,
    refs: Mutex<HashMap<String, SolvedRef>>,
    next_ref: AtomicU64,
    returned: Mutex<Option<Result<FrontendOutput, GatewayError>>>,
}

/// The environment of a frontend process, as BuildKit sets it: the image's own, one
/// `BUILDKIT_FRONTEND_OPT_<i>=<key>=<value>` per option, the session id, the workers as
/// JSON and the product name.
pub fn environment(
    image_env: &[String],
    options: &[(String, String)],
    session_id: &str,
    platforms: &[pb::Platform],
) -> Vec<String> {
    let mut env = image_env.to_vec();
    for (i, (k, v)) in options.iter().enumerate() {
        env.push(format!("BUILDKIT_FRONTEND_OPT_{i}={k}={v}"));
    }
    env.push(format!("BUILDKIT_SESSION_ID={session_id}"));
    let platforms: Vec<serde_json::Value> = platforms
        .iter()
        .map(|p| {
            let mut v = serde_json::json!({"architecture": p.architecture, "os": p.os});
            if !p.variant.is_empty() {
                v["variant"] = p.variant.clone().into();
            }
            v
        })
        .collect();
    let workers = serde_json::json!([{"id": "buildwit", "labels": {}, "platforms": platforms}]);
    env.push(format!("BUILDKIT_WORKERS={workers}"));
    env.push("BUILDKIT_EXPORTEDPRODUCT=buildkit".into());
    env
}

/// The first worker's platforms from `BUILDKIT_WORKERS` (as [`environment`] writes it, and
/// BuildKit too); none if it is absent or not such a list.
pub fn worker_platforms(workers: &str) -> Vec<pb::Platform> {
    #[derive(serde::Deserialize)]
    struct Worker {
        #[serde(default)]
        platforms: Vec<Platform>,
    }
    #[derive(serde::Deserialize)]
    struct Platform {
        os: String,
        architecture: String,
        #[serde(default)]
        variant: String,
    }
    let Ok(workers) = serde_json::from_str::<Vec<Worker>>(workers) else {
        return Vec::new();
    };
    workers
        .into_iter()
        .next()
        .map(|w| w.platforms)
        .unwrap_or_default()
        .into_iter()
        .map(|p| pb::Platform {
            os: p.os,
            architecture: p.architecture,
            variant: p.variant,
            ..Default::default()
        })
        .collect()
}

impl FrontendGateway {
    /// A gateway answering `label`'s calls from `bridge`; `inputs` are what its caller
    /// passed (`Inputs`), `platforms` the worker's.
    pub fn new(
        bridge: Arc<dyn Bridge>,
        label: String,
        inputs: Vec<(String, pb::Definition)>,
        platforms: Vec<pb::Platform>,
    ) -> Arc<Self> {
        Arc::new(FrontendGateway {
            bridge,
            label,
            inputs,
            workers: vec![WorkerRecord {
                id: "buildwit".into(),
                platforms,
                ..Default::default()
            }],
            refs: Mutex::default(),
            next_ref: AtomicU64::new(0),
            returned: Mutex::default(),
        })
    }

    /// Serve the frontend on its pipes (we write its stdin, read its stdout) until it
    /// closes them. Spawns the connection on the current runtime and returns at once.
    pub async fn serve(self: &Arc<Self>, stdin: pipe::Sender, stdout: pipe::Receiver) {
        let service = LlbBridgeServer::from_arc(self.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let conn = Pipes {
            read: stdout,
            write: stdin,
        };
        let incoming = tokio_stream::iter([Ok::<_, std::io::Error>(conn)]);
        // With one connection the accept loop ends at once; the connection's task serves
        // it until the process closes its end.
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    }

    /// What the frontend returned, once it exited; `None` if it never called `Return`.
    pub fn returned(&self) -> Option<Result<FrontendOutput, GatewayError>> {
        self.returned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// A new id for a result.
    fn add_ref(&self, r: &SolvedRef) -> String {
        let id = format!("ref{}", self.next_ref.fetch_add(1, Ordering::Relaxed));
        self.refs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), r.clone());
        id
    }

    fn get_ref(&self, id: &str) -> Result<SolvedRef, Status> {
        self.refs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no such ref: {id}")))
    }

    /// Run a bridge call (they block: they may build) off the async threads.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Bridge) -> Result<T, GatewayError> + Send + 'static,
    ) -> Result<T, Status> {
        let bridge = self.bridge.clone();
        tokio::task::spawn_blocking(move || f(bridge.as_ref()))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(to_status)
    }
}

/// A gateway error as a gRPC status, by kind.
fn to_status(e: GatewayError) -> Status {
    Status::new(wire::code_of(e.kind), e.message)
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A definition as the frontend sent it; `None` for an empty one (scratch).
fn definition(bytes: &[u8]) -> Result<Option<pb::Definition>, Status> {
    let def = buildwit_llb::decode_definition(bytes).map_err(invalid)?;
    let graph = buildwit_llb::validate_allow_empty(&def).map_err(invalid)?;
    Ok(graph.map(|_| def))
}

#[tonic::async_trait]
impl LlbBridge for FrontendGateway {
    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PongResponse>, Status> {
        Ok(Response::new(PongResponse {
            frontend_api_caps: caps(FRONTEND_CAPS),
            llb_caps: caps(LLB_CAPS),
            workers: self.workers.clone(),
        }))
    }

    async fn solve(
        &self,
        request: Request<SolveRequest>,
    ) -> Result<Response<SolveResponse>, Status> {
        let req = request.into_inner();
        let out = match (definition(&req.definition)?, req.frontend.is_empty()) {
            (Some(_), false) => {
                return Err(invalid(
                    "cannot solve with both Definition and Frontend specified",
                ));
            }
            (Some(def), true) => FrontendOutput {
                reference: Some(SolvedRef {
                    definition: Arc::new(def),
                }),
                ..Default::default()
            },
            (None, true) => FrontendOutput::default(),
            (None, false) => {
                let mut inputs = Vec::new();
                for (name, bytes) in &req.frontend_inputs {
                    let def = buildwit_llb::decode_definition(bytes).map_err(invalid)?;
                    inputs.push((name.clone(), def));
                }
                inputs.sort_by(|a, b| a.0.cmp(&b.0));
                let mut options: Vec<_> = req.frontend_opt.into_iter().collect();
                options.sort();
                let frontend = req.frontend;
                self.call(move |b| b.forward(&frontend, options, inputs))
                    .await?
            }
        };
        if req.evaluate {
            for r in out.reference.iter().chain(out.refs.iter().map(|(_, r)| r)) {
                let r = r.clone();
                self.call(move |b| b.evaluate(&r)).await?;
            }
        }
        let result = wire::to_result(out, |r| Ok::<_, Status>(self.add_ref(r)))?;
        Ok(Response::new(SolveResponse {
            r#ref: String::new(),
            result: Some(result),
        }))
    }

    async fn read_file(
        &self,
        request: Request<ReadFileRequest>,
    ) -> Result<Response<ReadFileResponse>, Status> {
        let req = request.into_inner();
        let r = self.get_ref(&req.r#ref)?;
        let range = req
            .range
            .map(|r| (r.offset.max(0) as u64, r.length.max(0) as u64));
        let data = self
            .call(move |b| b.read_file(&r, &req.file_path, range))
            .await?;
        Ok(Response::new(ReadFileResponse { data }))
    }

    async fn read_dir(
        &self,
        request: Request<ReadDirRequest>,
    ) -> Result<Response<ReadDirResponse>, Status> {
        let req = request.into_inner();
        let r = self.get_ref(&req.r#ref)?;
        let pattern = Some(req.include_pattern).filter(|p| !p.is_empty());
        let entries = self
            .call(move |b| b.read_dir(&r, &req.dir_path, pattern.as_deref()))
            .await?;
        Ok(Response::new(ReadDirResponse {
            entries: entries.into_iter().map(wire::to_stat).collect(),
        }))
    }

    async fn stat_file(
        &self,
        request: Request<StatFileRequest>,
    ) -> Result<Response<StatFileResponse>, Status> {
        let req = request.into_inner();
        let r = self.get_ref(&req.r#ref)?;
        let s = self.call(move |b| b.stat_file(&r, &req.path)).await?;
        Ok(Response::new(StatFileResponse {
            stat: Some(wire::to_stat(s)),
        }))
    }

    async fn evaluate(
        &self,
        request: Request<EvaluateRequest>,
    ) -> Result<Response<EvaluateResponse>, Status> {
        let r = self.get_ref(&request.into_inner().r#ref)?;
        self.call(move |b| b.evaluate(&r)).await?;
        Ok(Response::new(EvaluateResponse {}))
    }

    async fn resolve_image_config(
        &self,
        request: Request<ResolveImageConfigRequest>,
    ) -> Result<Response<ResolveImageConfigResponse>, Status> {
        let req = request.into_inner();
        if req.resolver_type != 0 {
            return Err(Status::unimplemented(
                "resolving images of OCI layouts is not supported for container frontends",
            ));
        }
        let image = ImageRequest {
            reference: req.r#ref.clone(),
            platform: req.platform,
            resolve_mode: match req.resolve_mode.as_str() {
                "pull" => ResolveMode::Pull,
                "local" => ResolveMode::Local,
                _ => ResolveMode::Default,
            },
            log_name: req.log_name,
        };
        let resolved = self.call(move |b| b.resolve_image_config(&image)).await?;
        Ok(Response::new(ResolveImageConfigResponse {
            digest: resolved.digest,
            config: resolved.config,
            r#ref: req.r#ref,
        }))
    }

    async fn r#return(
        &self,
        request: Request<ReturnRequest>,
    ) -> Result<Response<ReturnResponse>, Status> {
        let req = request.into_inner();
        let returned = match (req.result, req.error) {
            (_, Some(e)) if e.code != 0 => Err(wire::error_of(e.code.into(), e.message)),
            (Some(r), _) => Ok(wire::from_result(r, |r| {
                self.get_ref(&r.id)
                    .map_err(|_| Status::not_found(format!("return reference {} not found", r.id)))
            })?),
            _ => return Err(invalid("gateway return must be either result or err")),
        };
        let mut slot = self.returned.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Err(Status::failed_precondition("gateway result is already set"));
        }
        *slot = Some(returned);
        Ok(Response::new(ReturnResponse {}))
    }

    async fn inputs(&self, _: Request<InputsRequest>) -> Result<Response<InputsResponse>, Status> {
        Ok(Response::new(InputsResponse {
            definitions: self
                .inputs
                .iter()
                .map(|(k, d)| (k.clone(), prost::Message::encode_to_vec(d)))
                .collect(),
        }))
    }

    async fn warn(&self, request: Request<WarnRequest>) -> Result<Response<WarnResponse>, Status> {
        let req = request.into_inner();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let location = req.info.map(|info| SourceLocation {
            filename: info.filename,
            ranges: req
                .ranges
                .iter()
                .map(|r| {
                    let (start, end) = (
                        r.start.clone().unwrap_or_default(),
                        r.end.clone().unwrap_or_default(),
                    );
                    LineRange {
                        start_line: start.line.max(0) as u32,
                        start_column: start.character.max(0) as u32,
                        end_line: end.line.max(0) as u32,
                        end_column: end.character.max(0) as u32,
                    }
                })
                .collect(),
        });
        self.bridge.event(Event::Warning {
            frontend: self.label.clone(),
            warning: Warning {
                level: req.level.max(0) as u32,
                short: text(&req.short),
                detail: req.detail.iter().map(|d| text(d)).collect(),
                url: req.url,
                location,
            },
        });
        Ok(Response::new(WarnResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workers_written_are_read_back() {
        let platforms = vec![
            pb::Platform {
                os: "linux".into(),
                architecture: "arm64".into(),
                ..Default::default()
            },
            pb::Platform {
                os: "linux".into(),
                architecture: "arm".into(),
                variant: "v7".into(),
                ..Default::default()
            },
        ];
        let env = environment(&[], &[], "s", &platforms);
        let workers = env
            .iter()
            .find_map(|e| e.strip_prefix("BUILDKIT_WORKERS="))
            .unwrap();
        assert_eq!(worker_platforms(workers), platforms);
        assert!(worker_platforms("not json").is_empty());
    }
}
