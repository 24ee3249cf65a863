//! How the edge answers a request it cannot forward, or whose upstream failed: one mapping from
//! what went wrong to the status, the error code and message (the catalog API's error format),
//! the metric and the access log's `error` field, for both pipelines. Which requests are retried
//! on another backend is decided here too ([`retried_on_connect_failure`]).
//!
//! A pipeline only translates its own view of a failure (Pingora's `Error`, the fast path's
//! exchange) into a [`Failure`]; nothing about the answer is decided in a pipeline.

use std::borrow::Cow;

use http::{Method, StatusCode};
use service_kit::ErrorResponse;

use crate::metrics::Metrics;
use crate::upstream::{Backend, Pool};

/// What went wrong with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The request head was larger than the limit, in bytes (431).
    HeadTooLarge(usize),
    /// The request head had more header lines than the limit (431).
    TooManyHeaders(usize),
    /// The request head did not arrive within the limit (408).
    HeadTimeout(std::time::Duration),
    /// A small body the edge reads with the head did not arrive within the head's limit (408).
    BodyTimeout(std::time::Duration),
    /// The request itself is malformed or not acceptable at the edge (400).
    BadRequest(Cow<'static, str>),
    /// No route matches (404).
    NoRoute,
    /// Every backend of the pool is out of rotation (503).
    NoBackend,
    /// The upstream's circuit breaker is open and the request cannot fall back (503, with
    /// `Retry-After`).
    BreakerOpen { retry_after: std::time::Duration },
    /// No backend could be connected to; `timeout`: the last attempt timed out (504, else 502).
    Connect { timeout: bool },
    /// The upstream took the request and did not answer in time (504).
    Timeout,
    /// The upstream's answer was broken or malformed, or it closed before answering (502).
    BadUpstream,
    /// The upstream answered with a status its breaker counts as failed, and the route's
    /// fallback serves the request instead ([`super::fallback::replaced_statuses`]); answered
    /// 502 only should the fallback be unavailable.
    FailedAnswer(u16),
    /// The client went away; nothing can be answered.
    ClientGone,
    /// A fault of Banyan's own (500).
    Internal,
}

impl Failure {
    /// The answer the client gets; `None` when there is no one to answer.
    pub(crate) fn answer(&self, upstream: &str) -> Option<ErrorResponse> {
        let with = |status: StatusCode, code, message: String| {
            let mut e = ErrorResponse::unavailable(message);
            e.status = status;
            e.code = code;
            e
        };
        let edge = |status: StatusCode, code, message: String| ErrorResponse {
            status,
            code,
            message,
            fields: None,
        };
        Some(match self {
            Failure::HeadTooLarge(limit) => edge(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!("request head over {limit} bytes"),
            ),
            Failure::TooManyHeaders(limit) => edge(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!("more than {limit} request headers"),
            ),
            Failure::HeadTimeout(limit) => edge(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request head did not arrive within {} ms",
                    limit.as_millis()
                ),
            ),
            Failure::BodyTimeout(limit) => edge(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} ms of the request's first byte",
                    limit.as_millis()
                ),
            ),
            Failure::BadRequest(why) => ErrorResponse::bad_request(why.as_ref()),
            Failure::NoRoute => ErrorResponse::not_found("no route for this path"),
            Failure::NoBackend => with(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("no healthy backend for upstream {upstream}"),
            ),
            Failure::BreakerOpen { .. } => with(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("upstream {upstream} is failing; its circuit breaker is open"),
            ),
            Failure::Connect { timeout: true } | Failure::Timeout => with(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                format!("upstream {upstream} did not answer in time"),
            ),
            Failure::Connect { timeout: false }
            | Failure::BadUpstream
            | Failure::FailedAnswer(_) => with(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                format!("upstream {upstream} is unavailable"),
            ),
            Failure::ClientGone => return None,
            Failure::Internal => ErrorResponse::internal(),
        })
    }

    /// Seconds for the answer's `Retry-After` header, when it has one.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            Failure::BreakerOpen { retry_after } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            _ => None,
        }
    }

    /// The `kind` of `banyan_upstream_failures_total` this counts as, if it is the upstream's.
    pub(crate) fn upstream_metric(&self) -> Option<&'static str> {
        match self {
            Failure::NoBackend
            | Failure::Connect { timeout: false }
            | Failure::BadUpstream
            | Failure::FailedAnswer(_) => Some("error"),
            Failure::Connect { timeout: true } | Failure::Timeout => Some("timeout"),
            _ => None,
        }
    }

    /// The access log's `error` field.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Failure::HeadTooLarge(_) | Failure::TooManyHeaders(_) => "headers_too_large",
            Failure::HeadTimeout(_) | Failure::BodyTimeout(_) => "request_timeout",
            Failure::BadRequest(_) => "bad_request",
            Failure::NoRoute => "no_route",
            Failure::NoBackend => "no_backend",
            Failure::BreakerOpen { .. } => "breaker_open",
            Failure::Connect { timeout: false } => "connect",
            Failure::Connect { timeout: true } => "connect_timeout",
            Failure::Timeout => "upstream_timeout",
            Failure::BadUpstream => "bad_upstream",
            Failure::FailedAnswer(_) => "failed_answer",
            Failure::ClientGone => "client_gone",
            Failure::Internal => "internal",
        }
    }
}

