//! `LLBBridge` for client-side gateway builds: the client's build function asks for a
//! frontend's result (`Solve`) and hands back the final one (`Return`). Every call names
//! its build in the `buildkit-controlapi-buildid` header.

use std::sync::Arc;
use std::time::Duration;

use buildwit_engine::{BuildApi, BuildRequest, FrontendOutput, FrontendRef, SolvedRef};
use buildwit_llb::pb;
use tonic::{Request, Response, Status};

use crate::control::Buildkit;
use crate::jobs::Job;
use crate::progress::JobEvents;
use crate::proto::moby::buildkit::v1::frontend::{
    EvaluateRequest, EvaluateResponse, InputsRequest, InputsResponse, PingRequest, PongResponse,
    ReadDirRequest, ReadDirResponse, ReadFileRequest, ReadFileResponse, ResolveImageConfigRequest,
    ResolveImageConfigResponse, ReturnRequest, ReturnResponse, SolveRequest, SolveResponse,
    StatFileRequest, StatFileResponse, WarnRequest, WarnResponse, llb_bridge_server::LlbBridge,
};
use buildwit_gateway::{LLB_CAPS, caps};

/// The gateway API caps buildwitd implements for client-side builds (an empty list would
/// mean "old daemon"). The file and image calls are served to container frontends
/// (`buildwit-gateway`), not yet to a client's own build function.
const FRONTEND_CAPS: &[&str] = &[
    "frontend.inputs",
    "gateway.solve.metadata",
    "importcaches",
    "proto.refarray",
    "return",
    "returnmap",
    "solve.base",
];

impl Buildkit {
    /// The build a gateway call names, waiting a little for `Control/Solve` to register it.
    async fn job_of<T>(&self, request: &Request<T>) -> Result<Arc<Job>, Status> {
        let id = request
            .metadata()
            .get("buildkit-controlapi-buildid")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::invalid_argument("no buildid found in context"))?;
        self.jobs
            .get(id, Duration::from_secs(3))
            .await
            .ok_or_else(|| Status::not_found(format!("no such job {id}")))
    }
}

/// A definition the client sent, if it sent one with something in it.
pub(crate) fn definition(bytes: &[u8]) -> Result<Option<pb::Definition>, Status> {
    use prost::Message;
    let def = pb::Definition::decode(bytes)
        .map_err(|e| Status::invalid_argument(format!("the definition does not decode: {e}")))?;
    Ok(Some(def).filter(|d| !d.def.is_empty()))
}

#[tonic::async_trait]
impl LlbBridge for Buildkit {
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PongResponse>, Status> {
        self.job_of(&request).await?;
        Ok(Response::new(PongResponse {
            frontend_api_caps: caps(FRONTEND_CAPS),
            llb_caps: caps(LLB_CAPS),
            workers: self.workers().await?,
        }))
    }

    async fn solve(
        &self,
        request: Request<SolveRequest>,
    ) -> Result<Response<SolveResponse>, Status> {
        let job = self.job_of(&request).await?;
        let req = request.into_inner();
        let definition = definition(&req.definition)?;
        let out = match (definition, req.frontend.is_empty()) {
            (Some(_), false) => {
                return Err(Status::invalid_argument(
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
                *job.frontend.lock().unwrap_or_else(|e| e.into_inner()) = req.frontend.clone();
                let request = BuildRequest {
                    frontend: FrontendRef::Named(req.frontend),
                    options: req.frontend_opt.into_iter().collect(),
                    locals: Default::default(),
                    secrets: Default::default(),
                    ssh: Default::default(),
                    oci_layouts: Default::default(),
                    allow: Vec::new(),
                    solve: false,
                    outputs: Vec::new(),
                    cache_to: Vec::new(),
                    cache_from: Vec::new(),
                    client: job.link.clone(),
                    frontend_timeout: None,
                    prepared: None,
                };
                let engine = self.engine.clone();
                let events = JobEvents::new(job.clone());
                let outcome = tokio::task::spawn_blocking(move || engine.build(request, events))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(|e| Status::unknown(e.to_string()))?;
                FrontendOutput {
                    reference: outcome.definition.map(|d| SolvedRef {
                        definition: Arc::new(d),
                    }),
                    refs: outcome
                        .platforms
                        .into_iter()
                        .map(|(p, d)| {
                            (
                                p,
                                SolvedRef {
                                    definition: Arc::new(d),
                                },
                            )
                        })
                        .collect(),
                    metadata: outcome.metadata,
                }
            }
        };
        let result = buildwit_gateway::wire::to_result(out, |r| {
            Ok::<_, Status>(job.add_ref(r.definition.clone()))
        })?;
        Ok(Response::new(SolveResponse {
            r#ref: String::new(),
            result: Some(result),
        }))
    }

    async fn r#return(
        &self,
        request: Request<ReturnRequest>,
    ) -> Result<Response<ReturnResponse>, Status> {
        let job = self.job_of(&request).await?;
        let req = request.into_inner();
        let returned = match (req.result, req.error) {
            (_, Some(e)) if e.code != 0 => Err(Status::new(e.code.into(), e.message)),
            (Some(r), _) => buildwit_gateway::wire::from_result(r, |r| {
                job.get_ref(&r.id)
                    .map(|definition| SolvedRef { definition })
                    .ok_or_else(|| {
                        Status::not_found(format!("return reference {} not found", r.id))
                    })
            }),
            _ => {
                return Err(Status::invalid_argument(
                    "gateway return must be either result or err",
                ));
            }
        };
        if let Err(e) = &returned
            && e.code() == tonic::Code::NotFound
        {
            return Err(e.clone());
        }
        if !job.deliver(returned) {
            return Err(Status::failed_precondition("gateway result is already set"));
        }
        Ok(Response::new(ReturnResponse {}))
    }

    async fn resolve_image_config(
        &self,
        _: Request<ResolveImageConfigRequest>,
    ) -> Result<Response<ResolveImageConfigResponse>, Status> {
        Err(not_served("ResolveImageConfig"))
    }

    async fn read_file(
        &self,
        _: Request<ReadFileRequest>,
    ) -> Result<Response<ReadFileResponse>, Status> {
        Err(not_served("ReadFile"))
    }

    async fn read_dir(
        &self,
        _: Request<ReadDirRequest>,
    ) -> Result<Response<ReadDirResponse>, Status> {
        Err(not_served("ReadDir"))
    }

    async fn stat_file(
        &self,
        _: Request<StatFileRequest>,
    ) -> Result<Response<StatFileResponse>, Status> {
        Err(not_served("StatFile"))
    }

    async fn evaluate(
        &self,
        _: Request<EvaluateRequest>,
    ) -> Result<Response<EvaluateResponse>, Status> {
        Err(not_served("Evaluate"))
    }

    async fn warn(&self, _: Request<WarnRequest>) -> Result<Response<WarnResponse>, Status> {
        Err(not_served("Warn"))
    }

    async fn inputs(
        &self,
        request: Request<InputsRequest>,
    ) -> Result<Response<InputsResponse>, Status> {
        let job = self.job_of(&request).await?;
        Ok(Response::new(InputsResponse {
            definitions: job
                .inputs
                .iter()
                .map(|(k, d)| (k.clone(), prost::Message::encode_to_vec(d)))
                .collect(),
        }))
    }
}

/// A call the client-side gateway does not answer (its caps do not list it).
fn not_served(call: &str) -> Status {
    Status::unimplemented(format!(
        "{call} is not served to a client's own build function by buildwitd yet"
    ))
}
