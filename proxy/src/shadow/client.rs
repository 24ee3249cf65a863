//! The candidate's HTTP client: the fast path's own wire code, on the shadow thread.
//!
//! A compared shadow used to cost the shadow thread more CPU than proxying the request cost
//! the proxy (36 µs against 28, bench/RESULTS.md), most of it in a general-purpose client
//! (`reqwest` over hyper: a URL parsed, a request and its header map built, a pool behind a
//! lock, a task per connection). A shadow needs none of that: one request written whole in one
//! buffer, one response head parsed in place by `httparse`, the body read by its framing
//! ([`wire::response_framing`], [`wire::Chunked`]). Connections are kept per backend in the
//! shadow thread's own idle list ([`idle`], the fast path's, which is per thread), and a
//! kept-alive connection the candidate closed as it was reused is retried once on a new one
//! (nothing was processed on it).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::answer::Answer;
use crate::fast_path::upstream::{HeadError, connect, exchange_head};
use crate::fast_path::{idle, wire};

/// How an exchange with the candidate failed.
#[derive(Debug)]
pub(super) enum Failed {
    /// No connection (refused, or not within the connect timeout).
    Connect,
    /// The answer's body is larger than the route compares.
    TooLarge,
    /// The candidate answered something that is not HTTP/1.1, or closed midway.
    Broken(&'static str),
    Timeout,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Connect => f.write_str("no connection to the candidate"),
            Failed::TooLarge => f.write_str("the answer is larger than the route compares"),
            Failed::Broken(why) => write!(f, "broken answer: {why}"),
            Failed::Timeout => f.write_str("timed out"),
        }
    }
}

/// What a shadow request is, for [`exchange`].
pub(super) struct Request<'a> {
    pub(super) method: &'a Method,
    /// Normalized path and query.
    pub(super) target: &'a str,
    pub(super) headers: &'a HeaderMap,
    /// The marker header telling the candidate what it is being sent (`x-banyan-shadow: …`).
    pub(super) marker: (&'static str, &'static str),
    pub(super) body: &'a [u8],
}

/// Timeouts and bounds of one exchange.
pub(super) struct Limits {
    pub(super) connect: Duration,
    pub(super) read: Duration,
    pub(super) idle: Duration,
    pub(super) max_body: usize,
}

