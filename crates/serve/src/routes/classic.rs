//! The classic recipe's endpoint, `POST /predict`: `{"image": [...]}` (784 numbers or
//! 28x28, pixels scaled to 0..1), `{"image_base64": "..."}` (a PNG or JPEG), or the PNG or
//! JPEG itself as the body (`Content-Type: image/png` or `image/jpeg`). The answer is the
//! class, its label, the probabilities and the top-k classes.

use super::auth::Caller;
use super::observe::Routed;
use super::tensor::Floats;
use super::v2::argmax;
use crate::{AppState, Error, Result};
use actix_web::{http::header, web, HttpMessage, HttpRequest, HttpResponse};
use base64::Engine;
use kiln_package::top_k;
use serde::Deserialize;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/predict", web::post().to(predict));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    /// The image's pixels scaled to 0..1, flat or nested (parsed straight into f32).
    #[serde(default)]
    image: Option<Floats>,
    /// A PNG or JPEG, base64-encoded.
    #[serde(default)]
    image_base64: Option<String>,
    /// Which model, when several are served.
    #[serde(default)]
    model: Option<String>,
    /// How many classes to list in `top`.
    #[serde(default)]
    top_k: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictQuery {
    model: Option<String>,
    top_k: Option<usize>,
}

pub(crate) enum Input {
    Values(Vec<f32>),
    Encoded(Vec<u8>),
}

/// A request's input, model and top-k, from its body: the image itself (PNG/JPEG content
/// types) or the JSON request, whose query-string model and top-k are the fallbacks.
pub(crate) fn parse_body(
    content_type: &str,
    body: Vec<u8>,
    model: Option<String>,
    top_k: Option<usize>,
) -> Result<(Input, Option<String>, Option<usize>)> {
    // Media types are case-insensitive.
    let is = |prefix: &str| {
        content_type
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    if is("image/png") || is("image/jpeg") {
        Ok((Input::Encoded(body), model, top_k))
    } else if is("application/json") {
        let r: PredictRequest =
            serde_json::from_slice(&body).map_err(|e| Error::BadRequest(format!("malformed JSON body: {e}")))?;
        let input = match (r.image, r.image_base64) {
            (Some(v), None) => Input::Values(v.0),
            (None, Some(b64)) => Input::Encoded(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| Error::BadRequest(format!("image_base64 is not valid base64: {e}")))?,
            ),
            _ => {
                return Err(Error::BadRequest(
                    "give exactly one of \"image\" (pixel values) and \"image_base64\"".into(),
                ))
            }
        };
        Ok((input, r.model.or(model), r.top_k.or(top_k)))
    } else {
        Err(Error::BadRequest(format!(
            "Content-Type {content_type:?} is not accepted; expected application/json, image/png or image/jpeg"
        )))
    }
}

async fn predict(
    _: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<PredictQuery>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let body = super::read_body(payload, state.config.body_limit).await?;
    let query = query.into_inner();
    let (input, model, k) = parse_body(content_type, body, query.model, query.top_k)?;
    let m = match model {
        Some(name) => {
            req.extensions_mut().insert(Routed::Named(name.clone()));
            state.get(&name, None)?
        }
        None => state.only()?,
    };
    req.extensions_mut().insert(Routed::Model(m.clone()));
    m.engine.classifier(&m.name)?;
    let sample = match input {
        Input::Values(v) => m.manifest.prepare_values(v),
        Input::Encoded(bytes) => {
            // Decoding is CPU work sized by the image: on the decode pool, within limits.
            let (model, max_pixels) = (m.clone(), state.config.max_image_pixels);
            state
                .decoder
                .run("image decoding", move || {
                    model
                        .manifest
                        .prepare_image_within(&bytes, max_pixels, "the request's image")
                })
                .await?
        }
    }
    .map_err(|e| match e {
        kiln_package::Error::InputTooLarge(m) => Error::ImageTooLarge(m),
        other => Error::BadRequest(other.to_string()),
    })?;
    let probs: Vec<Vec<f32>> = state
        .infer(&m, vec![sample])
        .await?
        .iter()
        .map(|l| kiln_package::softmax(l))
        .collect();
    let p = probs
        .into_iter()
        .next()
        .ok_or_else(|| Error::Internal("the model gave no answer".into()))?;
    let class = argmax(&p);
    let top = top_k(&p, k.unwrap_or(3).max(1), &m.manifest.output.labels);
    // Serialized straight from borrowed fields (no JSON value tree to build and drop).
    Ok(HttpResponse::Ok().json(PredictResponse {
        model: &m.name,
        model_version: m.version,
        class,
        label: m.manifest.output.labels.get(class),
        probabilities: &p,
        top,
    }))
}

#[derive(serde::Serialize)]
struct PredictResponse<'a> {
    model: &'a str,
    #[serde(serialize_with = "as_string")]
    model_version: u64,
    class: usize,
    label: Option<&'a String>,
    probabilities: &'a [f32],
    top: Vec<kiln_package::ClassScore>,
}

fn as_string<S: serde::Serializer>(v: &u64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}
