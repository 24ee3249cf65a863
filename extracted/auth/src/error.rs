//! What can go wrong in the auth service, and what the client sees of it: client mistakes as
//! they are, the session store being down as 503, everything else as a bare 500 (logged with
//! its cause, never with a password or a session id).

use axum::response::{IntoResponse, Response};
use service_kit::ErrorResponse;
use service_kit::password::PasswordError;
use service_kit::session::SessionError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rejected request: {} {}", .0.code, .0.message)]
    Rejected(ErrorResponse),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("session store: {0}")]
    Sessions(#[from] SessionError),
    #[error("{0}")]
    Password(#[from] PasswordError),
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
            other => {
                tracing::error!(error = %other, "request failed");
                ErrorResponse::internal().into_response()
            }
        }
    }
}
