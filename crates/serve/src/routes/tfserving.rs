//! The TensorFlow Serving REST API: `POST /v1/models/{name}[/versions/{v}]:predict` with
//! `instances` (row form) or `inputs` (columnar form), and `GET /v1/models/{name}` status.

use super::auth::Caller;
use super::tensor::{flatten, Data};
use crate::{AppState, Error, Result};
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    // TF Serving puts the verb after a colon in the last segment: `{name}:predict`.
    cfg.route("/v1/models/{name}", web::get().to(status))
        .route("/v1/models/{name}", web::post().to(predict))
        .route("/v1/models/{name}/versions/{version}", web::post().to(predict_version));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PredictRequest {
    #[serde(default)]
    instances: Option<Vec<Value>>,
    #[serde(default)]
    inputs: Option<Value>,
    #[serde(default)]
    signature_name: Option<String>,
}

/// The only signature a kiln model has, as TF Serving names a model's default one.
const DEFAULT_SIGNATURE: &str = "serving_default";

fn split_verb(segment: &str) -> Result<&str> {
    match segment.rsplit_once(':') {
        Some((name, "predict")) => Ok(name),
        Some((_, verb)) => Err(Error::NotFound(format!(
            "unknown verb :{verb}; this server answers :predict"
        ))),
        None => Err(Error::NotFound(format!(
            "POST /v1/models/{segment} needs a verb, e.g. /v1/models/{segment}:predict"
        ))),
    }
}

async fn status(_: Caller, state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let versions = state.versions(&name);
    let failed = state.failures(&name);
    if versions.is_empty() && failed.is_empty() {
        state.get(&name, None)?;
    }
    // As TensorFlow Serving reports them: served versions AVAILABLE, failed ones END.
    let mut list: Vec<Value> = versions
        .iter()
        .map(|v| json!({"version": v.to_string(), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}))
        .collect();
    list.extend(failed.into_iter().map(|(v, e)| {
        json!({"version": v.to_string(), "state": "END", "status": {"error_code": "UNKNOWN", "error_message": e}})
    }));
    Ok(HttpResponse::Ok().json(json!({ "model_version_status": list })))
}

async fn predict(
    _: Caller,
    _: super::JsonOnly,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<PredictRequest>,
) -> Result<HttpResponse> {
    let name = split_verb(&path)?.to_string();
    run(state, &name, None, body.into_inner()).await
}

async fn predict_version(
    _: Caller,
    _: super::JsonOnly,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<PredictRequest>,
) -> Result<HttpResponse> {
    let (name, segment) = path.into_inner();
    let version = split_verb(&segment)?.to_string();
    run(state, &name, Some(&version), body.into_inner()).await
}

/// The samples of a request to `name` whose one input is `input_name`, each as the
/// values it holds, and whether the request was in columnar form. More than `max_batch`
/// samples are refused before any is read.
pub(crate) fn samples_of(
    req: PredictRequest,
    name: &str,
    input_name: &str,
    max_batch: usize,
) -> Result<(Vec<Vec<f32>>, bool)> {
    if let Some(sig) = req.signature_name.as_deref().filter(|s| *s != DEFAULT_SIGNATURE) {
        return Err(Error::BadRequest(format!(
            "signature {sig:?} is unknown; model {name} has only {DEFAULT_SIGNATURE:?}"
        )));
    }
    // Named inputs must be the model's one input; another name is refused, not ignored.
    let only_input = |map: serde_json::Map<String, Value>, what: &str| -> Result<Value> {
        let names: Vec<&String> = map.keys().collect();
        match names.as_slice() {
            [n] if *n == input_name => Ok(map.into_iter().next().map(|(_, v)| v).unwrap_or(Value::Null)),
            _ => Err(Error::BadRequest(format!(
                "{what} names inputs {names:?}; model {name} has one input, {input_name:?}"
            ))),
        }
    };
    let (rows, columnar) = match (req.instances, req.inputs) {
        (Some(rows), None) => (rows, false),
        (None, Some(Value::Array(rows))) => (rows, true),
        (None, Some(Value::Object(map))) => match only_input(map, "\"inputs\"")? {
            Value::Array(rows) => (rows, true),
            _ => return Err(Error::BadRequest("\"inputs\" must hold a list of samples".into())),
        },
        _ => {
            return Err(Error::BadRequest(
                "give exactly one of \"instances\" (row form) and \"inputs\" (columnar form)".into(),
            ))
        }
    };
    if rows.is_empty() {
        return Err(Error::BadRequest("no samples given".into()));
    }
    if rows.len() > max_batch {
        return Err(Error::BatchTooLarge {
            samples: rows.len(),
            max: max_batch,
        });
    }
    let samples = rows
        .into_iter()
        .map(|r| {
            // A row may be the sample itself or {"input": sample}.
            let v = match r {
                Value::Object(o) => only_input(o, "an instance")?,
                other => other,
            };
            flatten(&Data::from_value(&v)?, "FP64")
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((samples, columnar))
}

async fn run(
    state: web::Data<AppState>,
    name: &str,
    version: Option<&str>,
    req: PredictRequest,
) -> Result<HttpResponse> {
    let m = state.get(name, version)?;
    m.engine.classifier(&m.name)?;
    let (samples, columnar) = samples_of(req, name, &m.manifest.input.name, state.config.max_batch)?;
    let samples = samples
        .into_iter()
        .map(|s| {
            m.manifest
                .prepare_values(s)
                .map_err(|e| Error::BadRequest(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let probs: Vec<Vec<f32>> = state
        .infer(&m, samples)
        .await?
        .iter()
        .map(|l| kiln_package::softmax(l))
        .collect();
    Ok(HttpResponse::Ok().json(if columnar {
        json!({"outputs": probs})
    } else {
        json!({"predictions": probs})
    }))
}
