//! The KServe v2 / Open Inference Protocol endpoints.

use super::auth::Caller;
use super::parameters::Parameters;
use super::tensor::{flatten, numel, Data};
use crate::{AppState, Error, Model, Result};
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v2", web::get().to(server_metadata))
        .route("/v2/health/live", web::get().to(live))
        .route("/v2/health/ready", web::get().to(ready))
        .route("/v2/models/{name}", web::get().to(model_metadata))
        .route("/v2/models/{name}/versions/{version}", web::get().to(model_metadata))
        .route("/v2/models/{name}/ready", web::get().to(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", web::get().to(model_ready))
        .route("/v2/models/{name}/infer", web::post().to(infer))
        .route("/v2/models/{name}/versions/{version}/infer", web::post().to(infer));
}

#[derive(Deserialize)]
pub(super) struct ModelPath {
    pub(super) name: String,
    pub(super) version: Option<String>,
}

async fn server_metadata() -> HttpResponse {
    HttpResponse::Ok().json(json!({"name": "kiln", "version": env!("CARGO_PKG_VERSION"), "extensions": []}))
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"live": true}))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let ready = state.ready();
    let body = json!({"ready": ready});
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

fn tensor_meta(name: &str, datatype: impl std::fmt::Display, shape: &[i64]) -> Value {
    json!({"name": name, "datatype": datatype.to_string(), "shape": shape})
}

fn outputs_meta(m: &Model) -> Vec<Value> {
    let classes = m.manifest.model.classes();
    vec![
        tensor_meta("probabilities", "FP32", &[-1, classes]),
        tensor_meta("class", "INT64", &[-1]),
    ]
}

async fn model_metadata(_: Caller, state: web::Data<AppState>, path: web::Path<ModelPath>) -> Result<HttpResponse> {
    let m = state.get(&path.name, path.version.as_deref())?;
    let versions: Vec<String> = state.versions(&m.name).iter().map(u64::to_string).collect();
    let input = &m.manifest.input;
    let failed: Vec<Value> = state
        .failures(&m.name)
        .into_iter()
        .map(|(v, error)| json!({"version": v.to_string(), "error": error}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "name": m.name,
        "versions": versions,
        "failed_versions": failed,
        // Triton's name for a TorchScript model's backend; kiln's own architectures are "kiln".
        "platform": if m.manifest.model.arch() == "torchscript" { "pytorch_libtorch" } else { "kiln" },
        "inputs": [tensor_meta(&input.name, input.dtype, &input.shape)],
        "outputs": outputs_meta(&m),
        "parameters": {"labels": m.manifest.output.labels},
    })))
}

async fn model_ready(_: Caller, state: web::Data<AppState>, path: web::Path<ModelPath>) -> Result<HttpResponse> {
    let m = state.get(&path.name, path.version.as_deref())?;
    let body = json!({"name": m.name, "version": m.version.to_string(), "ready": m.engine.healthy()});
    Ok(if m.engine.healthy() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    })
}

// The v2 protocol's request types, field for field: anything else, or a field of another
// type, is refused rather than ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Parameters>,
    data: Data,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InferInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

/// An infer body as the handler reads it, before any model: parsed, checked, and each
/// input's data read as its datatype and counted against its shape.
pub(crate) fn decode(body: &[u8]) -> Result<InferRequest> {
    let req: InferRequest =
        serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("malformed JSON body: {e}")))?;
    req.check()?;
    for input in &req.inputs {
        let values = flatten(&input.data, &input.datatype)?;
        if values.len() != numel(&input.shape)? {
            return Err(Error::BadRequest("element count does not match the shape".into()));
        }
    }
    Ok(req)
}

