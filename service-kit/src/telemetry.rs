//! Logging, request ids and the access log.
//!
//! Logs go to stderr (stdout is reserved for the one readiness line, see [`crate::server`]), as
//! human-readable text or, with `LOG_FORMAT=json`, one JSON object per line for a collector.
//! Every request gets an id: the caller's `X-Request-Id` when it is well-formed (the proxy sets
//! one, so one id follows a request across processes), otherwise a fresh one. The id is returned
//! in the response and attached to every log line of the request.
//!
//! The access log records method, path, status and duration. Never the query string, headers or
//! body: those carry session ids, passwords and tokens.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Installs the global subscriber. `RUST_LOG` filters (default `info`), `LOG_FORMAT=json`
/// switches to JSON lines. Safe to call twice (the second call does nothing).
///
/// The search engine (tantivy) logs every index commit and segment merge at info; those say
/// nothing an operator acts on, so they are kept to warnings unless `RUST_LOG` names tantivy.
pub fn init() {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("tantivy"))
        && let Ok(quiet) = "tantivy=warn".parse()
    {
        filter = filter.add_directive(quiet);
    }
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// A caller-supplied id is kept only if it is short and plain, so it cannot smuggle anything
/// into logs.
fn acceptable_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

/// A new random request id (128 bits, hex).
pub fn new_request_id() -> String {
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for b in raw {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Middleware: request id in, request id out, one access-log line per request.
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = match req.headers().get(&REQUEST_ID) {
        Some(v) if acceptable_request_id(v) => v.clone(),
        _ => HeaderValue::from_str(&new_request_id()).expect("hex is a valid header value"),
    };
    req.headers_mut().insert(REQUEST_ID.clone(), id.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("request", request_id = %id.to_str().unwrap_or(""));
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        tracing::info!(
            target: "access",
            method = %method,
            path = %path,
            status,
            elapsed_ms = format_args!("{elapsed_ms:.2}"),
            "request"
        );
    });
    response.headers_mut().insert(REQUEST_ID.clone(), id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert!(acceptable_request_id(&HeaderValue::from_static(
            "abc-123_x.y:z"
        )));
        assert!(!acceptable_request_id(&HeaderValue::from_static("a b")));
        assert!(!acceptable_request_id(&HeaderValue::from_static("")));
        let long = "a".repeat(129);
        assert!(!acceptable_request_id(
            &HeaderValue::from_str(&long).unwrap()
        ));
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(id, new_request_id());
    }
}
