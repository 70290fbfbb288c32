//! The management API, after Triton's model repository extension: list the repository's
//! models with their state, load, unload, and set instance counts. Off unless an admin
//! token is configured; every call needs `Authorization: Bearer <token>`.

use super::auth::Admin;
use super::parameters::Parameters;
use crate::{AppState, Error, Result};
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v2/repository/index", web::post().to(index))
        .route("/v2/repository/index", web::get().to(index))
        .route("/v2/repository/models/{name}/load", web::post().to(load))
        .route("/v2/repository/models/{name}/unload", web::post().to(unload))
        .route("/v2/repository/models/{name}/instances", web::put().to(instances));
}

/// A request body that may be empty (Triton's clients send none, `{}` or the object);
/// when present it must be JSON of type `T`.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("malformed JSON body: {e}")))
}

/// The repository index request: `{"ready": true}` lists only the versions ready now.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

/// A load or unload request: `{"parameters": {...}}`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelRequest {
    #[serde(default)]
    parameters: Option<Parameters>,
}

impl ModelRequest {
    /// Refuses parameters other than `allowed`: kiln has, for example, no config override
    /// at load time, and must not pretend to apply one.
    fn check(&self, allowed: &[&str]) -> Result<()> {
        for k in self.parameters.iter().flat_map(|p| p.0.keys()) {
            if !allowed.contains(&k.as_str()) {
                return Err(Error::BadRequest(format!(
                    "parameter {k:?} is not supported here{}",
                    if allowed.is_empty() {
                        String::new()
                    } else {
                        format!("; supported: {allowed:?}")
                    }
                )));
            }
        }
        Ok(())
    }
}

async fn index(_: Admin, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse> {
    let req: IndexRequest = optional_body(&body)?;
    let mut listing = state.index();
    if req.ready {
        listing.retain(|v| v.state == "READY");
    }
    Ok(HttpResponse::Ok().json(listing))
}

/// Runs a blocking repository operation off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    web::block(f)
        .await
        .map_err(|e| Error::Internal(format!("the operation was cancelled: {e}")))?
}

async fn load(_: Admin, state: web::Data<AppState>, name: web::Path<String>, body: web::Bytes) -> Result<HttpResponse> {
    optional_body::<ModelRequest>(&body)?.check(&[])?;
    let name = name.into_inner();
    let s = state.clone();
    let n = name.clone();
    let log = blocking(move || s.load_model(&n)).await?;
    crate::watch::log_lines(&log);
    Ok(HttpResponse::Ok().json(json!({"name": name, "versions": state.versions(&name), "log": log})))
}

async fn unload(
    _: Admin,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse> {
    // kiln models have no dependents: the flag is accepted and changes nothing.
    optional_body::<ModelRequest>(&body)?.check(&["unload_dependents"])?;
    let versions = state.unload_model(&name)?;
    tracing::info!(model = %name, ?versions, "unloaded {name} versions {versions:?} (management API)");
    Ok(HttpResponse::Ok().json(json!({"name": name.into_inner(), "unloaded_versions": versions})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Instances {
    count: usize,
}

async fn instances(
    _: Admin,
    _: super::JsonOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Json<Instances>,
) -> Result<HttpResponse> {
    let (name, count) = (name.into_inner(), body.count);
    let s = state.clone();
    let n = name.clone();
    blocking(move || s.set_instances(&n, count)).await?;
    tracing::info!(model = %name, instances = count, "{name} now runs {count} instance(s) per version (management API)");
    let listing: Vec<_> = state.index().into_iter().filter(|v| v.name == name).collect();
    Ok(HttpResponse::Ok().json(listing))
}
