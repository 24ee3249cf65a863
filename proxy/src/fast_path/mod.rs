//! The fast path: plain `GET`/`HEAD` exchanges forwarded without Pingora's proxy pipeline.
//!
//! Why it exists: measured on 2 cores with one worker each, Pingora's `ProxyHttp` pipeline
//! spends about 40 µs of CPU per small request where nginx spends 10 (bench/RESULTS.md): the
//! request and response go through owned header maps, a case-preserving copy of every header
//! name, channels between a downstream and an upstream task, boxed phase futures, and a
//! connection pool that spawns a watcher task for every returned connection. No hook of
//! `ProxyHttp` can remove that; a bare Pingora proxy did 0.36x nginx's requests/s.
//!
//! What it is: for the common case, which is most of a catalog API's traffic, the connection
//! loop ([`crate::connection`]) reads the request head itself, and when the request qualifies
//! answers it here, from the same route table, with the same routing, split, headers, retries,
//! error answers, metrics and access log as [`crate::forward`]. Heads are parsed in place and
//! written straight into one buffer; bodies stream through unchanged; upstream connections are
//! kept per thread ([`idle`]).
//!
//! What qualifies (anything else goes, with the bytes already read, to Pingora's path, which
//! therefore still answers every error at routing time and every case below):
//! - HTTP/1.1, `GET` or `HEAD`, origin-form target, exactly one `Host`, no body (no
//!   `Content-Length`, no `Transfer-Encoding`), no `Upgrade` or `Expect`, `Connection` at most
//!   `keep-alive` or `close`, nothing pipelined behind it, at most 64 headers (the head's size,
//!   header count and arrival time are bounded for both pipelines by [`crate::edge::head`]);
//! - a path that normalizes and matches a route (a shadowed route too: the copy and the
//!   comparison are handed to the same shadower as on Pingora's path, with the response body
//!   as it passes, decoded from chunks);
//! - `[proxy] fast_path` not turned off (it is on by default; turning it off sends everything
//!   through Pingora's pipeline, for comparison or as an escape hatch; it applies on reload).
//!
//! What Pingora still does for these requests: the listener, accepting, the process (graceful
//! shutdown and upgrade), and everything else.

pub mod idle;
pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use pingora_core::protocols::l4::stream::Stream as ClientStream;
use service_kit::ErrorResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::edge::reply::write_error;
use crate::forward::{REQUEST_ID, acceptable_request_id, edge_header_list, upstream_error};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::reload::LiveTable;
use crate::route_table::normalize::normalize;
use crate::shadow::mirror::{Mirror, Shadower};
use crate::split;
use crate::upstream::{Backend, Pool};
use wire::{Chunked, Edge, Framing, ResponseEdge};

/// Body bytes moved per read.
const BODY_CHUNK: usize = 64 * 1024;

/// How much the first read of an upstream answer takes: a whole catalog answer (a 20-product
/// list page is about 6 KiB) then arrives with its head, and head and body leave in one write
/// to the client instead of two writes and two reads. Only the bytes that arrive are touched.
const FIRST_READ: usize = 16 * 1024;

/// What became of one request on a client connection.
pub enum Exchange {
    /// Answered here. `keep_alive`: the connection may carry another request.
    Served { keep_alive: bool },
    /// Not for the fast path: Pingora's path takes the connection, with these bytes (the
    /// beginning of the request) put back in front of it.
    HandOver(Vec<u8>),
    /// The client went away, or stopped mid-head; nothing to answer.
    Closed,
}

pub struct FastPath {
    pub live: Arc<LiveTable>,
    pub metrics: Arc<Metrics>,
    pub shadow: Arc<Shadower>,
    pub lifecycle: Arc<Lifecycle>,
}

/// What the exchange needs to know about the request it forwards.
struct Routed<'a> {
    /// A HEAD request: the response has no body whatever its headers say.
    head: bool,
    request_id: &'a str,
    /// The client asked to close after this response.
    client_close: bool,
    /// Once closing, no answer promises keep-alive (looked at when the answer's head is built).
    lifecycle: &'a Lifecycle,
    /// Route id and upstream name for the debug headers, when on.
    debug: Option<(&'a str, &'a str)>,
}

