//! The HTTP endpoints, mounted with [`configure`].

mod admin;
mod auth;
pub(crate) mod binary;
pub(crate) mod classic;
mod generate;
mod observe;
mod openai;
pub(crate) mod parameters;
mod tensor;
pub(crate) mod tfserving;
pub(crate) mod v2;

pub use observe::record;

use crate::{AppState, Error};
use actix_web::{dev::Payload, error::JsonPayloadError, web, FromRequest, HttpMessage, HttpRequest};
use std::future::{ready, Ready};

/// A request whose body may be read as JSON: `Content-Type: application/json` (or
/// `+json`), or none at all, as v2 clients such as tritonclient send. Put before
/// `web::Json` in a handler's arguments.
struct JsonOnly;

impl FromRequest for JsonOnly {
    type Error = Error;
    type Future = Ready<Result<JsonOnly, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let json = |m: &mime::Mime| m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON);
        ready(match req.mime_type() {
            Ok(None) => Ok(JsonOnly),
            Ok(Some(m)) if json(&m) => Ok(JsonOnly),
            // A body with binary tensors (Triton's extension) is JSON followed by raw bytes.
            _ if req.headers().contains_key(binary::HEADER_LENGTH) => Ok(JsonOnly),
            _ => Err(Error::BadRequest(
                "expected a JSON body with Content-Type: application/json".into(),
            )),
        })
    }
}

/// Reads the body up to the configured limit (413 beyond).
pub(crate) async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, Error> {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Error::BadRequest(format!("cannot read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(Error::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Mounts every endpoint, with JSON bodies limited to the configured size and every
/// body error answered as `{"error": ...}`.
pub fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let limit = state.config.body_limit;
        // A missing Content-Type is taken as JSON (v2 clients such as tritonclient send none);
        // a different one is refused by `JsonOnly`.
        let json = web::JsonConfig::default()
            .limit(limit)
            .content_type_required(false)
            .error_handler(move |e, req| {
                if req.headers().contains_key("inference-header-content-length") {
                    return Error::BadRequest(
                        "this endpoint takes JSON only; binary tensor data is taken by /v2/models/{name}/infer".into(),
                    )
                    .into();
                }
                match e {
                    JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                        Error::TooLarge(limit)
                    }
                    JsonPayloadError::ContentType => {
                        Error::BadRequest("expected a JSON body with Content-Type: application/json".into())
                    }
                    other => Error::BadRequest(format!("malformed JSON body: {other}")),
                }
                .into()
            });
        let query = web::QueryConfig::default()
            .error_handler(|e, _| Error::BadRequest(format!("bad query string: {e}")).into());
        let bytes = web::PayloadConfig::default().limit(limit);
        cfg.app_data(web::Data::new(state))
            .app_data(json)
            .app_data(query)
            .app_data(bytes)
            // /predict first: routes are tried in order, and the later ones' path patterns
            // cost a regex match each (about 2% of a /predict's CPU when it came third).
            .configure(classic::configure)
            .configure(v2::configure)
            .configure(admin::configure)
            .configure(observe::configure)
            .configure(tfserving::configure)
            .configure(openai::configure)
            .configure(generate::configure);
    }
}
