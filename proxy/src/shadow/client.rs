//! The candidate's HTTP client: the fast path's own wire code, on the shadow thread.
//!
//! A compared shadow used to cost the shadow thread more CPU than proxying the request cost
//! the proxy (36 µs against 28, bench/RESULTS.md), most of it in a general-purpose client
//! (`reqwest` over hyper: a URL parsed, a request and its header map built, a pool behind a
//! lock, a task per connection). A shadow needs none of that: requests written whole from one
//! buffer, each response head parsed in place by `httparse`, each body read by its framing
//! ([`wire::response_framing`], [`wire::Chunked`]). Connections are kept per backend in the
//! shadow thread's own idle list ([`idle`], the fast path's, which is per thread).
//!
//! One call sends several requests on one connection ([`exchange_all`]): most of what was
//! left of a comparison's cost was the kernel's, one `send()` per copy running the loopback
//! delivery and waking the candidate (bench/RESULTS.md), and copies ready at the same moment
//! can share one. [`super::lanes`] decides which go together.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::answer::Answer;
use crate::fast_path::upstream::{HeadError, connect, read_head};
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
#[derive(Clone, Copy)]
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

/// One request ready to go: its bytes, and what reading its answer needs.
pub(super) struct Pending {
    request: Vec<u8>,
    /// A HEAD request: its answer has no body whatever its headers say.
    head: bool,
    limits: Limits,
    /// When the route stops waiting for this answer.
    deadline: Instant,
}

impl Pending {
    /// `req` encoded for the backend at `addr`, its deadline `limits.read` from now.
    pub(super) fn new(addr: SocketAddr, req: &Request<'_>, limits: Limits) -> Self {
        Self {
            request: encode(addr, req),
            head: *req.method == Method::HEAD,
            deadline: Instant::now() + limits.read,
            limits,
        }
    }
}

/// Whether `req` may share a connection with others, written behind them before their answers
/// came (HTTP/1.1 pipelining, RFC 9112 §9.3.2): only safe methods without a body, which a
/// candidate may be sent again should the connection close under them.
pub(super) fn pipelinable(req: &Request<'_>) -> bool {
    matches!(*req.method, Method::GET | Method::HEAD) && req.body.is_empty()
}

