//! The KServe v2 / Open Inference Protocol endpoints.

use super::auth::Caller;
use super::binary;
use super::parameters::Parameters;
pub(crate) use super::tensor::numel;
use super::tensor::{encode, Data};
use crate::{AppState, Error, Model, Result};
use actix_web::{web, HttpRequest, HttpResponse};
use kiln_model::{ModelSpec, TensorSpec};
use kiln_tensor::{DType, HostTensor};
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

/// A tensor's name, datatype and shape, as metadata states them.
pub(crate) type TensorMeta = (String, &'static str, Vec<i64>);

fn tensor_specs(m: &Model) -> Option<(&[TensorSpec], &[TensorSpec])> {
    match &m.manifest.model {
        ModelSpec::Torchscript(s) if s.is_tensors() => Some((&s.inputs, &s.outputs)),
        _ => None,
    }
}

fn specs_meta(specs: &[TensorSpec]) -> Vec<TensorMeta> {
    specs
        .iter()
        .map(|t| (t.name.clone(), t.dtype.name(), t.batched_shape()))
        .collect()
}

/// The model's inputs: a module's named tensors, or a classifier's one input.
pub(crate) fn inputs(m: &Model) -> Vec<TensorMeta> {
    if let Some((inputs, _)) = tensor_specs(m) {
        return specs_meta(inputs);
    }
    let input = &m.manifest.input;
    vec![(input.name.clone(), input.dtype.name(), input.shape.clone())]
}

/// The outputs a model gives by default: a module's named tensors, or a classifier's
/// probabilities and class (`logits` is given too when asked for by name).
pub(crate) fn outputs(m: &Model) -> Vec<TensorMeta> {
    if let Some((_, outputs)) = tensor_specs(m) {
        return specs_meta(outputs);
    }
    let classes = m.manifest.model.classes();
    vec![
        ("probabilities".into(), "FP32", vec![-1, classes]),
        ("class".into(), "INT64", vec![-1]),
    ]
}

fn meta_json(tensors: Vec<TensorMeta>) -> Vec<Value> {
    tensors.into_iter().map(|(n, d, s)| tensor_meta(&n, d, &s)).collect()
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
        "inputs": meta_json(inputs(&m)),
        "outputs": meta_json(outputs(&m)),
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

/// One input tensor as any transport carries it (JSON, binary, gRPC): its elements as
/// raw little-endian bytes of its datatype, checked against its shape.
pub(crate) struct InputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub bytes: Vec<u8>,
}

impl InputTensor {
    /// The elements as f32, a classifier's element type.
    fn values(&self) -> Result<Vec<f32>> {
        let what = format!("input {:?}", self.name);
        binary::decode_raw(&self.bytes, &self.datatype, numel(&self.shape)?, &what)
    }
}

/// An output tensor's elements.
pub(crate) enum OutputData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    /// A module's output, as the module gave it.
    Raw(HostTensor),
}

impl OutputData {
    /// Raw little-endian bytes, as the binary extension and gRPC's raw outputs carry them.
    pub fn into_le_bytes(self) -> Vec<u8> {
        match self {
            OutputData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            OutputData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            OutputData::Raw(t) => t.data,
        }
    }

    fn json(&self) -> Value {
        match self {
            OutputData::F32(v) => json!(v),
            OutputData::I64(v) => json!(v),
            OutputData::Raw(t) => super::tensor::json_elements(t),
        }
    }
}

