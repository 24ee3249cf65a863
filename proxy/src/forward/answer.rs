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
    // The client's side first: Pingora reports some of its faults with upstream-sounding types
    // (`ConnectError` "Sent data after end of body": the client sent the next request while
    // this one's answer was pending, which Pingora's pipeline does not take). Mapped to an
    // upstream failure, a client could answer itself 502 and count against the upstream's
    // breaker and rollout gates.
    if e.esource() == &ErrorSource::Downstream {
        return match e.etype() {
            ErrorType::WriteError
            | ErrorType::ReadError
            | ErrorType::ConnectionClosed
            | ErrorType::WriteTimedout
            | ErrorType::ReadTimedout
            | ErrorType::ConnectError => Failure::ClientGone,
            _ => Failure::BadRequest("malformed request".into()),
        };
    }
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
            ErrorSource::Downstream | ErrorSource::Internal | ErrorSource::Unset => {
                Failure::Internal
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_fault_is_never_an_upstream_failure() {
        let down = |t: ErrorType| failure_of(&Error::explain(t, "x").into_down());
        let up = |t: ErrorType| failure_of(&Error::explain(t, "x").into_up());
        // What Pingora says when a client sends its next request before this one's answer.
        assert_eq!(down(ErrorType::ConnectError), Failure::ClientGone);
        assert_eq!(down(ErrorType::ReadTimedout), Failure::ClientGone);
        assert_eq!(down(ErrorType::ConnectionClosed), Failure::ClientGone);
        assert!(matches!(
            down(ErrorType::InvalidHTTPHeader),
            Failure::BadRequest(_)
        ));
        assert!(matches!(
            down(ErrorType::HTTPStatus(400)),
            Failure::BadRequest(_)
        ));
        assert_eq!(
            up(ErrorType::ConnectError),
            Failure::Connect { timeout: false }
        );
        assert_eq!(
            up(ErrorType::ConnectTimedout),
            Failure::Connect { timeout: true }
        );
        assert_eq!(up(ErrorType::ReadTimedout), Failure::Timeout);
        assert_eq!(up(ErrorType::InvalidHTTPHeader), Failure::BadUpstream);
    }
}
