//! The KServe v2 / Open Inference Protocol endpoints.

use super::auth::Caller;
use super::binary;
use super::parameters::Parameters;
pub(crate) use super::tensor::numel;
use super::tensor::{flatten, Data};
use crate::{AppState, Error, Model, Result};
use actix_web::{web, HttpRequest, HttpResponse};
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

/// The outputs a classifier gives by default: name, datatype and shape (`logits` is
/// given too when asked for by name).
pub(crate) fn outputs(m: &Model) -> Vec<(&'static str, &'static str, Vec<i64>)> {
    let classes = m.manifest.model.classes();
    vec![
        ("probabilities", "FP32", vec![-1, classes]),
        ("class", "INT64", vec![-1]),
    ]
}

fn outputs_meta(m: &Model) -> Vec<Value> {
    outputs(m).into_iter().map(|(n, d, s)| tensor_meta(n, d, &s)).collect()
}

/// The model's platform in metadata: Triton's name for a TorchScript model's backend,
/// "kiln" for kiln's own architectures.
pub(crate) fn platform(m: &Model) -> &'static str {
    if m.manifest.model.arch() == "torchscript" {
        "pytorch_libtorch"
    } else {
        "kiln"
    }
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
        "platform": platform(&m),
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
    /// Absent when the tensor is in the binary part (its `binary_data_size` parameter).
    #[serde(default)]
    data: Option<Data>,
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

/// One input tensor as any transport carries it (JSON, binary, gRPC), its elements read
/// as f32, the model's element type.
pub(crate) struct InputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub values: Vec<f32>,
}

