//! `GET /metrics`, and the middleware that counts and times every request.

use crate::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use std::time::Instant;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics));
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.render_metrics())
}

/// (model, version, endpoint) of a request path.
fn classify(path: &str) -> (String, String, &'static str) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["predict"] => (String::new(), String::new(), "predict"),
        ["metrics"] => (String::new(), String::new(), "metrics"),
        ["v2", "health", ..] => (String::new(), String::new(), "health"),
        ["v2", "models", name, rest @ ..] => {
            let (version, rest) = match rest {
                ["versions", v, tail @ ..] => (v.to_string(), tail),
                tail => (String::new(), tail),
            };
            let endpoint = match rest {
                ["infer"] => "infer",
                ["ready"] => "model_ready",
                [] => "model_metadata",
                _ => "other",
            };
            (name.to_string(), version, endpoint)
        }
        ["v2"] => (String::new(), String::new(), "server_metadata"),
        _ => (String::new(), String::new(), "other"),
    }
}

/// Records the status and latency of every request in the server's metrics.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let (model, version, endpoint) = classify(req.path());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let res = next.call(req).await?;
    if let Some(state) = state {
        state
            .metrics
            .observe(&model, &version, endpoint, res.status().as_u16(), start.elapsed());
    }
    Ok(res)
}
