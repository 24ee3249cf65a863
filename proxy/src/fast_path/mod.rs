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
//! loop ([`crate::connection`]) reads and inspects the request head at the edge, and when the
//! request qualifies the fast path answers it here. Everything it decides (routing, split,
//! headers, retries, error answers, metrics, the access log) it asks [`crate::edge`], as
//! [`crate::forward`] does: only moving bytes is its own. Heads are parsed in place and written
//! straight into one buffer; bodies stream through unchanged; upstream connections are kept per
//! thread ([`idle`]).
//!
//! What qualifies ([`takes`], asked before anything is routed; anything else goes, with the
//! bytes already read, to Pingora's pipeline, which routes it once):
//! - `[proxy] fast_path` not turned off (it is on by default; turning it off sends everything
//!   through Pingora's pipeline, for comparison or as an escape hatch; it applies on reload);
//! - HTTP/1.1, `GET` or `HEAD`, no body (no `Content-Length`, no `Transfer-Encoding`), no
//!   `Expect` (the edge has already checked the target, `Host` and the head's bounds).
//!
//! A request it takes, it answers, whatever happens: a path that cannot be normalized or
//! matches no route is answered here as the edge says, so no request is routed twice. A
//! shadowed route's copy and comparison go to the same shadower as on Pingora's path, with the
//! response body as it passes, decoded from chunks.
//!
//! What Pingora still does for these requests: the listener, accepting, the process (graceful
//! shutdown and upgrade), and everything else.

pub(crate) mod idle;
pub(crate) mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use pingora_core::protocols::l4::stream::Stream as ClientStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::edge::CLIENT_WRITE_TIMEOUT;
use crate::edge::failure::{self, Failure};
use crate::edge::headers::{self, EdgeRequest, EdgeResponse};
use crate::edge::record::{Pipeline, Record};
use crate::edge::reply::write_error;
use crate::edge::request::{Body, Inspected};
use crate::edge::route::{self, Routed};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::reload::LiveTable;
use crate::route_table::RouteTable;
use crate::shadow::mirror::Mirror;
use crate::shadow::thread::Shadower;
use crate::upstream::{Backend, Pool};
use wire::{Chunked, Framing};

/// Body bytes moved per read.
const BODY_CHUNK: usize = 64 * 1024;

/// How much the first read of an upstream answer takes: a whole catalog answer (a 20-product
/// list page is about 6 KiB) then arrives with its head, and head and body leave in one write
/// to the client instead of two writes and two reads. Only the bytes that arrive are touched.
const FIRST_READ: usize = 16 * 1024;

/// What became of one request on a client connection.
pub(crate) enum Exchange {
    /// Answered here. `keep_alive`: the connection may carry another request.
    Served { keep_alive: bool },
    /// The client went away, or stopped mid-head; nothing to answer.
    Closed,
}

pub(crate) struct FastPath {
    pub live: Arc<LiveTable>,
    pub metrics: Arc<Metrics>,
    pub shadow: Arc<Shadower>,
    pub lifecycle: Arc<Lifecycle>,
}

/// What the exchange needs to know about the request it forwards.
struct Exchanging<'a> {
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

/// What one exchange did, for the access record.
struct Outcome {
    status: u16,
    backend: Option<SocketAddr>,
    attempts: usize,
    failure: Option<Failure>,
    keep_alive: bool,
}

/// Whether the fast path takes a request the edge accepted (see the module docs). Asked
/// before anything is routed: the `fast_path` setting first, then the request's shape.
pub(crate) fn takes(
    table: &RouteTable,
    req: &httparse::Request<'_, '_>,
    inspected: &Inspected<'_>,
) -> bool {
    table.config.proxy.fast_path
        && matches!(req.method, Some("GET" | "HEAD"))
        && req.version == Some(1)
        && !inspected.host_from_target
        && inspected.path.starts_with('/')
        && inspected.body == Body::None
        && !req
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("expect"))
}

