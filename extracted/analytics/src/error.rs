//! What can go wrong in the analytics service, and what the client sees of it.

use axum::http::HeaderValue;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use service_kit::ErrorResponse;
use service_kit::session::SessionError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rejected request: {} {}", .0.code, .0.message)]
    Rejected(ErrorResponse),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("session store: {0}")]
    Sessions(#[from] SessionError),
    /// The ingestion queue stayed full: the client should retry later.
    #[error("ingestion queue full")]
    Saturated,
    /// The writer could not store the batch this event was in.
    #[error("storing events failed: {0}")]
    NotStored(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<ErrorResponse> for Error {
    fn from(e: ErrorResponse) -> Self {
        Error::Rejected(e)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::Rejected(e) => e.into_response(),
            Error::Sessions(e) => {
                tracing::error!(error = %e, "session store unavailable");
                ErrorResponse::unavailable("session store unavailable").into_response()
            }
            Error::Saturated => {
                tracing::warn!("ingestion queue full; answering 503");
                let mut r = ErrorResponse::unavailable("too many events right now; retry shortly")
                    .into_response();
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            Error::NotStored(e) => {
                tracing::error!(error = %e, "events not stored");
                ErrorResponse::unavailable("events could not be stored; retry shortly")
                    .into_response()
            }
            Error::Database(e) => {
                tracing::error!(error = %e, "request failed");
                ErrorResponse::internal().into_response()
            }
        }
    }
}
