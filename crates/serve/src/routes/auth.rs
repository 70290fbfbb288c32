//! Bearer tokens: [`Admin`] guards the management API, [`Caller`] the inference and
//! metadata endpoints when an inference token is configured.

use crate::{AppState, Error};
use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use std::future::{ready, Ready};

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the request's `Authorization: Bearer` header against `token`.
fn check(req: &HttpRequest, token: &str, what: &str) -> Result<(), Error> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| Error::Unauthorized(format!("{what} needs an `Authorization: Bearer <token>` header")))?;
    let given = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .ok_or_else(|| Error::Unauthorized("the Authorization header must be `Bearer <token>`".into()))?;
    if same(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(Error::Forbidden(format!("the bearer token is not valid for {what}")))
    }
}

fn state(req: &HttpRequest) -> Result<web::Data<AppState>, Error> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| Error::Internal("the server state is missing".into()))
}

/// A caller holding the management token.
pub struct Admin;

impl FromRequest for Admin {
    type Error = Error;
    type Future = Ready<Result<Admin, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(state(req).and_then(|s| match &s.config.admin_token {
            Some(token) => check(req, token, "the management API").map(|()| Admin),
            None => Err(Error::NotFound(
                "the management API is off (no admin token is configured)".into(),
            )),
        }))
    }
}

/// A caller allowed to use the models: anyone, or holders of the inference token.
pub struct Caller;

impl FromRequest for Caller {
    type Error = Error;
    type Future = Ready<Result<Caller, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(state(req).and_then(|s| match &s.config.inference_token {
            Some(token) => check(req, token, "this endpoint").map(|()| Caller),
            None => Ok(Caller),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