/// Why an exchange with the upstream failed before the response head reached the client.
enum UpstreamFailure {
    /// Connect failed or timed out on every backend tried (`timeout`: the last one timed out).
    Connect {
        timeout: bool,
    },
    NoBackend,
    Timeout,
    Broken,
}

impl UpstreamFailure {
    fn answer(&self, upstream: &str) -> (ErrorResponse, &'static str) {
        match self {
            UpstreamFailure::NoBackend => (upstream_error(503, upstream), "error"),
            UpstreamFailure::Connect { timeout: true } | UpstreamFailure::Timeout => {
                (upstream_error(504, upstream), "timeout")
            }
            UpstreamFailure::Connect { timeout: false } | UpstreamFailure::Broken => {
                (upstream_error(502, upstream), "error")
            }
        }
    }
}

/// What one exchange did, for the metrics and the access log.
struct Outcome {
    status: u16,
    backend: Option<SocketAddr>,
    attempts: usize,
    error: &'static str,
    keep_alive: bool,
}

impl FastPath {
    /// Answers the request whose complete head is `buf[..head_end]` (read by
    /// [`crate::edge::head`]) if it qualifies (see the module docs).
    pub async fn serve(
        &self,
        client: &mut ClientStream,
        buf: Vec<u8>,
        head_end: usize,
        client_ip: Option<IpAddr>,
    ) -> Exchange {
        let started = Instant::now();
        // Exactly one request, nothing behind it (a body, or pipelined requests: Pingora's).
        if head_end != buf.len() {
            return Exchange::HandOver(buf);
        }
        let mut headers = [httparse::EMPTY_HEADER; wire::MAX_REQUEST_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) if len == buf.len() => {
                let outcome = self
                    .qualify_and_forward(&req, client, client_ip, started)
                    .await;
                outcome.unwrap_or(Exchange::HandOver(buf))
            }
            // Too many headers for this path, or a malformed head: Pingora's path answers.
            _ => Exchange::HandOver(buf),
        }
    }

    /// `None`: the request does not qualify; nothing was sent anywhere.
    async fn qualify_and_forward(
        &self,
        req: &httparse::Request<'_, '_>,
        client: &mut ClientStream,
        client_ip: Option<IpAddr>,
        started: Instant,
    ) -> Option<Exchange> {
        let head = match req.method? {
            "GET" => false,
            "HEAD" => true,
            _ => return None,
        };
        let target = req.path?;
        if req.version != Some(1) || !target.starts_with('/') || target.contains('#') {
            return None;
        }
        let mut host = None;
        let mut hosts = 0;
        let mut client_close = false;
        let mut via = None;
        let mut client_request_id = None;
        for h in req.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("host") {
                hosts += 1;
                host = Some(h.value);
            } else if ["content-length", "transfer-encoding", "upgrade", "expect"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
            {
                return None;
            } else if name.eq_ignore_ascii_case("connection") {
                for t in wire::tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        client_close = true;
                    } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                        return None;
                    }
                }
            } else if name.eq_ignore_ascii_case("via") {
                // As Pingora's path: the first `Via`, if it is a valid header string.
                via.get_or_insert(Some(h.value).filter(|v| crate::forward::is_header_string(v)));
            } else if name.eq_ignore_ascii_case(REQUEST_ID) {
                client_request_id.get_or_insert(h.value);
            }
        }
        if hosts != 1 {
            return None;
        }
        // The same checks and rewriting as `forward::request_filter`.
        let uri: http::Uri = target.parse().ok()?;
        let path = normalize(uri.path()).ok()?;
        let forward_target = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        forward_target.parse::<http::Uri>().ok()?;

        let table = self.live.current();
        if !table.config.proxy.fast_path {
            return None;
        }
        let method = if head { Method::HEAD } else { Method::GET };
        // A header map only where something needs one: header conditions in the table, or a
        // shadow copy of this request. The split reads the parsed head directly.
        let mut map = None;
        if table.matches_on_headers() {
            map = Some(header_map(req.headers)?);
        }
        // (`HeaderMap::new` does not allocate.)
        let index = match &map {
            Some(map) => table.find(&path, &method, map)?,
            None => table.find(&path, &method, &HeaderMap::new())?,
        };
        let route = table.route(index);
        if route.shadow.is_some() && map.is_none() {
            map = Some(header_map(req.headers)?);
        }
        let pool_name = match &route.split {
            Some(s) if split::goes_to_new_side(s, &*req.headers, client_ip) => &s.to,
            _ => &route.upstream,
        };
        let pool = table.pool(pool_name).clone();
        let request_id = match client_request_id {
            Some(v) if acceptable_request_id(v) => String::from_utf8_lossy(v).into_owned(),
            _ => service_kit::telemetry::new_request_id(),
        };

        // From here the request is this path's to answer.
        let _in_flight = self
            .lifecycle
            .inflight
            .register(&request_id, Some((table.clone(), index)));
        let mut mirror = match &map {
            Some(map) if route.shadow.is_some() => Mirror::begin(
                &self.shadow,
                &table,
                index,
                pool_name,
                &method,
                &forward_target,
                map,
                || edge_header_list(client_ip, host, via.flatten(), &request_id),
            ),
            _ => None,
        };
        if let Some(m) = &mut mirror {
            // GET and HEAD carry no body.
            m.request_body(None, true);
        }
        let mut out = Vec::with_capacity(1024);
        let edge = Edge {
            client_ip,
            host,
            request_id: &request_id,
            via: via.flatten(),
        };
        wire::upstream_request_head(&mut out, req.method?, &forward_target, req.headers, &edge);
        let debug = table
            .config
            .proxy
            .debug_headers
            .then_some((route.id.as_str(), pool.name()));
        let routed = Routed {
            head,
            request_id: &request_id,
            client_close,
            lifecycle: &self.lifecycle,
            debug,
        };
        let outcome = self
            .forward(client, &pool, &out, &routed, mirror.as_mut())
            .await;
        if let Some(m) = mirror {
            m.finish(outcome.status > 0 && outcome.error.is_empty());
        }

        self.metrics
            .request(&route.id, pool.name(), outcome.status, started.elapsed());
        self.metrics.pipeline("fast");
        let elapsed = started.elapsed();
        tracing::info!(
            target: "access",
            method = req.method?,
            path = %path,
            status = outcome.status,
            route = %route.id,
            upstream = pool.name(),
            backend = %outcome.backend.map_or_else(|| "-".to_owned(), |b| b.to_string()),
            attempts = outcome.attempts,
            elapsed_ms = format_args!("{:.2}", elapsed.as_secs_f64() * 1000.0),
            request_id = %request_id,
            error = (!outcome.error.is_empty()).then_some(outcome.error),
            "request"
        );
        Some(if outcome.status == 0 {
            Exchange::Closed
        } else {
            Exchange::Served {
                keep_alive: outcome.keep_alive,
            }
        })
    }

    /// Sends the request upstream (retrying where that cannot duplicate anything) and relays
    /// the response to the client.
    async fn forward(
        &self,
        client: &mut ClientStream,
        pool: &Pool,
        request: &[u8],
        routed: &Routed<'_>,
        mirror: Option<&mut Mirror>,
    ) -> Outcome {
        let mut tried = Vec::new();
        let mut rbuf = Vec::with_capacity(FIRST_READ);
        let opened = self.open(pool, request, &mut tried, &mut rbuf).await;
        let attempts = tried.len();
        let (up, backend) = match opened {
            Ok(x) => x,
            Err(failure) => {
                let (answer, kind) = failure.answer(pool.name());
                self.metrics.upstream_failure(pool.name(), kind);
                let status = answer.status.as_u16();
                let written = write_error(client, &answer, routed.request_id).await;
                return Outcome {
                    status: if written { status } else { 0 },
                    backend: tried.last().copied(),
                    attempts,
                    error: "upstream",
                    keep_alive: false,
                };
            }
        };
        let mut outcome = Outcome {
            status: 0,
            backend: Some(backend.addr),
            attempts,
            error: "",
            keep_alive: false,
        };
        match relay(client, up, &mut rbuf, pool, backend.addr, routed, mirror).await {
            Ok((status, keep_alive)) => {
                outcome.status = status;
                outcome.keep_alive = keep_alive;
            }
            Err(Relay::BeforeHead(failure)) => {
                let (answer, kind) = failure.answer(pool.name());
                self.metrics.upstream_failure(pool.name(), kind);
                let status = answer.status.as_u16();
                if write_error(client, &answer, routed.request_id).await {
                    outcome.status = status;
                }
                outcome.error = "upstream";
            }
            Err(Relay::Midway { status, error }) => {
                // The head went out: the client learns of the failure by the connection
                // closing before the body is complete.
                outcome.status = status;
                outcome.error = error;
                if error == "upstream" {
                    self.metrics.upstream_failure(pool.name(), "error");
                }
            }
        }
        outcome
    }

    /// An upstream connection that has taken the request and sent back at least a complete
    /// response head (into `rbuf`).
    async fn open(
        &self,
        pool: &Pool,
        request: &[u8],
        tried: &mut Vec<SocketAddr>,
        rbuf: &mut Vec<u8>,
    ) -> Result<(TcpStream, Arc<Backend>), UpstreamFailure> {
        let spec = &pool.spec;
        // After a kept-alive connection turned out closed, use new ones only.
        let mut fresh_only = false;
        let mut last_connect_timeout = None;
        loop {
            let Some(backend) = pool.pick(tried) else {
                return Err(match last_connect_timeout {
                    None if tried.is_empty() => UpstreamFailure::NoBackend,
                    None => UpstreamFailure::Connect { timeout: false },
                    Some(timeout) => UpstreamFailure::Connect { timeout },
                });
            };
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
                        backend.mark_connect_failure(spec.health.is_some());
                        self.metrics.upstream_failure(pool.name(), "connect");
                        tracing::warn!(upstream = pool.name(), backend = %backend.addr, timeout, "connect failed; backend out of rotation");
                        // GET and HEAD are idempotent: another backend may take them.
                        last_connect_timeout = Some(timeout);
                        continue;
                    }
                },
            };
            rbuf.clear();
            match exchange_head(
                &mut up,
                request,
                rbuf,
                spec.write_timeout,
                spec.read_timeout,
            )
            .await
            {
                Ok(()) => return Ok((up, backend)),
                Err(HeadError::Stale) if is_reused => {
                    // The backend closed the kept-alive connection as it was reused: not the
                    // backend's failure, and nothing was processed. Again, on a new connection.
                    tried.pop();
                    fresh_only = true;
                }
                Err(HeadError::Stale) | Err(HeadError::Broken) => {
                    return Err(UpstreamFailure::Broken);
                }
                Err(HeadError::Timeout) => return Err(UpstreamFailure::Timeout),
            }
        }
    }
}

