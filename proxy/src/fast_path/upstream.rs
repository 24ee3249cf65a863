//! The fast path's side of an upstream exchange: a backend picked (another one after a failed
//! connect, when the edge says the request may be retried), a kept-alive connection reused or a
//! new one opened, the request written and the response head read, with the upstream's
//! timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Exchanging, idle, wire};
use crate::edge::failure::{self, Failure};
use crate::edge::retry;
use crate::metrics::Metrics;
use crate::upstream::{Backend, Pool};

/// An upstream connection that has taken the request and sent back at least a complete
/// response head (into `rbuf`).
pub(super) async fn open(
    metrics: &Metrics,
    pool: &Pool,
    method: &Method,
    request: &[u8],
    tried: &mut super::Tried,
    rbuf: &mut Vec<u8>,
    exchanging: &Exchanging<'_>,
) -> Result<(TcpStream, Arc<Backend>), Failure> {
    let (read_timeout, route) = (exchanging.read_timeout, exchanging.route);
    let spec = &pool.spec;
    // After a kept-alive connection turned out closed, use new ones only.
    let mut fresh_only = false;
    // How the last attempt failed (the answer when no backend is left to try).
    let mut last: Option<Failure> = None;
    // Set when the attempt before failed and this one is a retry.
    let mut again: Option<Failure> = None;
    loop {
        let Some(backend) = pool.pick(tried) else {
            return Err(match last {
                None if tried.is_empty() => Failure::NoBackend,
                None => Failure::Connect { timeout: false },
                Some(failure) => failure,
            });
        };
        if let Some(failure) = again.take()
            && !retry::may_retry(route, pool, metrics)
        {
            return Err(failure);
        }
        tried.push(backend.addr);
        let reused = if fresh_only {
            None
        } else {
            idle::take(backend.addr, spec.idle_timeout)
        };
        let is_reused = reused.is_some();
        let mut up = match reused {
            Some(up) => up,
            None => match connect(backend.addr, spec.connect_timeout).await {
                Ok(up) => up,
                Err(timeout) => {
                    failure::connect_failed(metrics, pool, &backend, timeout);
                    if !failure::retried_on_connect_failure(method) {
                        return Err(Failure::Connect { timeout });
                    }
                    last = Some(Failure::Connect { timeout });
                    again = last.clone();
                    continue;
                }
            },
        };
        rbuf.clear();
        match exchange_head(&mut up, request, rbuf, spec.write_timeout, read_timeout).await {
            Ok(()) => return Ok((up, backend)),
            Err(HeadError::Stale) if is_reused && failure::retried_on_reused_close(method) => {
                // The backend closed the kept-alive connection as it was reused: not the
                // backend's failure. An idempotent request goes again, on a new connection.
                tried.pop();
                fresh_only = true;
                again = Some(Failure::BadUpstream);
            }
            Err(HeadError::Stale) if failure::retried_after_reset(method) => {
                // A new connection closed or reset before any byte of an answer (a backend
                // killed as it held the request): another backend, if one is left.
                last = Some(Failure::BadUpstream);
                again = last.clone();
            }
            Err(HeadError::Stale) | Err(HeadError::Broken) => {
                return Err(Failure::BadUpstream);
            }
            Err(HeadError::Timeout) => return Err(Failure::Timeout),
        }
    }
}

pub(crate) enum HeadError {
    /// Closed or reset before any byte of an answer.
    Stale,
    Broken,
    Timeout,
}

/// Connects to a backend. `Err(true)`: timed out.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, bool> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(_)) => Err(false),
        Err(_) => Err(true),
    }
}

/// Writes the request and reads until `rbuf` holds a complete response head (skipping any
/// interim 1xx responses).
async fn exchange_head(
    up: &mut TcpStream,
    request: &[u8],
    rbuf: &mut Vec<u8>,
    write_timeout: Duration,
    read_timeout: Duration,
) -> Result<(), HeadError> {
    match tokio::time::timeout(write_timeout, up.write_all(request)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(HeadError::Stale),
        Err(_) => return Err(HeadError::Timeout),
    }
    let mut at = 0;
    read_head(up, rbuf, &mut at, read_timeout).await?;
    // The fast path reads the answer from the start of `rbuf`.
    rbuf.drain(..at);
    Ok(())
}

/// Reads until `rbuf[*at..]` begins with a complete response head, passing over interim 1xx
/// responses (`*at` moves past them). The shadow's candidate client reads with it too
/// ([`crate::shadow`]), where `rbuf[*at..]` may already hold bytes of it (a pipelined answer
/// read with the one before): what comes before `*at` is dropped only when more must be read,
/// so a buffer of many answers is not moved once per answer. `Stale` means the connection
/// closed before any byte of this answer.
pub(crate) async fn read_head(
    up: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    at: &mut usize,
    read_timeout: Duration,
) -> Result<(), HeadError> {
    let mut searched = 0;
    loop {
        let head = &rbuf[*at..];
        if let Some(end) = wire::head_end(head, &mut searched) {
            // An interim response ("HTTP/1.1 1xx"): pass over it to the final one. A 101
            // cannot answer a request that did not ask to upgrade.
            if head.get(9) == Some(&b'1') {
                if head.get(9..12) == Some(b"101") {
                    return Err(HeadError::Broken);
                }
                *at += end;
                searched = 0;
                continue;
            }
            return Ok(());
        }
        if head.len() >= wire::MAX_RESPONSE_HEAD {
            return Err(HeadError::Broken);
        }
        let empty = head.is_empty();
        if *at > 0 {
            rbuf.drain(..*at);
            *at = 0;
        }
        rbuf.reserve(4096);
        match tokio::time::timeout(read_timeout, up.read_buf(rbuf)).await {
            Ok(Ok(0)) | Ok(Err(_)) if empty => return Err(HeadError::Stale),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(HeadError::Broken),
            Ok(Ok(_)) => {}
            Err(_) => return Err(HeadError::Timeout),
        }
    }
}