/// Sends `items` to the backend at `addr` on one connection, written with one call, and reads
/// their answers in order; one result per item, in their order. Every wait ends by the
/// deadline of the item it is for.
///
/// When the connection cannot carry them all, the rest go on a new one: a kept-alive
/// connection the candidate closed as it was reused (nothing was processed on it), a candidate
/// that closed after some answers (with `Connection: close` or without), an answer that
/// failed to read (its place in the stream is lost). Items past their deadline fail as timed out
/// without being sent again. Only items that [`pipelinable`] allows may be more than one.
pub(super) async fn exchange_all(
    addr: SocketAddr,
    items: &[Pending],
) -> Vec<Result<Answer, Failed>> {
    let mut results = Vec::with_capacity(items.len());
    let mut fresh_only = false;
    let mut rx = Received::default();
    let mut wbuf = Vec::new();
    while results.len() < items.len() {
        let now = Instant::now();
        while items.get(results.len()).is_some_and(|i| i.deadline <= now) {
            results.push(Err(Failed::Timeout));
        }
        let rest = &items[results.len()..];
        let Some(first) = rest.first() else { break };
        let reused = if fresh_only {
            None
        } else {
            idle::take(addr, first.limits.idle)
        };
        let is_reused = reused.is_some();
        let mut up = match reused {
            Some(up) => up,
            None => match connect(addr, first.limits.connect.min(first.deadline - now)).await {
                Ok(up) => up,
                Err(_) => {
                    results.extend(rest.iter().map(|_| Err(Failed::Connect)));
                    break;
                }
            },
        };
        let request: &[u8] = if let [one] = rest {
            &one.request
        } else {
            wbuf.clear();
            for item in rest {
                wbuf.extend_from_slice(&item.request);
            }
            &wbuf
        };
        let written = tokio::time::timeout_at(first.deadline, up.write_all(request)).await;
        match written {
            Ok(Ok(())) => {}
            // Closed as it was reused: nothing was processed; again on a new connection.
            Ok(Err(_)) if is_reused => {
                fresh_only = true;
                continue;
            }
            Ok(Err(_)) => {
                results.extend(
                    rest.iter()
                        .map(|_| Err(Failed::Broken("closed before answering"))),
                );
                break;
            }
            Err(_) => continue,
        }
        rx.buf.clear();
        rx.at = 0;
        let mut answered = 0;
        let mut kept = true;
        for item in rest {
            match tokio::time::timeout_at(item.deadline, read_one(&mut up, &mut rx, item)).await {
                Ok(Ok((answer, keeps_alive))) => {
                    results.push(Ok(answer));
                    answered += 1;
                    if !keeps_alive {
                        kept = false;
                        break;
                    }
                }
                // Closed before this answer began: after some answers, the rest go on a new
                // connection; on a reused connection before any, all of them do.
                Ok(Err(Read::Stale)) if answered > 0 || is_reused => {
                    fresh_only |= answered == 0;
                    kept = false;
                    break;
                }
                Ok(Err(Read::Stale)) => {
                    results.extend(
                        rest.iter()
                            .map(|_| Err(Failed::Broken("closed before answering"))),
                    );
                    return results;
                }
                Ok(Err(Read::Failed(failed))) => {
                    results.push(Err(failed));
                    kept = false;
                    break;
                }
                Err(_) => {
                    results.push(Err(Failed::Timeout));
                    kept = false;
                    break;
                }
            }
        }
        if kept && rx.unused().is_empty() {
            idle::put(addr, up, first.limits.idle);
        }
    }
    results
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

/// How reading one answer failed.
enum Read {
    /// The connection closed before any byte of it.
    Stale,
    Failed(Failed),
}

impl From<Failed> for Read {
    fn from(f: Failed) -> Self {
        Read::Failed(f)
    }
}

/// What was read from a connection and not used yet: `buf[at..]`. Used bytes are dropped only
/// when more must be read, so a buffer holding many pipelined answers is not moved per answer.
#[derive(Default)]
struct Received {
    buf: Vec<u8>,
    at: usize,
}

impl Received {
    fn unused(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    /// Reads more after what is unused; `Ok(0)` when the connection closed.
    async fn read_more(&mut self, up: &mut TcpStream, timeout: Duration) -> Result<usize, Failed> {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.reserve(4096);
        match tokio::time::timeout(timeout, up.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(_)) => Err(Failed::Broken("reset midway")),
            Err(_) => Err(Failed::Timeout),
        }
    }
}

/// Reads the next answer on `up` into an [`Answer`], and whether the connection stays open
/// after it. `rx` holds what was read and not yet used (the beginning of this answer, read
/// with the one before it); on return it holds what follows this answer.
async fn read_one(
    up: &mut TcpStream,
    rx: &mut Received,
    item: &Pending,
) -> Result<(Answer, bool), Read> {
    let limits = &item.limits;
    let read = limits.read;
    match read_head(up, &mut rx.buf, &mut rx.at, read).await {
        Ok(()) => {}
        Err(HeadError::Stale) => return Err(Read::Stale),
        Err(HeadError::Broken) => return Err(Failed::Broken("not an HTTP/1.1 answer").into()),
        Err(HeadError::Timeout) => return Err(Failed::Timeout.into()),
    }
    let Head {
        len: head_len,
        status,
        framing,
        keeps_alive,
        headers,
    } = parse_head(rx.unused(), item.head)?;
    rx.at += head_len;
    let body = match framing {
        wire::Framing::Empty => Bytes::new(),
        wire::Framing::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n > limits.max_body {
                return Err(Failed::TooLarge.into());
            }
            while rx.unused().len() < n {
                if rx.read_more(up, read).await? == 0 {
                    return Err(Failed::Broken("closed midway").into());
                }
            }
            let body = Bytes::copy_from_slice(&rx.unused()[..n]);
            rx.at += n;
            body
        }
        wire::Framing::Chunked => {
            let mut chunked = wire::Chunked::new();
            let mut body = BytesMut::new();
            loop {
                let mut too_large = false;
                let end = chunked
                    .feed_data(rx.unused(), |data| {
                        if body.len() + data.len() > limits.max_body {
                            too_large = true;
                        } else {
                            body.extend_from_slice(data);
                        }
                    })
                    .map_err(|e| Failed::Broken(e.0))?;
                if too_large {
                    return Err(Failed::TooLarge.into());
                }
                if let Some(used) = end {
                    rx.at += used;
                    break;
                }
                // All of it was this body's.
                rx.at = rx.buf.len();
                if rx.read_more(up, read).await? == 0 {
                    return Err(Failed::Broken("closed midway").into());
                }
            }
            body.freeze()
        }
        wire::Framing::UntilClose => {
            while rx.read_more(up, read).await? > 0 {
                if rx.unused().len() > limits.max_body {
                    return Err(Failed::TooLarge.into());
                }
            }
            let answer = Answer {
                status,
                headers,
                body: Bytes::copy_from_slice(rx.unused()),
            };
            rx.at = rx.buf.len();
            return Ok((answer, false));
        }
    };
    let answer = Answer {
        status,
        headers,
        body,
    };
    Ok((answer, keeps_alive))
}

/// Test limits: generous, with a 1 KiB body cap (for this module's and [`super::lanes`]'s tests).
#[cfg(test)]
pub(super) fn limits() -> Limits {
    Limits {
        connect: Duration::from_secs(1),
        read: Duration::from_secs(2),
        idle: Duration::from_secs(30),
        max_body: 1024,
    }
}

