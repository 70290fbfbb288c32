//! The classic recipe's endpoint: `POST /predict` with `{"image": [...]}`.

use super::tensor::flatten;
use super::v2::argmax;
use crate::{AppState, Error, Result};
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/predict", web::post().to(predict));
}

#[derive(Deserialize)]
struct PredictRequest {
    /// The image's pixels scaled to 0..1, flat (784 numbers) or nested (28x28).
    image: Value,
    /// Which model, when several are served.
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct PredictQuery {
    model: Option<String>,
}

async fn predict(
    state: web::Data<AppState>,
    query: web::Query<PredictQuery>,
    body: web::Json<PredictRequest>,
) -> Result<HttpResponse> {
    let req = body.into_inner();
    let m = match req.model.or_else(|| query.into_inner().model) {
        Some(name) => state.get(&name, None)?,
        None => state.only()?,
    };
    let values = flatten(&req.image, "FP64")?;
    let sample = m
        .manifest
        .prepare_values(values)
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let probs = state.infer(&m, vec![sample]).await?;
    let p = probs
        .into_iter()
        .next()
        .ok_or_else(|| Error::Internal("the model gave no answer".into()))?;
    let class = argmax(&p);
    Ok(HttpResponse::Ok().json(json!({
        "model": m.name,
        "class": class,
        "label": m.manifest.output.labels.get(class),
        "probabilities": p,
    })))
}
