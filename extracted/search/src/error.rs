//! What can go wrong in the search service, and what the client sees of it.

use axum::response::{IntoResponse, Response};
use service_kit::ErrorResponse;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rejected request: {} {}", .0.code, .0.message)]
    Rejected(ErrorResponse),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("search task: {0}")]
    Task(#[from] tokio::task::JoinError),
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
            other => {
                tracing::error!(error = %other, "request failed");
                ErrorResponse::internal().into_response()
            }
        }
    }
}