/// A bodiless candidate copy (for tests).
#[cfg(test)]
pub(super) fn get<'a>(method: &'a Method, target: &'a str, headers: &'a HeaderMap) -> Request<'a> {
    Request {
        method,
        target,
        headers,
        marker: ("x-banyan-shadow", "candidate"),
        body: b"",
    }
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

    /// One request alone on a connection.
    async fn exchange(
        addr: SocketAddr,
        req: &Request<'_>,
        limits: &Limits,
    ) -> Result<Answer, Failed> {
        let mut one = exchange_all(addr, &[Pending::new(addr, req, *limits)]).await;
        assert_eq!(one.len(), 1);
        one.pop().unwrap()
    }

    /// Reads from `s` until `n` request heads (bodiless) have arrived; returns what was read
    /// and in how many reads.
    async fn read_requests(s: &mut TcpStream, n: usize) -> (String, usize) {
        let (mut seen, mut reads) = (Vec::new(), 0);
        while String::from_utf8_lossy(&seen).matches("\r\n\r\n").count() < n {
            let mut buf = [0u8; 4096];
            let k = s.read(&mut buf).await.unwrap();
            assert!(k > 0, "closed after {seen:?}");
            seen.extend_from_slice(&buf[..k]);
            reads += 1;
        }
        (String::from_utf8(seen).unwrap(), reads)
    }

    #[tokio::test]
    async fn pipelined_requests_leave_in_one_write_and_their_answers_are_read_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let candidate = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let seen = read_requests(&mut s, 3).await;
            // All three answers in one write, each framed its own way: the reader must find
            // where each ends (a HEAD answer declares a length and has no body).
            s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{\"a\":1}\
                  HTTP/1.1 200 OK\r\ncontent-length: 999\r\n\r\n\
                  HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"b\r\n4\r\n\":2}\r\n0\r\n\r\n",
            )
            .await
            .unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            seen
        });
        let headers = HeaderMap::new();
        let (get_, head) = (Method::GET, Method::HEAD);
        let items = [
            Pending::new(addr, &get(&get_, "/a", &headers), limits()),
            Pending::new(addr, &get(&head, "/b", &headers), limits()),
            Pending::new(addr, &get(&get_, "/c", &headers), limits()),
        ];
        let answers = exchange_all(addr, &items).await;
        let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            (answers[0].status, &answers[0].body[..]),
            (200, &b"{\"a\":1}"[..])
        );
        assert_eq!((answers[1].status, answers[1].body.len()), (200, 0));
        assert_eq!(
            (answers[2].status, &answers[2].body[..]),
            (404, &b"{\"b\":2}"[..])
        );
        assert_eq!(
            idle::count(addr),
            1,
            "the connection is kept for the next batch"
        );
        drop(idle::take(addr, Duration::from_secs(30)));
        let (seen, reads) = candidate.await.unwrap();
        let order: Vec<_> = seen.lines().filter(|l| l.contains(" HTTP/1.1")).collect();
        assert_eq!(
            order,
            ["GET /a HTTP/1.1", "HEAD /b HTTP/1.1", "GET /c HTTP/1.1"]
        );
        assert_eq!(reads, 1, "one write carried the three requests");
    }

    #[tokio::test]
    async fn requests_behind_a_closed_connection_go_again_on_a_new_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let candidate = tokio::spawn(async move {
            // The first connection answers one of three and closes (as a keep-alive request
            // limit does); the second gets the two left, and says it closes too.
            let (mut s, _) = listener.accept().await.unwrap();
            read_requests(&mut s, 3).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n1")
                .await
                .unwrap();
            drop(s);
            let (mut s, _) = listener.accept().await.unwrap();
            let (again, _) = read_requests(&mut s, 2).await;
            s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n2\
                  HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n3",
            )
            .await
            .unwrap();
            again
        });
        let headers = HeaderMap::new();
        let m = Method::GET;
        let items: Vec<_> = ["/1", "/2", "/3"]
            .map(|t| Pending::new(addr, &get(&m, t, &headers), limits()))
            .into();
        let bodies: Vec<_> = exchange_all(addr, &items)
            .await
            .into_iter()
            .map(|a| a.unwrap().body)
            .collect();
        assert_eq!(
            bodies,
            ["1", "2", "3"].map(|b| Bytes::from_static(b.as_bytes()))
        );
        let again = candidate.await.unwrap();
        assert!(
            again.contains("GET /2 ") && again.contains("GET /3 ") && !again.contains("GET /1 "),
            "{again}"
        );
        assert_eq!(
            idle::count(addr),
            0,
            "a connection that says close is not kept"
        );
    }

    #[tokio::test]
    async fn a_copy_past_its_deadline_times_out_and_the_rest_are_answered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let candidate = tokio::spawn(async move {
            // Holds the first connection's answers back; answers on a second one.
            let (mut held, _) = listener.accept().await.unwrap();
            read_requests(&mut held, 2).await;
            let (mut s, _) = listener.accept().await.unwrap();
            read_requests(&mut s, 1).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            held
        });
        let headers = HeaderMap::new();
        let m = Method::GET;
        let short = Limits {
            read: Duration::from_millis(100),
            ..limits()
        };
        let items = [
            Pending::new(addr, &get(&m, "/slow", &headers), short),
            Pending::new(addr, &get(&m, "/later", &headers), limits()),
        ];
        let mut answers = exchange_all(addr, &items).await.into_iter();
        assert!(matches!(answers.next(), Some(Err(Failed::Timeout))));
        assert_eq!(&answers.next().unwrap().unwrap().body[..], b"ok");
        drop(candidate.await.unwrap());
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
