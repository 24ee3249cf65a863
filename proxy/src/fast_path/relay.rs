//! Relaying an upstream's response to the client: the head rewritten by the edge's rules, the
//! body passed through as it comes (its framing followed to find its end, and decoded for a
//! shadow comparison), and the upstream connection kept when the exchange left it reusable.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream as ClientStream;
use tokio::net::TcpStream;

use super::wire::{self, Chunked, Framing};
use super::{Exchanging, idle};
use crate::edge::failure::Failure;
use crate::edge::headers::{self, EdgeResponse};
use crate::shadow::mirror::Mirror;
use crate::upstream::Pool;

/// Body bytes moved per read.
const BODY_CHUNK: usize = 64 * 1024;

pub(super) enum Relay {
    BeforeHead(Failure),
    Midway { status: u16, failure: Failure },
}

/// Writes to the client within the `client_write_timeout` setting (a client that stops reading
/// does not hold the exchange, and its upstream connection, for ever).
async fn write_client(
    client: &mut ClientStream,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), ()> {
    let write = async {
        client.write_all(bytes).await?;
        client.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Passes the response in `rbuf` (a complete head, maybe some body) and the rest of its body
/// to the client. Returns the status and whether the client connection stays open.
pub(super) async fn relay(
    client: &mut ClientStream,
    mut up: TcpStream,
    rbuf: &mut Vec<u8>,
    pool: &Pool,
    backend: SocketAddr,
    exchanging: &Exchanging<'_>,
    mut mirror: Option<&mut Mirror>,
) -> Result<(u16, bool), Relay> {
    let spec = &pool.spec;
    // The response's header slots come from this thread's kept ones (given back once the head
    // is written): inline, 128 of them made every request's boxed state 4 KiB larger, copied
    // into its box on every request.
    let mut headers = crate::buffers::slots(wire::MAX_RESPONSE_HEADERS);
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(rbuf) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return Err(Relay::BeforeHead(Failure::BadUpstream)),
    };
    let status = resp.code.unwrap_or(0);
    if exchanging.replaced.is_some_and(|s| s.contains(&status)) {
        return Err(Relay::BeforeHead(Failure::FailedAnswer(status)));
    }
    let framing = wire::response_framing(exchanging.head, status, resp.headers)
        .map_err(|_| Relay::BeforeHead(Failure::BadUpstream))?;
    if let Some(m) = mirror.as_deref_mut() {
        // As Pingora's path gives it: the upstream's headers, in a map.
        let mut map = HeaderMap::with_capacity(resp.headers.len());
        for h in resp.headers.iter() {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) {
                map.append(n, v);
            }
        }
        m.response_header(status, map);
    }
    // The shadow comparison gets the body as it passes (decoded from chunks).
    let mut tee = |data: &[u8]| {
        if let Some(m) = mirror.as_deref_mut() {
            m.response_body(Some(data));
        }
    };
    let mut upstream_reusable = framing != Framing::UntilClose
        && wire::upstream_keeps_alive(resp.version.unwrap_or(0), resp.headers);
    let keep_alive = !exchanging.client_close
        && !exchanging.lifecycle.is_closing()
        && framing != Framing::UntilClose;
    let mut out = crate::buffers::take(len + 256);
    let via = headers::via(resp.headers);
    wire::client_response_head(
        &mut out,
        status,
        resp.reason.unwrap_or(""),
        resp.headers,
        framing,
        &EdgeResponse {
            request_id: exchanging.request_id,
            via: &via,
            debug: exchanging.debug,
            close: !keep_alive,
        },
    );
    let midway = |failure| Relay::Midway { status, failure };
    // The body bytes that came with the head, and what is still due after them.
    let body = &rbuf[len..];
    let mut chunked = Chunked::new();
    let mut remaining = match framing {
        Framing::Empty => {
            upstream_reusable &= body.is_empty();
            Some(0)
        }
        Framing::Length(n) => {
            let have = (body.len() as u64).min(n) as usize;
            out.extend_from_slice(&body[..have]);
            tee(&body[..have]);
            upstream_reusable &= body.len() as u64 <= n;
            Some(n - have as u64)
        }
        Framing::Chunked => match chunked.feed_data(body, &mut tee) {
            Ok(Some(end)) => {
                out.extend_from_slice(&body[..end]);
                upstream_reusable &= end == body.len();
                Some(0)
            }
            Ok(None) => {
                out.extend_from_slice(body);
                None
            }
            Err(_) => return Err(Relay::BeforeHead(Failure::BadUpstream)),
        },
        Framing::UntilClose => {
            out.extend_from_slice(body);
            tee(body);
            None
        }
    };
    let wrote = write_client(client, &out, exchanging.write_timeout).await;
    crate::buffers::give(out);
    crate::buffers::give_slots(headers);
    wrote.map_err(|_| midway(Failure::ClientGone))?;
    // The rest of the body, as it comes.
    loop {
        if remaining == Some(0) {
            break;
        }
        rbuf.clear();
        let want = remaining.map_or(BODY_CHUNK, |r| r.min(BODY_CHUNK as u64) as usize);
        rbuf.reserve(want);
        let n = match tokio::time::timeout(
            exchanging.read_timeout,
            (&mut up).take(want as u64).read_buf(rbuf),
        )
        .await
        {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return Err(midway(Failure::BadUpstream)),
            Err(_) => return Err(midway(Failure::Timeout)),
        };
        if n == 0 {
            if framing == Framing::UntilClose {
                break;
            }
            return Err(midway(Failure::BadUpstream));
        }
        let mut pass = n;
        match framing {
            Framing::Length(_) => {
                remaining = remaining.map(|r| r - n as u64);
                tee(rbuf);
            }
            Framing::UntilClose => tee(rbuf),
            Framing::Chunked => match chunked.feed_data(rbuf, &mut tee) {
                Ok(Some(end)) => {
                    pass = end;
                    upstream_reusable &= end == n;
                    remaining = Some(0);
                }
                Ok(None) => {}
                Err(_) => return Err(midway(Failure::BadUpstream)),
            },
            Framing::Empty => {}
        }
        write_client(client, &rbuf[..pass], exchanging.write_timeout)
            .await
            .map_err(|_| midway(Failure::ClientGone))?;
    }
    if upstream_reusable {
        idle::put(backend, up, spec.idle_timeout);
    }
    Ok((status, keep_alive))
}