/// The request's bytes: head and body in one buffer, written with one call.
fn encode(addr: SocketAddr, req: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + req.body.len());
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !req.headers.contains_key(http::header::HOST) {
        wire::header(&mut out, b"host", addr.to_string().as_bytes());
    }
    for (name, value) in req.headers {
        // The copy's framing is its own (the mirror drops the client's), and the connection
        // is this client's to keep.
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "keep-alive" | "te" | "upgrade"
        ) {
            continue;
        }
        wire::header(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    wire::header(&mut out, req.marker.0.as_bytes(), req.marker.1.as_bytes());
    let has_body =
        !req.body.is_empty() || matches!(*req.method, Method::POST | Method::PUT | Method::PATCH);
    if has_body {
        wire::header(
            &mut out,
            b"content-length",
            req.body.len().to_string().as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(req.body);
    out
}

/// Sends `req` to the candidate at `addr` and reads its whole answer.
pub(super) async fn exchange(
    addr: SocketAddr,
    req: &Request<'_>,
    limits: &Limits,
) -> Result<Answer, Failed> {
    let request = encode(addr, req);
    let mut rbuf = Vec::with_capacity(4096);
    let mut fresh_only = false;
    loop {
        let reused = if fresh_only {
            None
        } else {
            idle::take(addr, limits.idle)
        };
        let is_reused = reused.is_some();
        let mut up = match reused {
            Some(up) => up,
            None => connect(addr, limits.connect)
                .await
                .map_err(|_| Failed::Connect)?,
        };
        rbuf.clear();
        match exchange_head(&mut up, &request, &mut rbuf, limits.read, limits.read).await {
            Ok(()) => return read_answer(addr, up, rbuf, req.method, limits).await,
            // Closed as it was reused: nothing was processed; again on a new connection.
            Err(HeadError::Stale) if is_reused => fresh_only = true,
            Err(HeadError::Stale) => return Err(Failed::Broken("closed before answering")),
            Err(HeadError::Broken) => return Err(Failed::Broken("not an HTTP/1.1 answer")),
            Err(HeadError::Timeout) => return Err(Failed::Timeout),
        }
    }
}

/// A parsed answer head.
struct Head {
    len: usize,
    status: u16,
    framing: wire::Framing,
    keeps_alive: bool,
    headers: HeaderMap,
}

/// Parses the answer head at the start of `rbuf`. Not async: the parser's header slots live
/// on the stack for this call only, not in every shadow task's state.
fn parse_head(rbuf: &[u8], head_request: bool) -> Result<Head, Failed> {
    let mut slots = [httparse::EMPTY_HEADER; wire::MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match parsed.parse(rbuf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(Failed::Broken("unparsable answer head")),
    };
    let status = parsed.code.ok_or(Failed::Broken("no status"))?;
    let version = parsed.version.unwrap_or(1);
    let framing = wire::response_framing(head_request, status, parsed.headers)
        .map_err(|e| Failed::Broken(e.0))?;
    let keeps_alive = wire::upstream_keeps_alive(version, parsed.headers);
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            headers.append(name, value);
        }
    }
    Ok(Head {
        len,
        status,
        framing,
        keeps_alive,
        headers,
    })
}

/// Parses the head in `rbuf` and reads the body after it; keeps the connection when the
/// candidate does.
async fn read_answer(
    addr: SocketAddr,
    mut up: TcpStream,
    mut rbuf: Vec<u8>,
    method: &Method,
    limits: &Limits,
) -> Result<Answer, Failed> {
    let Head {
        len: head_len,
        status,
        framing,
        keeps_alive,
        headers,
    } = parse_head(&rbuf, *method == Method::HEAD)?;
    rbuf.drain(..head_len);
    let read = limits.read;
    let next = async |up: &mut TcpStream, buf: &mut Vec<u8>| -> Result<usize, Failed> {
        buf.reserve(4096);
        match tokio::time::timeout(read, up.read_buf(buf)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(_)) => Err(Failed::Broken("reset midway")),
            Err(_) => Err(Failed::Timeout),
        }
    };
    let body = match framing {
        wire::Framing::Empty => Bytes::new(),
        wire::Framing::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n > limits.max_body {
                return Err(Failed::TooLarge);
            }
            while rbuf.len() < n {
                if next(&mut up, &mut rbuf).await? == 0 {
                    return Err(Failed::Broken("closed midway"));
                }
            }
            if rbuf.len() > n {
                return Err(Failed::Broken("more bytes than its Content-Length"));
            }
            Bytes::from(rbuf)
        }
        wire::Framing::Chunked => {
            let mut chunked = wire::Chunked::new();
            let mut body = BytesMut::new();
            let mut pending = rbuf;
            loop {
                let mut too_large = false;
                let end = chunked
                    .feed_data(&pending, |data| {
                        if body.len() + data.len() > limits.max_body {
                            too_large = true;
                        } else {
                            body.extend_from_slice(data);
                        }
                    })
                    .map_err(|e| Failed::Broken(e.0))?;
                if too_large {
                    return Err(Failed::TooLarge);
                }
                match end {
                    Some(used) if used == pending.len() => break,
                    Some(_) => return Err(Failed::Broken("bytes after the last chunk")),
                    None => {
                        pending.clear();
                        if next(&mut up, &mut pending).await? == 0 {
                            return Err(Failed::Broken("closed midway"));
                        }
                    }
                }
            }
            body.freeze()
        }
        wire::Framing::UntilClose => {
            while next(&mut up, &mut rbuf).await? > 0 {
                if rbuf.len() > limits.max_body {
                    return Err(Failed::TooLarge);
                }
            }
            return Ok(Answer {
                status,
                headers,
                body: Bytes::from(rbuf),
            });
        }
    };
    if keeps_alive {
        idle::put(addr, up, limits.idle);
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A candidate that answers each request on a connection with the next of `answers`,
    /// recording what it read.
    async fn candidate(
        answers: Vec<&'static [u8]>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for a in answers {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                s.write_all(a).await.unwrap();
            }
            seen
        });
        (addr, task)
    }

    fn limits() -> Limits {
        Limits {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(2),
            idle: Duration::from_secs(30),
            max_body: 1024,
        }
    }

    #[tokio::test]
    async fn answers_are_read_by_their_framing_on_one_kept_connection() {
        let (addr, task) = candidate(vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}",
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"b\r\n4\r\n\":2}\r\n0\r\n\r\n",
        ])
        .await;
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", "r1".parse().unwrap());
        let req = Request {
            method: &Method::GET,
            target: "/api/products/1?x=1",
            headers: &headers,
            marker: ("x-banyan-shadow", "candidate"),
            body: b"",
        };
        let a = exchange(addr, &req, &limits()).await.unwrap();
        assert_eq!((a.status, &a.body[..]), (200, &b"{\"a\":1}"[..]));
        assert_eq!(a.headers["content-type"], "application/json");
        let b = exchange(addr, &req, &limits()).await.unwrap();
        assert_eq!((b.status, &b.body[..]), (404, &b"{\"b\":2}"[..]));
        let seen = String::from_utf8(task.await.unwrap()).unwrap();
        assert!(
            seen.starts_with("GET /api/products/1?x=1 HTTP/1.1\r\nhost: 127.0.0.1:"),
            "{seen}"
        );
        assert!(
            seen.contains("x-request-id: r1\r\n")
                && seen.contains("x-banyan-shadow: candidate\r\n")
        );
        assert_eq!(
            seen.matches("GET ").count(),
            2,
            "both on one connection: {seen}"
        );
    }

    #[tokio::test]
    async fn too_large_broken_and_refused_answers_fail_cleanly() {
        let (addr, _task) =
            candidate(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n"]).await;
        let headers = HeaderMap::new();
        let req = Request {
            method: &Method::POST,
            target: "/w",
            headers: &headers,
            marker: ("x-banyan-shadow", "candidate"),
            body: b"{}",
        };
        assert!(matches!(
            exchange(addr, &req, &limits()).await,
            Err(Failed::TooLarge)
        ));
        let (addr, _task) = candidate(vec![b"SMTP ready\r\n\r\n"]).await;
        assert!(matches!(
            exchange(addr, &req, &limits()).await,
            Err(Failed::Broken(_))
        ));
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(matches!(
            exchange(dead, &req, &limits()).await,
            Err(Failed::Connect)
        ));
    }
}
