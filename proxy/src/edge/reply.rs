//! The answers the edge gives itself, in the catalog API's error format: a request refused
//! before any pipeline (a head over its bounds, a request line or `Host` it will not forward),
//! and a routing or upstream failure on either pipeline. [`error_head`] is what every such
//! answer says, whichever pipeline writes it; [`write_error`] writes one straight to the
//! client socket. They always close the connection: whatever the client sent after the head is
//! not read.

use service_kit::ErrorResponse;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::headers::{REQUEST_ID, VIA_VALUE};

/// The headers of an error answer with a body of `body_len` bytes, in order (Pingora's
/// pipeline adds `Date` and `Connection` itself; [`write_error`] adds `connection: close`);
/// `retry_after` is [`Failure::retry_after`](super::failure::Failure::retry_after).
pub(crate) fn error_head(
    body_len: usize,
    request_id: &str,
    retry_after: Option<u64>,
) -> impl Iterator<Item = (&'static str, String)> {
    [
        ("content-type", "application/json".to_owned()),
        ("content-length", body_len.to_string()),
        (REQUEST_ID, request_id.to_owned()),
        ("via", VIA_VALUE.to_owned()),
    ]
    .into_iter()
    .chain(retry_after.map(|s| ("retry-after", s.to_string())))
}

/// Writes `err` with `connection: close`; false when the client was gone. The answer to a
/// `HEAD` request (`head`) has the headers of the body but not the body (RFC 9110 §9.3.2).
pub(crate) async fn write_error<S: AsyncWrite + Unpin>(
    client: &mut S,
    err: &ErrorResponse,
    request_id: &str,
    head: bool,
    retry_after: Option<u64>,
) -> bool {
    use std::io::Write;
    let body = err.to_json();
    let mut out = Vec::with_capacity(256 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        err.status.as_u16(),
        err.status.canonical_reason().unwrap_or(""),
    );
    for (name, value) in error_head(body.len(), request_id, retry_after) {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    client.write_all(&out).await.is_ok() && client.flush().await.is_ok()
}