enum HeadError {
    /// Closed or reset before any byte of an answer.
    Stale,
    Broken,
    Timeout,
}

enum Relay {
    BeforeHead(UpstreamFailure),
    Midway { status: u16, error: &'static str },
}

/// The request's headers as a map (`None`: one is not a valid header; Pingora's path answers).
fn header_map(headers: &[httparse::Header<'_>]) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        map.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    Some(map)
}

/// Connects to a backend. `Err(true)`: timed out.
async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, bool> {
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
    let mut searched = 0;
    loop {
        if let Some(end) = wire::head_end(rbuf, &mut searched) {
            // An interim response ("HTTP/1.1 1xx"): pass over it to the final one. A 101
            // cannot answer a request that did not ask to upgrade.
            if rbuf.get(9) == Some(&b'1') {
                if rbuf.get(9..12) == Some(b"101") {
                    return Err(HeadError::Broken);
                }
                rbuf.drain(..end);
                searched = 0;
                continue;
            }
            return Ok(());
        }
        if rbuf.len() >= wire::MAX_RESPONSE_HEAD {
            return Err(HeadError::Broken);
        }
        rbuf.reserve(4096);
        match tokio::time::timeout(read_timeout, up.read_buf(rbuf)).await {
            Ok(Ok(0)) | Ok(Err(_)) if rbuf.is_empty() => return Err(HeadError::Stale),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(HeadError::Broken),
            Ok(Ok(_)) => {}
            Err(_) => return Err(HeadError::Timeout),
        }
    }
}

/// Passes the response in `rbuf` (a complete head, maybe some body) and the rest of its body
/// to the client. Returns the status and whether the client connection stays open.
async fn relay(
    client: &mut ClientStream,
    mut up: TcpStream,
    rbuf: &mut Vec<u8>,
    pool: &Pool,
    backend: SocketAddr,
    routed: &Routed<'_>,
    mut mirror: Option<&mut Mirror>,
) -> Result<(u16, bool), Relay> {
    let spec = &pool.spec;
    let mut headers = [httparse::EMPTY_HEADER; wire::MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(rbuf) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return Err(Relay::BeforeHead(UpstreamFailure::Broken)),
    };
    let status = resp.code.unwrap_or(0);
    let framing = wire::response_framing(routed.head, status, resp.headers)
        .map_err(|_| Relay::BeforeHead(UpstreamFailure::Broken))?;
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
        m.response_header(status, &map);
    }
    // The shadow comparison gets the body as it passes (decoded from chunks).
    let mut tee = |data: &[u8]| {
        if let Some(m) = mirror.as_deref_mut() {
            m.response_body(Some(data));
        }
    };
    let mut upstream_reusable = framing != Framing::UntilClose
        && wire::upstream_keeps_alive(resp.version.unwrap_or(0), resp.headers);
    let keep_alive =
        !routed.client_close && !routed.lifecycle.is_closing() && framing != Framing::UntilClose;
    let mut out = Vec::with_capacity(len + 256);
    wire::client_response_head(
        &mut out,
        status,
        resp.reason.unwrap_or(""),
        resp.headers,
        framing,
        &ResponseEdge {
            request_id: routed.request_id,
            debug: routed.debug,
            close: !keep_alive,
        },
    );
    let midway = |error| Relay::Midway { status, error };
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
            Err(_) => return Err(Relay::BeforeHead(UpstreamFailure::Broken)),
        },
        Framing::UntilClose => {
            out.extend_from_slice(body);
            tee(body);
            None
        }
    };
    client.write_all(&out).await.map_err(|_| midway("client"))?;
    // The rest of the body, as it comes.
    loop {
        if remaining == Some(0) {
            break;
        }
        rbuf.clear();
        let want = remaining.map_or(BODY_CHUNK, |r| r.min(BODY_CHUNK as u64) as usize);
        rbuf.reserve(want);
        let n = match tokio::time::timeout(
            spec.read_timeout,
            (&mut up).take(want as u64).read_buf(rbuf),
        )
        .await
        {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return Err(midway("upstream")),
            Err(_) => return Err(midway("upstream timeout")),
        };
        if n == 0 {
            if framing == Framing::UntilClose {
                break;
            }
            return Err(midway("upstream"));
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
                Err(_) => return Err(midway("upstream")),
            },
            Framing::Empty => {}
        }
        client
            .write_all(&rbuf[..pass])
            .await
            .map_err(|_| midway("client"))?;
    }
    client.flush().await.map_err(|_| midway("client"))?;
    if upstream_reusable {
        idle::put(backend, up, spec.idle_timeout);
    }
    Ok((status, keep_alive))
}
