//! The management API, after Triton's model repository extension: list the repository's
//! models with their state, load, unload, and set instance counts. Off unless an admin
//! token is configured; every call needs `Authorization: Bearer <token>`.

use super::auth::Admin;
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

async fn index(_: Admin, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.index())
}

/// Runs a blocking repository operation off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    web::block(f)
        .await
        .map_err(|e| Error::Internal(format!("the operation was cancelled: {e}")))?
}

async fn load(_: Admin, state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let name = name.into_inner();
    let s = state.clone();
    let n = name.clone();
    let log = blocking(move || s.load_model(&n)).await?;
    for l in &log {
        eprintln!("kiln-serve: {l}");
    }
    Ok(HttpResponse::Ok().json(json!({"name": name, "versions": state.versions(&name), "log": log})))
}

async fn unload(_: Admin, state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let versions = state.unload_model(&name)?;
    eprintln!("kiln-serve: unloaded {name} versions {versions:?} (management API)");
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
    eprintln!("kiln-serve: {name} now runs {count} instance(s) per version (management API)");
    let listing: Vec<_> = state.index().into_iter().filter(|v| v.name == name).collect();
    Ok(HttpResponse::Ok().json(listing))
}