impl FastPath {
    /// Answers a request [`takes`] took: `req` is its parsed head, which the edge inspected.
    pub(crate) async fn serve(
        &self,
        client: &mut ClientStream,
        table: Arc<RouteTable>,
        req: &httparse::Request<'_, '_>,
        inspected: &Inspected<'_>,
        client_ip: Option<IpAddr>,
        started: Instant,
    ) -> Exchange {
        let method_str = req.method.unwrap_or("GET");
        let head = method_str == "HEAD";
        let method = if head { Method::HEAD } else { Method::GET };
        let request_id = headers::request_id(req.headers);
        let client_close = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| headers::tokens(h.value))
            .any(|t| t.eq_ignore_ascii_case(b"close"));
        let mut record = Record {
            pipeline: Pipeline::Fast,
            started,
            method: method_str,
            path: "-",
            status: 0,
            route: "-",
            upstream: "-",
            backend: None,
            attempts: 0,
            request_id: &request_id,
            failure: None,
        };
        let routed = match route::route(
            &table,
            &method,
            inspected.path,
            inspected.query,
            req.headers,
            client_ip,
        ) {
            Ok(r) => r,
            Err(unrouted) => {
                let answer = unrouted.failure.answer("");
                if let Some(answer) = answer
                    && write_error(client, &answer, &request_id).await
                {
                    record.status = answer.status.as_u16();
                }
                record.path = &unrouted.path;
                record.failure = Some(&unrouted.failure);
                record.finish(&self.metrics);
                return Exchange::Served { keep_alive: false };
            }
        };
        let Routed {
            index,
            pool,
            path,
            target,
        } = &routed;
        let route = table.route(*index);

