//! `GET /metrics`, and the middleware that counts and times every request.

use crate::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use std::time::Instant;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/openapi.json", web::get().to(openapi));
}

/// The OpenAPI document of every endpoint, kept in the repository beside this crate.
pub const OPENAPI: &str = include_str!("../../openapi.json");

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(OPENAPI)
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.render_metrics())
}

/// (model, version, endpoint) of a request path.
fn classify(path: &str) -> (String, String, &'static str) {
    // The hot path first, without splitting.
    if path == "/predict" {
        return (String::new(), String::new(), "predict");
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["predict"] => (String::new(), String::new(), "predict"),
        ["metrics"] => (String::new(), String::new(), "metrics"),
        ["openapi.json"] => (String::new(), String::new(), "openapi"),
        ["v2", "repository", ..] => (String::new(), String::new(), "management"),
        ["v2", "health", ..] => (String::new(), String::new(), "health"),
        ["v2", "models", name, rest @ ..] => {
            let (version, rest) = match rest {
                ["versions", v, tail @ ..] => (v.to_string(), tail),
                tail => (String::new(), tail),
            };
            let endpoint = match rest {
                ["infer"] => "infer",
                ["generate"] => "generate",
                ["generate_stream"] => "generate_stream",
                ["ready"] => "model_ready",
                [] => "model_metadata",
                _ => "other",
            };
            (name.to_string(), version, endpoint)
        }
        ["v2"] => (String::new(), String::new(), "server_metadata"),
        // TF Serving's REST API: the verb after a colon in the last segment.
        ["v1", "models", last] if !last.is_empty() => tfserving(last, String::new()),
        ["v1", "models", name, "versions", last] => {
            let (version, endpoint) = tfserving_verb(last);
            (name.to_string(), version.to_string(), endpoint)
        }
        // The model is named in the body; per-model figures are in the generation metrics.
        ["v1", "completions"] => (String::new(), String::new(), "completions"),
        ["v1", "chat", "completions"] => (String::new(), String::new(), "chat_completions"),
        ["v1", "models"] => (String::new(), String::new(), "models"),
        _ => (String::new(), String::new(), "other"),
    }
}

fn tfserving(last: &str, version: String) -> (String, String, &'static str) {
    let (name, endpoint) = tfserving_verb(last);
    (name.to_string(), version, endpoint)
}

/// `name:predict` -> (name, "tfserving_predict"); a segment without a verb is the
/// model's status.
fn tfserving_verb(segment: &str) -> (&str, &'static str) {
    match segment.rsplit_once(':') {
        Some((name, "predict")) => (name, "tfserving_predict"),
        Some((name, _)) => (name, "other"),
        None => (segment, "tfserving_status"),
    }
}

/// The model a handler routed a request to when its URL does not name it (`/predict`
/// names it in the query string or the body, or serves the only model): the request's
/// metrics are labelled with it.
pub(super) enum Routed {
    /// The model that answered.
    Model(std::sync::Arc<crate::Model>),
    /// The name the request gave, before it was looked up (labelled `_unknown` when the
    /// server does not know it).
    Named(String),
}

/// Records the status and latency of every request in the server's metrics.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let (model, version, endpoint) = classify(req.path());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let access = state.as_ref().is_some_and(|s| s.config.access_log).then(|| {
        (
            req.method().to_string(),
            req.path().to_string(),
            req.connection_info().peer_addr().unwrap_or("-").to_string(),
        )
    });
    let res = next.call(req).await?;
    if let Some((method, path, peer)) = access {
        let status = res.status().as_u16();
        let micros = start.elapsed().as_micros() as u64;
        tracing::info!(
            target: "kiln_serve::access",
            %method, %path, status, micros, %peer,
            "{peer} {method} {path} {status} {micros}us"
        );
    }
    if let Some(state) = state {
        let status = res.status().as_u16();
        let extensions = res.request().extensions();
        let model = match extensions.get::<Routed>() {
            Some(Routed::Model(m)) => m.name.as_str(),
            Some(Routed::Named(name)) => name.as_str(),
            None => model.as_str(),
        };
        // Names and versions come from the request: only those the server knows become labels.
        let (model, version) = state.metric_labels(model, &version);
        state.metrics.observe(model, version, endpoint, status, start.elapsed());
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::OPENAPI;
    use std::collections::BTreeSet;

    /// (method, path) of every `.route(...)` in the route modules, TF Serving's verb
    /// routes written as the document writes them.
    fn mounted() -> BTreeSet<(String, String)> {
        let sources = [
            include_str!("v2.rs"),
            include_str!("admin.rs"),
            include_str!("classic.rs"),
            include_str!("tfserving.rs"),
            include_str!("observe.rs"),
            include_str!("openai.rs"),
            include_str!("generate.rs"),
        ];
        let mut out = BTreeSet::new();
        for src in sources {
            // Each route call, on one line or wrapped by rustfmt; its path starts with '/'.
            for part in src.split(".route(").skip(1) {
                let Some(part) = part.trim_start().strip_prefix("\"/") else {
                    continue;
                };
                let (path, rest) = part.split_once('"').unwrap();
                let path = format!("/{path}");
                let method = rest.split("web::").nth(1).unwrap().split('(').next().unwrap();
                let path = match (method, path.as_str()) {
                    ("post", "/v1/models/{name}") => "/v1/models/{name}:predict".to_string(),
                    ("post", "/v1/models/{name}/versions/{version}") => {
                        "/v1/models/{name}/versions/{version}:predict".to_string()
                    }
                    _ => path,
                };
                out.insert((method.to_string(), path));
            }
        }
        out
    }

    #[test]
    fn request_paths_name_their_model_version_and_endpoint() {
        let c = |p: &str| {
            let (m, v, e) = super::classify(p);
            (m, v, e.to_string())
        };
        let t = |m: &str, v: &str, e: &str| (m.to_string(), v.to_string(), e.to_string());
        assert_eq!(c("/v1/models/fashion:predict"), t("fashion", "", "tfserving_predict"));
        assert_eq!(
            c("/v1/models/fashion/versions/2:predict"),
            t("fashion", "2", "tfserving_predict")
        );
        assert_eq!(c("/v1/models/fashion"), t("fashion", "", "tfserving_status"));
        assert_eq!(c("/v1/models/fashion:classify"), t("fashion", "", "other"));
        assert_eq!(c("/v1/models"), t("", "", "models"));
        assert_eq!(c("/v2/models/m/versions/3/infer"), t("m", "3", "infer"));
        assert_eq!(c("/predict"), t("", "", "predict"));
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_mounted_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let mounted = mounted();
        assert!(mounted.len() >= 20, "the route scan found too little: {mounted:?}");
        assert_eq!(
            documented.difference(&mounted).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "documented but not mounted"
        );
        assert_eq!(
            mounted.difference(&documented).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "mounted but not documented"
        );
    }
}
