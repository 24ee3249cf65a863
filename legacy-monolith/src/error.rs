//! What can go wrong in the monolith, and what the client sees of it.
//!
//! Client mistakes carry their message to the client. Infrastructure failures are logged with
//! their cause (inside the request's span, so with its request id) and reach the client as a
//! bare 500, or a 503 when a dependency is down, never with internal details.

use axum::response::{IntoResponse, Response};
use service_kit::ErrorResponse;
use service_kit::session::SessionError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is wrong (400, 401, 403, 404, 409, 413, 415, 422): shown as it is.
    #[error("rejected request: {} {}", .0.code, .0.message)]
    Rejected(ErrorResponse),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("session store: {0}")]
    Sessions(#[from] SessionError),
    #[error("{0}")]
    Password(#[from] service_kit::password::PasswordError),
    /// What the request refers to is on its way from an extracted service and not here yet
    /// (503 with `Retry-After`: a dependency that is behind is not a server error).
    #[error("behind: {0}")]
    Behind(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<ErrorResponse> for Error {
    fn from(e: ErrorResponse) -> Self {
        Error::Rejected(e)
    }
}

impl Error {
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::Rejected(ErrorResponse::not_found(what))
    }
    pub fn conflict(what: impl Into<String>) -> Self {
        Error::Rejected(ErrorResponse::conflict(what))
    }
    pub fn invalid(field: &str, problem: impl Into<String>) -> Self {
        Error::Rejected(ErrorResponse::invalid_field(field, problem))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::Rejected(e) => e.into_response(),
            Error::Behind(what) => {
                tracing::warn!(what, "answered 503: data not here yet");
                let mut r = ErrorResponse::unavailable(what).into_response();
                r.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
                r
            }
            Error::Sessions(e) => {
                tracing::error!(error = %e, "session store unavailable");
                ErrorResponse::unavailable("session store unavailable").into_response()
            }
            other => {
                tracing::error!(error = %other, "request failed");
                ErrorResponse::internal().into_response()
            }
        }
    }
}