impl InferRequest {
    /// Refuses parameters asking for extensions kiln does not implement, and an output
    /// asked for twice (each would be computed and sent again).
    fn check(&self) -> Result<()> {
        if let Some(p) = &self.parameters {
            p.refuse_unsupported("the request")?;
        }
        for i in &self.inputs {
            if let Some(p) = &i.parameters {
                p.refuse_unsupported(&format!("input {:?}", i.name))?;
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for o in self.outputs.iter().flatten() {
            if let Some(p) = &o.parameters {
                p.refuse_unsupported(&format!("output {:?}", o.name))?;
            }
            if !seen.insert(o.name.as_str()) {
                return Err(Error::BadRequest(format!("output {:?} is asked for twice", o.name)));
            }
        }
        Ok(())
    }
}

async fn infer(
    _: Caller,
    _: super::JsonOnly,
    state: web::Data<AppState>,
    path: web::Path<ModelPath>,
    body: web::Json<InferRequest>,
) -> Result<HttpResponse> {
    let m = state.get(&path.name, path.version.as_deref())?;
    m.engine.classifier(&m.name)?;
    let req = body.into_inner();
    req.check()?;
    let [input] = req.inputs.as_slice() else {
        return Err(Error::BadRequest(format!(
            "model {} takes exactly one input, got {}",
            m.name,
            req.inputs.len()
        )));
    };
    if input.name != m.manifest.input.name {
        return Err(Error::BadRequest(format!(
            "unknown input {:?}; the model's input is {:?}",
            input.name, m.manifest.input.name
        )));
    }
    let want = m.manifest.model.input();
    let sample: Vec<i64> = if input.shape.len() == want.len() + 1 {
        input.shape[1..].to_vec()
    } else {
        Vec::new()
    };
    if sample != want {
        return Err(Error::BadRequest(format!(
            "input shape {:?} does not match the model's {:?}",
            input.shape, m.manifest.input.shape
        )));
    }
    let mut values = flatten(&input.data, &input.datatype)?;
    if input.datatype == "UINT8" {
        // UINT8 inputs are pixel bytes; the model takes pixels in 0..1, as decoded images give.
        values.iter_mut().for_each(|v| *v /= 255.0);
    }
    let expected = numel(&input.shape)?;
    if values.len() != expected {
        return Err(Error::BadRequest(format!(
            "input data has {} elements, its shape {:?} needs {expected}",
            values.len(),
            input.shape
        )));
    }
    state.check_batch(usize::try_from(input.shape[0]).unwrap_or(0))?;
    let per = m.manifest.sample_len().max(1);
    let samples = values
        .chunks(per)
        .map(|c| {
            m.manifest
                .prepare_values(c.to_vec())
                .map_err(|e| Error::BadRequest(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = samples.len() as i64;
    let logits = state.infer(&m, samples).await?;
    let probs: Vec<Vec<f32>> = logits.iter().map(|l| kiln_package::softmax(l)).collect();
    let classes = m.manifest.model.classes();
    let wanted: Vec<String> = match &req.outputs {
        Some(o) if !o.is_empty() => o.iter().map(|o| o.name.clone()).collect(),
        _ => vec!["probabilities".into(), "class".into()],
    };
    let mut outputs = Vec::new();
    for name in &wanted {
        match name.as_str() {
            "probabilities" => outputs.push(json!({
                "name": "probabilities", "datatype": "FP32", "shape": [batch, classes],
                "data": probs.iter().flatten().collect::<Vec<_>>(),
            })),
            "logits" => outputs.push(json!({
                "name": "logits", "datatype": "FP32", "shape": [batch, classes],
                "data": logits.iter().flatten().collect::<Vec<_>>(),
            })),
            "class" => outputs.push(json!({
                "name": "class", "datatype": "INT64", "shape": [batch],
                "data": probs.iter().map(|p| argmax(p)).collect::<Vec<_>>(),
            })),
            other => {
                return Err(Error::BadRequest(format!(
                    "unknown output {other:?}; the model gives \"probabilities\" and \"class\""
                )))
            }
        }
    }
    let mut resp = json!({"model_name": m.name, "model_version": m.version.to_string(), "outputs": outputs});
    if let Some(id) = req.id {
        resp["id"] = id.into();
    }
    Ok(HttpResponse::Ok().json(resp))
}

pub(super) fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .fold(0, |best, (i, v)| if *v > p[best] { i } else { best })
}