/// Whether a request whose connection attempt failed is tried on another backend: only when
/// retrying cannot duplicate an effect (nothing was sent yet, and the method is idempotent:
/// GET, HEAD, OPTIONS, PUT, DELETE; TRACE is not forwarded twice either, as the README says).
pub(crate) fn retried_on_connect_failure(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// Whether a request whose fresh connection was closed or reset before any byte of an answer
/// is tried on another backend: only a request without a body whose repetition changes
/// nothing (GET, HEAD, OPTIONS). A backend killed while it held the request looks like this.
pub(crate) fn retried_after_reset(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a request is tried again on a new connection when the kept-alive connection it was
/// sent on closed or reset before any byte of an answer (the backend closing an idle connection
/// just as it was reused): only an idempotent method. For anything else the backend may have
/// taken the request before the connection went (Pingora's rule too, and nginx's).
pub(crate) fn retried_on_reused_close(method: &Method) -> bool {
    method.is_idempotent()
}

/// A connection attempt to `backend` failed: it leaves rotation (until a health check or its
/// cool-off brings it back), and the attempt is counted and logged.
pub(crate) fn connect_failed(metrics: &Metrics, pool: &Pool, backend: &Backend, timeout: bool) {
    backend.mark_connect_failure(pool.spec.health.is_some());
    metrics.upstream_failure(pool.name(), "connect");
    tracing::warn!(upstream = pool.name(), backend = %backend.addr, timeout, "connect failed; backend out of rotation");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_one_answer_metric_and_label() {
        let cases = [
            (Failure::NoRoute, 404, None),
            (Failure::NoBackend, 503, Some("error")),
            (Failure::Connect { timeout: false }, 502, Some("error")),
            (Failure::Connect { timeout: true }, 504, Some("timeout")),
            (Failure::Timeout, 504, Some("timeout")),
            (Failure::BadUpstream, 502, Some("error")),
            (Failure::BadRequest("x".into()), 400, None),
            (
                Failure::BreakerOpen {
                    retry_after: std::time::Duration::from_millis(1500),
                },
                503,
                None,
            ),
        ];
        for (f, status, metric) in cases {
            assert_eq!(f.answer("u").unwrap().status.as_u16(), status, "{f:?}");
            assert_eq!(f.upstream_metric(), metric, "{f:?}");
        }
        assert!(Failure::ClientGone.answer("u").is_none());
        let open = Failure::BreakerOpen {
            retry_after: std::time::Duration::from_millis(1500),
        };
        assert_eq!(open.retry_after(), Some(2), "rounded up");
        assert_eq!(Failure::NoBackend.retry_after(), None);
        assert!(!retried_on_connect_failure(&Method::TRACE));
        assert!(!retried_on_connect_failure(&Method::POST));
    }
}
