//! The `GRPCInferenceService` implementation: each call does what its HTTP endpoint does,
//! through the same state, checks and model queues, and is counted in the same metrics
//! (endpoint `grpc_<call>`, status as the HTTP answer's code would be).

use super::convert;
use super::proto::grpc_inference_service_server::GrpcInferenceService;
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::model_metadata_response::TensorMetadata;
use super::proto::repository_index_response::ModelIndex;
use super::proto::*;
use crate::routes::parameters::refuse_extension;
use crate::routes::v2;
use crate::{AppState, Error, Result};
use actix_web::ResponseError;
use std::time::Instant;
use tonic::{Code, Request, Response, Status};

/// The service, holding the server's shared state.
pub struct InferenceService {
    state: AppState,
}

impl InferenceService {
    /// A service over `state`.
    pub fn new(state: AppState) -> InferenceService {
        InferenceService { state }
    }

    /// Runs `call`, counts it in the request metrics, and turns an error into a status.
    async fn counted<T>(
        &self,
        endpoint: &'static str,
        model: &str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> std::result::Result<Response<T>, Status> {
        let start = Instant::now();
        let result = call.await;
        let http = match &result {
            Ok(_) => 200,
            Err(e) => e.status_code().as_u16(),
        };
        let (model, version) = self.state.metric_labels(model, "");
        self.state
            .metrics
            .observe(model, version, endpoint, http, start.elapsed());
        result.map(Response::new).map_err(status)
    }

    /// Checks the inference token, when one is configured (metadata `authorization: Bearer <token>`).
    fn caller<T>(&self, req: &Request<T>) -> Result<()> {
        match &self.state.config.inference_token {
            Some(token) => bearer(req, token, "this call"),
            None => Ok(()),
        }
    }

    /// Checks the management token; without one the repository calls are off.
    fn admin<T>(&self, req: &Request<T>) -> Result<()> {
        match &self.state.config.admin_token {
            Some(token) => bearer(req, token, "the model repository calls"),
            None => Err(Error::NotFound(
                "the model repository calls are off (no admin token is configured)".into(),
            )),
        }
    }
}

fn bearer<T>(req: &Request<T>, token: &str, what: &str) -> Result<()> {
    let given = req
        .metadata()
        .get("authorization")
        .ok_or_else(|| Error::Unauthorized(format!("{what} needs `authorization: Bearer <token>` metadata")))?
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .ok_or_else(|| Error::Unauthorized("the authorization metadata must be `Bearer <token>`".into()))?;
    let same = given.trim().len() == token.len()
        && given
            .trim()
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0;
    if same {
        Ok(())
    } else {
        Err(Error::Forbidden(format!("the bearer token is not valid for {what}")))
    }
}

/// kiln's error as a gRPC status: the code a gRPC client acts on, kiln's message.
pub fn status(e: Error) -> Status {
    let code = match &e {
        Error::BadRequest(_) | Error::BatchTooLarge { .. } | Error::ImageTooLarge(_) => Code::InvalidArgument,
        Error::TooLarge(_) => Code::ResourceExhausted,
        Error::NotFound(_) => Code::NotFound,
        Error::Overloaded(_) | Error::Unavailable(_) => Code::Unavailable,
        Error::Timeout(_) => Code::DeadlineExceeded,
        Error::Unauthorized(_) => Code::Unauthenticated,
        Error::Forbidden(_) => Code::PermissionDenied,
        Error::Package(p) if p.is_input_error() => Code::InvalidArgument,
        Error::Package(_) | Error::Internal(_) => Code::Internal,
    };
    Status::new(code, e.to_string())
}

fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

fn meta(t: v2::TensorMeta) -> TensorMetadata {
    TensorMetadata {
        name: t.0,
        datatype: t.1.to_string(),
        shape: t.2,
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> std::result::Result<Response<ServerLiveResponse>, Status> {
        self.counted("grpc_live", "", async { Ok(ServerLiveResponse { live: true }) })
            .await
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> std::result::Result<Response<ServerReadyResponse>, Status> {
        let ready = self.state.ready();
        self.counted("grpc_ready", "", async { Ok(ServerReadyResponse { ready }) })
            .await
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> std::result::Result<Response<ModelReadyResponse>, Status> {
        let r = req.get_ref();
        self.counted("grpc_model_ready", &r.name, async {
            self.caller(&req)?;
            // An unloaded or loading model is not ready (HTTP answers it 503); an unknown
            // one is NOT_FOUND, as HTTP's 404.
            let ready = match self.state.get(&r.name, version(&r.version)) {
                Ok(m) => m.engine.healthy(),
                Err(Error::Unavailable(_)) => false,
                Err(e) => return Err(e),
            };
            Ok(ModelReadyResponse { ready })
        })
        .await
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> std::result::Result<Response<ServerMetadataResponse>, Status> {
        self.counted("grpc_server_metadata", "", async {
            Ok(ServerMetadataResponse {
                name: "kiln".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                extensions: vec!["model_repository".into()],
            })
        })
        .await
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> std::result::Result<Response<ModelMetadataResponse>, Status> {
        let r = req.get_ref();
        self.counted("grpc_model_metadata", &r.name, async {
            self.caller(&req)?;
            let m = self.state.get(&r.name, version(&r.version))?;
            Ok(ModelMetadataResponse {
                name: m.name.clone(),
                versions: self.state.versions(&m.name).iter().map(u64::to_string).collect(),
                platform: v2::platform(&m).into(),
                inputs: v2::inputs(&m).into_iter().map(meta).collect(),
                outputs: v2::outputs(&m).into_iter().map(meta).collect(),
            })
        })
        .await
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> std::result::Result<Response<ModelInferResponse>, Status> {
        self.caller(&req).map_err(status)?;
        let mut r = req.into_inner();
        let name = r.model_name.clone();
        self.counted("grpc_infer", &name, async move {
            for k in r.parameters.keys() {
                refuse_extension(k, "the request")?;
            }
            for o in &r.outputs {
                for k in o.parameters.keys() {
                    refuse_extension(k, &format!("output {:?}", o.name))?;
                }
            }
            let inputs = convert::inputs(&r.inputs, std::mem::take(&mut r.raw_input_contents))?;
            let m = self.state.get(&r.model_name, version(&r.model_version))?;
            let wanted: Vec<String> = r.outputs.iter().map(|o| o.name.clone()).collect();
            let outputs = v2::run(&self.state, &m, inputs, &wanted).await?;
            // Outputs go as raw little-endian bytes, as Triton sends them.
            let (outputs, raw_output_contents) = outputs
                .into_iter()
                .map(|o| {
                    let tensor = InferOutputTensor {
                        name: o.name,
                        datatype: o.datatype.into(),
                        shape: o.shape,
                        parameters: Default::default(),
                        contents: None,
                    };
                    (tensor, o.data.into_le_bytes())
                })
                .unzip();
            Ok(ModelInferResponse {
                model_name: m.name.clone(),
                model_version: m.version.to_string(),
                id: r.id,
                parameters: Default::default(),
                outputs,
                raw_output_contents,
            })
        })
        .await
    }

    async fn repository_index(
        &self,
        req: Request<RepositoryIndexRequest>,
    ) -> std::result::Result<Response<RepositoryIndexResponse>, Status> {
        self.counted("grpc_repository_index", "", async {
            self.admin(&req)?;
            let mut models = self.state.index();
            if req.get_ref().ready {
                models.retain(|v| v.state == "READY");
            }
            Ok(RepositoryIndexResponse {
                models: models
                    .into_iter()
                    .map(|v| ModelIndex {
                        name: v.name,
                        version: v.version,
                        state: v.state.into(),
                        reason: v.reason,
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn repository_model_load(
        &self,
        req: Request<RepositoryModelLoadRequest>,
    ) -> std::result::Result<Response<RepositoryModelLoadResponse>, Status> {
        let name = req.get_ref().model_name.clone();
        self.counted("grpc_repository_load", &name, async {
            self.admin(&req)?;
            if let Some(k) = req.get_ref().parameters.keys().next() {
                return Err(Error::BadRequest(format!("parameter {k:?} is not supported here")));
            }
            let (state, n) = (self.state.clone(), name.clone());
            let log = tokio::task::spawn_blocking(move || state.load_model(&n))
                .await
                .map_err(|e| Error::Internal(format!("the load was cancelled: {e}")))??;
            crate::watch::log_lines(&log);
            Ok(RepositoryModelLoadResponse {})
        })
        .await
    }

    async fn repository_model_unload(
        &self,
        req: Request<RepositoryModelUnloadRequest>,
    ) -> std::result::Result<Response<RepositoryModelUnloadResponse>, Status> {
        let name = req.get_ref().model_name.clone();
        self.counted("grpc_repository_unload", &name, async {
            self.admin(&req)?;
            if let Some(k) = req.get_ref().parameters.keys().find(|k| *k != "unload_dependents") {
                return Err(Error::BadRequest(format!(
                    "parameter {k:?} is not supported here; supported: [\"unload_dependents\"]"
                )));
            }
            let versions = self.state.unload_model(&name)?;
            tracing::info!(model = %name, ?versions, "unloaded {name} versions {versions:?} (gRPC)");
            Ok(RepositoryModelUnloadResponse {})
        })
        .await
    }
}
