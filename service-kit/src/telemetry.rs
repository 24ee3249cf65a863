//! Logging, request ids and the access log.
//!
//! Logs go to stderr (stdout is reserved for the one readiness line, see [`crate::server`]), as
//! human-readable text or, with `LOG_FORMAT=json`, one JSON object per line for a collector.
//! Every request gets an id: the caller's `X-Request-Id` when it is well-formed (the proxy sets
//! one, so one id follows a request across processes), otherwise a fresh one. The id is returned
//! in the response and attached to every log line of the request.
//!
//! Every line goes through [`crate::log_line`]'s buffer, which the proxy's access lines fill
//! without `tracing`'s formatter (see there why); the others write through it at once.
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
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    // Libraries' chatter that says nothing an operator can act on, unless asked for by name:
    // tantivy's segment housekeeping; Pingora's upstream pool, whose two messages are both about
    // an idle connection it lost a race for or found unusable (it opens a fresh one, and the
    // request succeeds): "failed to acquire reusable stream" is logged as an ERROR on requests
    // that succeed (cloudflare/pingora#201).
    for (target, directive) in [
        ("tantivy", "tantivy=warn"),
        ("pingora_core::connectors", "pingora_core::connectors=off"),
    ] {
        if !asked.contains(target)
            && let Ok(quiet) = directive.parse()
        {
            filter = filter.add_directive(quiet);
        }
    }
    let json = crate::log_line::json();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::log_line::Through)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.fmt_fields(Truncated).try_init()
    };
}

/// The longest a logged field value may be; the rest is cut and counted. A slow-statement
/// warning once carried a whole 1,000-row `INSERT` (70 KB) in one line.
pub(crate) const MAX_FIELD: usize = 400;

/// Text-format fields, each value cut at [`MAX_FIELD`] characters.
struct Truncated;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for Truncated {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = TruncatingVisitor {
            writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TruncatingVisitor<'writer> {
    writer: tracing_subscriber::fmt::format::Writer<'writer>,
    result: std::fmt::Result,
    first: bool,
}

/// `s` cut at [`MAX_FIELD`] characters (on a character boundary), saying how much was cut.
pub(crate) fn cut(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(MAX_FIELD) {
        None => std::borrow::Cow::Borrowed(s),
        Some((at, _)) => {
            std::borrow::Cow::Owned(format!("{}… [{} bytes cut]", &s[..at], s.len() - at))
        }
    }
}

impl tracing::field::Visit for TruncatingVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{}", cut(value)));
        } else {
            self.record_debug(field, &format_args!("{:?}", cut(value)));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let text = format!("{value:?}");
        let text = cut(&text);
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{text}")
        } else {
            write!(self.writer, "{sep}{}={text}", field.name())
        };
    }
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
    let id = new_request_id_bytes();
    id.iter().map(|&b| b as char).collect()
}

/// A new request id as its 32 ASCII hex bytes, for a caller that keeps it without allocating
/// (the proxy holds one per request in flight).
pub fn new_request_id_bytes() -> [u8; 32] {
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in raw.into_iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
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
    // Health probes (load balancers, the proxy's health checks: one every 2 s per backend)
    // would be most of an idle stack's log; they are logged at debug.
    let probe = path == "/health" || path == "/healthz";
    span.in_scope(|| {
        if probe {
            tracing::debug!(target: "access", method = %method, path = %path, status, elapsed_ms = format_args!("{elapsed_ms:.2}"), "request");
        } else {
            tracing::info!(target: "access", method = %method, path = %path, status, elapsed_ms = format_args!("{elapsed_ms:.2}"), "request");
        }
    });
    response.headers_mut().insert(REQUEST_ID.clone(), id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(MAX_FIELD + 10);
        let c = cut(&long);
        assert!(c.starts_with(&"é".repeat(MAX_FIELD)));
        assert!(c.ends_with("… [20 bytes cut]"), "{c}");
    }

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
