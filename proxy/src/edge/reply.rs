//! Error answers written straight to the client socket, in the catalog API's error format,
//! for the requests the edge answers itself (a head over its bounds, a failure on the fast
//! path). They always close the connection: whatever the client sent after the head is not
//! read.

use service_kit::ErrorResponse;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::forward::VIA_VALUE;

/// Writes `err` with `connection: close`; false when the client was gone.
pub async fn write_error<S: AsyncWrite + Unpin>(
    client: &mut S,
    err: &ErrorResponse,
    request_id: &str,
) -> bool {
    use std::io::Write;
    let body = err.to_json();
    let mut out = Vec::with_capacity(256 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-request-id: {request_id}\r\nvia: {VIA_VALUE}\r\nconnection: close\r\n\r\n",
        err.status.as_u16(),
        err.status.canonical_reason().unwrap_or(""),
        body.len(),
    );
    out.extend_from_slice(body.as_bytes());
    client.write_all(&out).await.is_ok() && client.flush().await.is_ok()
}