/// One output tensor of an answer.
pub(crate) struct OutputTensor {
    pub name: String,
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
    /// Refuses parameters asking for extensions kiln does not implement.
    fn check(&self) -> Result<()> {
        if let Some(p) = &self.parameters {
            p.refuse_unsupported("the request")?;
        }
        for i in &self.inputs {
            if let Some(p) = &i.parameters {
                p.refuse_unsupported(&format!("input {:?}", i.name))?;
            }
        }
        for o in self.outputs.iter().flatten() {
            if let Some(p) = &o.parameters {
                p.refuse_unsupported(&format!("output {:?}", o.name))?;
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
            let bytes = match (&input.data, size, cursor.as_mut()) {
                (Some(_), Some(_), _) => {
                    return Err(Error::BadRequest(format!(
                        "{what} has both data and binary_data_size; send its elements one way"
                    )))
                }
                (Some(data), None, _) => {
                    let bytes = encode(data, &input.datatype)?;
                    if data.0.len() != count {
                        return Err(Error::BadRequest(format!(
                            "input data has {} elements, its shape {:?} needs {count}",
                            data.0.len(),
                            input.shape
                        )));
                    }
                    bytes
                }
                (None, Some(size), Some(c)) => {
                    let size = usize::try_from(size as i64)
                        .ok()
                        .filter(|&s| s as f64 == size)
                        .ok_or_else(|| {
                            Error::BadRequest(format!("{what}: binary_data_size {size} is not a byte count"))
                        })?;
                    let bytes = c.take(size, &what)?;
                    binary::check_raw(bytes, &input.datatype, count, &what)?;
                    bytes.to_vec()
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
                bytes,
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

/// The outputs kiln gives: those `wanted` (a classifier's: all but logits when none are
/// named; a module's: all of them when none are named).
pub(crate) async fn run(
    state: &AppState,
    m: &Model,
    inputs: Vec<InputTensor>,
    wanted: &[String],
) -> Result<Vec<OutputTensor>> {
    // An output asked for twice would be computed and sent twice.
    let mut seen = std::collections::BTreeSet::new();
    if let Some(w) = wanted.iter().find(|w| !seen.insert(w.as_str())) {
        return Err(Error::BadRequest(format!("output {w:?} is asked for twice")));
    }
    if let Some((specs_in, specs_out)) = tensor_specs(m) {
        return run_tensors(state, m, (specs_in, specs_out), inputs, wanted).await;
    }
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
    let mut values = input.values()?;
    if input.datatype == "UINT8" {
        // UINT8 inputs are pixel bytes; the model takes pixels in 0..1, as decoded images give.
        values.iter_mut().for_each(|v| *v /= 255.0);
    }
    state.check_batch(usize::try_from(input.shape[0]).unwrap_or(0))?;
    let per = m.manifest.sample_len().max(1);
    // A single sample moves on as it is; a batch is cut into one buffer per sample.
    let parts = if values.len() == per {
        vec![values]
    } else {
        values.chunks(per).map(<[f32]>::to_vec).collect()
    };
    let samples = parts
        .into_iter()
        .map(|c| {
            m.manifest
                .prepare_values(c)
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
                    name: "probabilities".into(),
                    datatype: "FP32",
                    shape: vec![batch, classes],
                    data: OutputData::F32(probs.concat()),
                },
                "logits" => OutputTensor {
                    name: "logits".into(),
                    datatype: "FP32",
                    shape: vec![batch, classes],
                    data: OutputData::F32(logits.concat()),
                },
                "class" => OutputTensor {
                    name: "class".into(),
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

/// A module of named tensors run on `inputs`: each must be one of its inputs (all of them
/// given, in any order), of its datatype and shape, all with the same batch size.
async fn run_tensors(
    state: &AppState,
    m: &Model,
    (specs_in, specs_out): (&[TensorSpec], &[TensorSpec]),
    inputs: Vec<InputTensor>,
    wanted: &[String],
) -> Result<Vec<OutputTensor>> {
    let names = |specs: &[TensorSpec]| {
        specs
            .iter()
            .map(|t| format!("{:?}", t.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut given: Vec<Option<InputTensor>> = inputs.into_iter().map(Some).collect();
    let mut ordered = Vec::with_capacity(specs_in.len());
    for spec in specs_in {
        let Some(t) = given
            .iter_mut()
            .find(|t| t.as_ref().is_some_and(|t| t.name == spec.name))
            .and_then(Option::take)
        else {
            return Err(Error::BadRequest(format!(
                "input {:?} is missing; model {} takes {}",
                spec.name,
                m.name,
                names(specs_in)
            )));
        };
        if DType::from_name(&t.datatype) != Some(spec.dtype) || !spec.fits(spec.dtype, &t.shape) {
            return Err(Error::BadRequest(format!(
                "input {:?} is {} {:?}; model {} takes {} {:?} (-1: any size)",
                t.name,
                t.datatype,
                t.shape,
                m.name,
                spec.dtype,
                spec.batched_shape()
            )));
        }
        ordered.push(t);
    }
    if let Some(extra) = given.into_iter().flatten().next() {
        let twice = ordered.iter().any(|t| t.name == extra.name);
        return Err(Error::BadRequest(if twice {
            format!("input {:?} is given twice", extra.name)
        } else {
            format!(
                "unknown input {:?}; model {} takes {}",
                extra.name,
                m.name,
                names(specs_in)
            )
        }));
    }
    let rows = ordered[0].shape[0];
    if let Some(t) = ordered.iter().find(|t| t.shape[0] != rows) {
        return Err(Error::BadRequest(format!(
            "input {:?} has {} rows and {:?} {rows}: every input holds the same batch",
            t.name, t.shape[0], ordered[0].name
        )));
    }
    state.check_batch(usize::try_from(rows).unwrap_or(0))?;
    for w in wanted {
        if !specs_out.iter().any(|o| &o.name == w) {
            return Err(Error::BadRequest(format!(
                "unknown output {w:?}; model {} gives {}",
                m.name,
                names(specs_out)
            )));
        }
    }
    let host = ordered
        .into_iter()
        .zip(specs_in)
        .map(|(t, spec)| HostTensor::new(spec.dtype, t.shape, t.bytes).map_err(|e| Error::BadRequest(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let mut outputs: Vec<Option<OutputTensor>> = state
        .infer_tensors(m, host)
        .await?
        .into_iter()
        .zip(specs_out)
        .map(|(t, spec)| {
            Some(OutputTensor {
                name: spec.name.clone(),
                datatype: t.dtype.name(),
                shape: t.shape.clone(),
                data: OutputData::Raw(t),
            })
        })
        .collect();
    if wanted.is_empty() {
        return Ok(outputs.into_iter().flatten().collect());
    }
    // In the order asked for (each at most once: the request's check refuses repeats).
    Ok(wanted
        .iter()
        .filter_map(|w| {
            specs_out
                .iter()
                .position(|o| &o.name == w)
                .and_then(|i| outputs[i].take())
        })
        .collect())
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
        .into_iter()
        .map(|o| {
            let mut v = json!({"name": o.name, "datatype": o.datatype, "shape": o.shape});
            if req.binary_output(&o.name) {
                let bytes = o.data.into_le_bytes();
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
