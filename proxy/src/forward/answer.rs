//! Pingora's errors in the edge's terms ([`Failure`]), and the edge's error answers written
//! through Pingora's session: the mapping is the one place that reads Pingora's error types.

use bytes::Bytes;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use service_kit::ErrorResponse;

use super::ctx::RequestCtx;
use crate::edge::failure::Failure;
use crate::edge::reply::error_head;

/// Pingora's view of a failure, as the edge names it ([`Failure`]).
pub(super) fn failure_of(e: &Error) -> Failure {
    match e.etype() {
        ErrorType::HTTPStatus(503) => Failure::NoBackend,
        ErrorType::HTTPStatus(502) => Failure::Connect { timeout: false },
        ErrorType::HTTPStatus(400) => Failure::BadRequest("malformed request".into()),
        ErrorType::ConnectTimedout => Failure::Connect { timeout: true },
        ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError => {
            Failure::Connect { timeout: false }
        }
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            Failure::Timeout
        }
        _ => match e.esource() {
            ErrorSource::Upstream => Failure::BadUpstream,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError
                | ErrorType::ReadError
                | ErrorType::ConnectionClosed
                | ErrorType::WriteTimedout
                | ErrorType::ReadTimedout => Failure::ClientGone,
                _ => Failure::BadRequest("malformed request".into()),
            },
            ErrorSource::Internal | ErrorSource::Unset => Failure::Internal,
        },
    }
}

/// Writes a complete JSON error response to the client.
pub(super) async fn respond(
    session: &mut Session,
    ctx: &RequestCtx,
    err: ErrorResponse,
    retry_after: Option<u64>,
) -> Result<()> {
    let body = Bytes::from(err.to_json());
    let mut resp = ResponseHeader::build(err.status.as_u16(), Some(5))?;
    for (name, value) in error_head(body.len(), &ctx.request_id, retry_after) {
        resp.insert_header(name, value)?;
    }
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}
