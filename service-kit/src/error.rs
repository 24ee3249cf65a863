//! The one error body every process in the catalog API answers with.
//!
//! `{"error": {"code": "not_found", "message": "product 42 does not exist"}}`, plus a `fields`
//! object for validation errors. Services keep their own error enum (what can go wrong in *that*
//! service) and convert it into [`ErrorResponse`] at the edge; this type only knows HTTP.
//! Internal errors never carry their cause to the client: the cause is logged, the client gets a
//! fixed message.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Per-field problems of a rejected request, keyed by field (or query parameter) name.
pub type FieldErrors = BTreeMap<String, String>;

/// An HTTP error in the catalog API's format.
#[derive(Debug, Clone)]
pub struct ErrorResponse {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: Option<FieldErrors>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<&'a FieldErrors>,
}

impl ErrorResponse {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "authentication required",
        )
    }

    pub fn unauthorized_with(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "you are not allowed to do this",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this path",
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is too large",
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        )
    }

    /// 422 naming each bad field.
    pub fn validation(fields: FieldErrors) -> Self {
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        let mut err = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            format!("invalid fields: {}", names.join(", ")),
        );
        err.fields = Some(fields);
        err
    }

    /// 422 for one field.
    pub fn invalid_field(field: &str, problem: impl Into<String>) -> Self {
        Self::validation(FieldErrors::from([(field.to_owned(), problem.into())]))
    }

    /// 500 with a fixed message. Log the cause before calling this; it is not kept.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The JSON body, for callers that build responses themselves (e.g. a proxy).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Envelope {
            error: Body {
                code: self.code,
                message: &self.message,
                fields: self.fields.as_ref(),
            },
        })
        .expect("error body serializes")
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response()
    }
}

/// Fallback for unknown paths, so a 404 from the router looks like every other 404.
pub async fn route_not_found() -> ErrorResponse {
    ErrorResponse::not_found("no such endpoint")
}

/// Fallback for a known path with the wrong method.
pub async fn method_not_allowed() -> ErrorResponse {
    ErrorResponse::method_not_allowed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_code_message_and_only_present_fields() {
        let plain = ErrorResponse::not_found("product 42 does not exist").to_json();
        assert_eq!(
            plain,
            r#"{"error":{"code":"not_found","message":"product 42 does not exist"}}"#
        );
        let v = ErrorResponse::invalid_field("price_cents", "must be >= 0").to_json();
        let v: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(v["error"]["code"], "validation");
        assert_eq!(v["error"]["fields"]["price_cents"], "must be >= 0");
    }
}
