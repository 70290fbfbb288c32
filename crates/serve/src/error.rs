//! The error type of kiln-serve, which is also its HTTP error answer: each kind maps to a
//! status code and a `{"error": "..."}` body.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

/// Everything a request or the server's start can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or does not fit the model (400).
    #[error("{0}")]
    BadRequest(String),
    /// The body is over the size limit (413).
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// A request of more samples than the server runs in one batch (413).
    #[error("the request holds {samples} samples; this server runs at most {max} per batch (--max-batch): split it")]
    BatchTooLarge {
        /// Samples in the request.
        samples: usize,
        /// The limit.
        max: usize,
    },
    /// An image over the decoding limit (413).
    #[error("{0} (--max-image-pixels)")]
    ImageTooLarge(String),
    /// No such model or version (404).
    #[error("{0}")]
    NotFound(String),
    /// The model's queue is full (429, with Retry-After).
    #[error("model {0} is at capacity; retry shortly")]
    Overloaded(String),
    /// The answer did not come in time (504).
    #[error("the request was not answered within {0} ms")]
    Timeout(u128),
    /// The model is loaded but cannot answer now (503).
    #[error("{0}")]
    Unavailable(String),
    /// No or a malformed `Authorization: Bearer` header (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A bearer token that is not the configured one (403).
    #[error("{0}")]
    Forbidden(String),
    /// A package failed to load.
    #[error(transparent)]
    Package(#[from] kiln_package::Error),
    /// Anything else (500).
    #[error("{0}")]
    Internal(String),
}

/// The result type of kiln-serve.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::TooLarge(_) | Error::BatchTooLarge { .. } | Error::ImageTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // A package error the request caused (a value count, a bad image) is the
            // caller's; any other is the server's.
            Error::Package(e) if e.is_input_error() => StatusCode::BAD_REQUEST,
            Error::Package(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        match self {
            Error::Overloaded(_) => {
                r.insert_header((header::RETRY_AFTER, "1"));
            }
            Error::Unauthorized(_) => {
                r.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        r.json(serde_json::json!({ "error": self.to_string() }))
    }
}