/// An output tensor's elements.
pub(crate) enum OutputData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl OutputData {
    /// Raw little-endian bytes, as the binary extension and gRPC's raw outputs carry them.
    pub fn le_bytes(&self) -> Vec<u8> {
        match self {
            OutputData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            OutputData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    fn json(&self) -> Value {
        match self {
            OutputData::F32(v) => json!(v),
            OutputData::I64(v) => json!(v),
        }
    }
}

/// One output tensor of an answer.
pub(crate) struct OutputTensor {
    pub name: &'static str,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
    pub data: OutputData,
}

/// An infer body as the handler reads it, before any model: parsed, checked, and each
/// input's data read as its datatype and counted against its shape.
pub(crate) fn decode(body: &[u8]) -> Result<InferRequest> {
    let req = parse(body)?;
    req.inputs(None)?;
    Ok(req)
}

fn parse(json: &[u8]) -> Result<InferRequest> {
    let req: InferRequest =
        serde_json::from_slice(json).map_err(|e| Error::BadRequest(format!("malformed JSON body: {e}")))?;
    req.check()?;
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

    /// The inputs with their elements, from JSON `data` or, for those with a
    /// `binary_data_size`, from `binary` (the body after the JSON header), in order.
    fn inputs(&self, binary: Option<&[u8]>) -> Result<Vec<InputTensor>> {
        let mut cursor = binary.map(binary::Cursor::new);
        let mut out = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let what = format!("input {:?}", input.name);
            let count = numel(&input.shape)?;
            let size = input.parameters.as_ref().and_then(|p| p.number("binary_data_size"));
            let values = match (&input.data, size, cursor.as_mut()) {
                (Some(_), Some(_), _) => {
                    return Err(Error::BadRequest(format!(
                        "{what} has both data and binary_data_size; send its elements one way"
                    )))
                }
                (Some(data), None, _) => {
                    let values = flatten(data, &input.datatype)?;
                    if values.len() != count {
                        return Err(Error::BadRequest(format!(
                            "input data has {} elements, its shape {:?} needs {count}",
                            values.len(),
                            input.shape
                        )));
                    }
                    values
                }
                (None, Some(size), Some(c)) => {
                    let size = usize::try_from(size as i64)
                        .ok()
                        .filter(|&s| s as f64 == size)
                        .ok_or_else(|| {
                            Error::BadRequest(format!("{what}: binary_data_size {size} is not a byte count"))
                        })?;
                    binary::decode_raw(c.take(size, &what)?, &input.datatype, count, &what)?
                }
                (None, Some(_), None) => {
                    return Err(Error::BadRequest(format!(
                        "{what} has a binary_data_size but the request has no Inference-Header-Content-Length header \
                         (the JSON header's length, followed by the binary data)"
                    )))
                }
                (None, None, _) => return Err(Error::BadRequest(format!("{what} has no data"))),
            };
            out.push(InputTensor {
                name: input.name.clone(),
                shape: input.shape.clone(),
                datatype: input.datatype.clone(),
                values,
            });
        }
        if let Some(c) = cursor {
            c.finish()?;
        }
        Ok(out)
    }

    /// Whether the output `name` is to be sent as binary data: its own `binary_data`
    /// parameter, else the request's `binary_data_output`.
    fn binary_output(&self, name: &str) -> bool {
        let own = self
            .outputs
            .iter()
            .flatten()
            .find(|o| o.name == name)
            .and_then(|o| o.parameters.as_ref())
            .and_then(|p| p.flag("binary_data"));
        own.or_else(|| self.parameters.as_ref().and_then(|p| p.flag("binary_data_output")))
            .unwrap_or(false)
    }
}

/// The outputs kiln gives: those `wanted` (all but logits when none are named).
pub(crate) async fn run(
    state: &AppState,
    m: &Model,
    inputs: Vec<InputTensor>,
    wanted: &[String],
) -> Result<Vec<OutputTensor>> {
    m.engine.classifier(&m.name)?;
    let Ok([input]) = <[InputTensor; 1]>::try_from(inputs) else {
        return Err(Error::BadRequest(format!("model {} takes exactly one input", m.name)));
    };
    if input.name != m.manifest.input.name {
        return Err(Error::BadRequest(format!(
            "unknown input {:?}; the model's input is {:?}",
            input.name, m.manifest.input.name
        )));
    }
    let want = m.manifest.model.input();
    if input.shape.len() != want.len() + 1 || input.shape[1..] != *want {
        return Err(Error::BadRequest(format!(
            "input shape {:?} does not match the model's {:?}",
            input.shape, m.manifest.input.shape
        )));
    }
    let mut values = input.values;
    if input.datatype == "UINT8" {
        // UINT8 inputs are pixel bytes; the model takes pixels in 0..1, as decoded images give.
        values.iter_mut().for_each(|v| *v /= 255.0);
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
    let logits = state.infer(m, samples).await?;
    let probs: Vec<Vec<f32>> = logits.iter().map(|l| kiln_package::softmax(l)).collect();
    let classes = m.manifest.model.classes();
    let default = ["probabilities".to_string(), "class".to_string()];
    let wanted = if wanted.is_empty() { &default[..] } else { wanted };
    wanted
        .iter()
        .map(|name| {
            Ok(match name.as_str() {
                "probabilities" => OutputTensor {
                    name: "probabilities",
                    datatype: "FP32",
                    shape: vec![batch, classes],
                    data: OutputData::F32(probs.concat()),
                },
                "logits" => OutputTensor {
                    name: "logits",
                    datatype: "FP32",
                    shape: vec![batch, classes],
                    data: OutputData::F32(logits.concat()),
                },
                "class" => OutputTensor {
                    name: "class",
                    datatype: "INT64",
                    shape: vec![batch],
                    data: OutputData::I64(probs.iter().map(|p| argmax(p) as i64).collect()),
                },
                other => {
                    return Err(Error::BadRequest(format!(
                        "unknown output {other:?}; the model gives \"probabilities\", \"logits\" and \"class\""
                    )))
                }
            })
        })
        .collect()
}

async fn infer(
    _: Caller,
    _: super::JsonOnly,
    state: web::Data<AppState>,
    path: web::Path<ModelPath>,
    http: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let body = super::read_body(payload, state.config.body_limit).await?;
    let header_length = http
        .headers()
        .get(binary::HEADER_LENGTH)
        .map(|v| v.to_str().unwrap_or("?"));
    let (json_part, binary_part) = binary::split(&body, header_length)?;
    let req = parse(json_part)?;
    let inputs = req.inputs(binary_part)?;
    let m = state.get(&path.name, path.version.as_deref())?;
    let wanted: Vec<String> = req.outputs.iter().flatten().map(|o| o.name.clone()).collect();
    let outputs = run(&state, &m, inputs, &wanted).await?;
    let mut tail = Vec::new();
    let outputs: Vec<Value> = outputs
        .iter()
        .map(|o| {
            let mut v = json!({"name": o.name, "datatype": o.datatype, "shape": o.shape});
            if req.binary_output(o.name) {
                let bytes = o.data.le_bytes();
                v["parameters"] = json!({"binary_data_size": bytes.len()});
                tail.extend_from_slice(&bytes);
            } else {
                v["data"] = o.data.json();
            }
            v
        })
        .collect();
    let mut resp = json!({"model_name": m.name, "model_version": m.version.to_string(), "outputs": outputs});
    if let Some(id) = req.id {
        resp["id"] = id.into();
    }
    if tail.is_empty() {
        return Ok(HttpResponse::Ok().json(resp));
    }
    let mut body = serde_json::to_vec(&resp).map_err(|e| Error::Internal(e.to_string()))?;
    let header_len = body.len();
    body.extend_from_slice(&tail);
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((binary::HEADER_LENGTH, header_len.to_string()))
        .body(body))
}

pub(super) fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .fold(0, |best, (i, v)| if *v > p[best] { i } else { best })
}