        // From here the request is this path's to answer.
        let _in_flight = self
            .lifecycle
            .inflight
            .register(&request_id, Some((table.clone(), *index)));
        let via = headers::via(req.headers);
        let edge = EdgeRequest {
            client_ip,
            host: inspected.host,
            request_id: &request_id,
            via: &via,
        };
        let mut mirror = match route.shadow {
            Some(_) => header_map(req.headers).and_then(|map| {
                Mirror::begin(
                    &self.shadow,
                    &table,
                    *index,
                    pool.name(),
                    &method,
                    target,
                    &map,
                    &edge,
                )
            }),
            None => None,
        };
        if let Some(m) = &mut mirror {
            // GET and HEAD carry no body.
            m.request_body(None, true);
        }
        let mut out = Vec::with_capacity(1024);
        wire::upstream_request_head(&mut out, method_str, target, req.headers, &edge);
        let debug = table
            .config
            .proxy
            .debug_headers
            .then_some((route.id.as_str(), pool.name()));
        let exchanging = Exchanging {
            head,
            request_id: &request_id,
            client_close,
            lifecycle: &self.lifecycle,
            debug,
        };
        let outcome = self
            .forward(client, pool, &method, &out, &exchanging, mirror.as_mut())
            .await;
        if let Some(m) = mirror {
            m.finish(outcome.status > 0 && outcome.failure.is_none());
        }
        record.path = path;
        record.status = outcome.status;
        record.route = &route.id;
        record.upstream = pool.name();
        record.backend = outcome.backend;
        record.attempts = outcome.attempts;
        record.failure = outcome.failure.as_ref();
        record.finish(&self.metrics);
        if outcome.status == 0 {
            Exchange::Closed
        } else {
            Exchange::Served {
                keep_alive: outcome.keep_alive,
            }
        }
    }

    /// Sends the request upstream (retrying where that cannot duplicate anything) and relays
    /// the response to the client.
    async fn forward(
        &self,
        client: &mut ClientStream,
        pool: &Pool,
        method: &Method,
        request: &[u8],
        exchanging: &Exchanging<'_>,
        mirror: Option<&mut Mirror>,
    ) -> Outcome {
        let mut tried = Vec::new();
        let mut rbuf = Vec::with_capacity(FIRST_READ);
        let opened = self
            .open(pool, method, request, &mut tried, &mut rbuf)
            .await;
        let mut outcome = Outcome {
            status: 0,
            backend: tried.last().copied(),
            attempts: tried.len(),
            failure: None,
            keep_alive: false,
        };
        let failure = match opened {
            Ok((up, backend)) => {
                outcome.backend = Some(backend.addr);
                match relay(
                    client,
                    up,
                    &mut rbuf,
                    pool,
                    backend.addr,
                    exchanging,
                    mirror,
                )
                .await
                {
                    Ok((status, keep_alive)) => {
                        outcome.status = status;
                        outcome.keep_alive = keep_alive;
                        return outcome;
                    }
                    Err(Relay::BeforeHead(failure)) => failure,
                    Err(Relay::Midway { status, failure }) => {
                        // The head went out: the client learns of the failure by the
                        // connection closing before the body is complete.
                        outcome.status = status;
                        outcome.failure = Some(failure);
                        return outcome;
                    }
                }
            }
            Err(failure) => failure,
        };
        if let Some(answer) = failure.answer(pool.name())
            && write_error(client, &answer, exchanging.request_id).await
        {
            outcome.status = answer.status.as_u16();
        }
        outcome.failure = Some(failure);
        outcome
    }

    /// An upstream connection that has taken the request and sent back at least a complete
    /// response head (into `rbuf`).
    async fn open(
        &self,
        pool: &Pool,
        method: &Method,
        request: &[u8],
        tried: &mut Vec<SocketAddr>,
        rbuf: &mut Vec<u8>,
    ) -> Result<(TcpStream, Arc<Backend>), Failure> {
        let spec = &pool.spec;
        // After a kept-alive connection turned out closed, use new ones only.
        let mut fresh_only = false;
        let mut last_connect_timeout = None;
        loop {
            let Some(backend) = pool.pick(tried) else {
                return Err(match last_connect_timeout {
                    None if tried.is_empty() => Failure::NoBackend,
                    None => Failure::Connect { timeout: false },
                    Some(timeout) => Failure::Connect { timeout },
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
                        failure::connect_failed(&self.metrics, pool, &backend, timeout);
                        if !failure::retried_on_connect_failure(method) {
                            return Err(Failure::Connect { timeout });
                        }
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
                    return Err(Failure::BadUpstream);
                }
                Err(HeadError::Timeout) => return Err(Failure::Timeout),
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
    BeforeHead(Failure),
    Midway { status: u16, failure: Failure },
}

/// The request's headers as a map, for the shadow copy (`None`: one is not a valid header
/// value for a map; such a request is not shadowed).
fn header_map(headers: &[httparse::Header<'_>]) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        map.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    Some(map)
}

/// Writes to the client within [`CLIENT_WRITE_TIMEOUT`] (a client that stops reading does not
/// hold the exchange, and its upstream connection, for ever).
async fn write_client(client: &mut ClientStream, bytes: &[u8]) -> Result<(), ()> {
    let write = async {
        client.write_all(bytes).await?;
        client.flush().await
    };
    match tokio::time::timeout(CLIENT_WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
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
    exchanging: &Exchanging<'_>,
    mut mirror: Option<&mut Mirror>,
) -> Result<(u16, bool), Relay> {
    let spec = &pool.spec;
    let mut headers = [httparse::EMPTY_HEADER; wire::MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(rbuf) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return Err(Relay::BeforeHead(Failure::BadUpstream)),
    };
    let status = resp.code.unwrap_or(0);
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
    let keep_alive = !exchanging.client_close
        && !exchanging.lifecycle.is_closing()
        && framing != Framing::UntilClose;
    let mut out = Vec::with_capacity(len + 256);
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
    write_client(client, &out)
        .await
        .map_err(|_| midway(Failure::ClientGone))?;
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
        write_client(client, &rbuf[..pass])
            .await
            .map_err(|_| midway(Failure::ClientGone))?;
    }
    if upstream_reusable {
        idle::put(backend, up, spec.idle_timeout);
    }
    Ok((status, keep_alive))
}
