//! What can go wrong in the catalog service, and what the client sees of it: client mistakes
//! as they are, dependency failures as 503, everything else as a bare 500 (logged with cause).

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
            Error::Database(e) => {
                tracing::error!(error = %e, "request failed");
                ErrorResponse::internal().into_response()
            }
        }
    }
}
