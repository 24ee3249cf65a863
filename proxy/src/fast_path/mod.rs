//! The fast path: requests without a body, or whose whole body came with the head, forwarded
//! without Pingora's proxy pipeline.
//!
//! Why it exists: measured on 2 cores with one worker each, Pingora's `ProxyHttp` pipeline
//! spends about 40 µs of CPU per small request where nginx spends 10 (bench/RESULTS.md): the
//! request and response go through owned header maps, a case-preserving copy of every header
//! name, channels between a downstream and an upstream task, boxed phase futures, and a
//! connection pool that spawns a watcher task for every returned connection. No hook of
//! `ProxyHttp` can remove that; a bare Pingora proxy did 0.36x nginx's requests/s, and small
//! writes sent through Banyan's Pingora pipeline 0.32x (bench/RESULTS.md, small writes).
//!
//! What it is: for the common case, which is most of a catalog API's traffic, the connection
//! loop ([`crate::connection`]) reads and inspects the request head at the edge, and when the
//! request qualifies the fast path answers it here. Everything it decides (routing, split,
//! headers, retries, error answers, metrics, the access log) it asks [`crate::edge`], as
//! [`crate::forward`] does: only moving bytes is its own. Heads are parsed in place and written
//! straight into one buffer; response bodies stream through unchanged; upstream connections
//! are kept per thread ([`idle`]).
//!
//! What qualifies ([`takes`], asked before anything is routed; anything else goes, with the
//! bytes already read, to Pingora's pipeline, which routes it once):
//! - `[proxy] fast_path` not turned off (it is on by default; turning it off sends everything
//!   through Pingora's pipeline, for comparison or as an escape hatch; it applies on reload);
//! - HTTP/1.1, one of the methods `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE`, `OPTIONS`,
//!   no `Expect` (the edge has already checked the target, `Host` and the head's bounds);
//! - no body, or a `Content-Length` body in hand: one of at most 16 KiB, which the edge reads
//!   whole with the head before choosing a pipeline ([`crate::edge::request::SMALL_BODY`], within
//!   the head's deadline, the same for both pipelines), or a larger one that came in the same
//!   reads as the head. The fast path never waits on a client for a body itself, so it has no
//!   body timeout of its own to differ from Pingora's; a larger body still coming, or a chunked
//!   one, streams through Pingora's pipeline. A body in hand is sent upstream with the head in
//!   one write and, being whole, can be sent again where the edge allows a retry or a fallback.
//!
//! A request it takes, it answers, whatever happens: a path that cannot be normalized or
//! matches no route is answered here as the edge says, so no request is routed twice. A
//! shadowed route's copy and comparison go to the same shadower as on Pingora's path, with the
//! response body as it passes, decoded from chunks.
//!
//! Files: this one takes and answers a request; [`upstream`] opens the upstream exchange
//! (connect, retry, write, read the head); [`relay`] passes the answer on; [`wire`] writes and
//! reads heads; [`idle`] keeps upstream connections.
//!
//! What Pingora still does for these requests: the listener, accepting, the process (graceful
//! shutdown and upgrade), and everything else.

pub(crate) mod idle;
mod relay;
pub(crate) mod upstream;
pub(crate) mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use tokio::net::TcpStream as ClientStream;

use crate::edge::failure::Failure;
use crate::edge::fallback;
use crate::edge::headers::{self, DebugHeaders, EdgeRequest};
use crate::edge::record::{Pipeline, Record};
use crate::edge::reply::write_error;
use crate::edge::request::{Body, Inspected};
use crate::edge::route;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::reload::LiveTable;
use crate::route_table::RouteTable;
use crate::shadow::mirror::Mirror;
use crate::shadow::thread::Shadower;
use crate::upstream::Pool;

/// How much the first read of an upstream answer takes: a whole catalog answer (a 20-product
/// list page is about 6 KiB) then arrives with its head, and head and body leave in one write
/// to the client instead of two writes and two reads. Only the bytes that arrive are touched.
const FIRST_READ: usize = 16 * 1024;

/// The backends a request was sent to, in order (a request is tried on a few at most).
pub(crate) type Tried = smallvec::SmallVec<[SocketAddr; 4]>;

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
    /// What the debug headers say, when on.
    debug: Option<DebugHeaders<'a>>,
    /// The `client_write_timeout` setting.
    write_timeout: Duration,
    /// Answers with these statuses are not relayed: the fallback serves the request.
    replaced: Option<&'a [u16]>,
    /// The longest the upstream may keep this request waiting for a read.
    read_timeout: Duration,
    /// The route's id (the retry budget's counts).
    route: &'a str,
}

/// What one exchange did, for the access record.
struct Outcome {
    status: u16,
    backend: Option<SocketAddr>,
    attempts: usize,
    failure: Option<Failure>,
    keep_alive: bool,
}

/// A request the fast path takes: its method, and its body's length.
pub(crate) struct Taken {
    pub method: Method,
    pub body: usize,
}

/// Whether the fast path takes a request the edge accepted (see the module docs):
/// `after_head` is how many bytes came after the head in the reads so far. Asked before
/// anything is routed: the `fast_path` setting first, then the request's shape.
pub(crate) fn takes(
    table: &RouteTable,
    req: &httparse::Request<'_, '_>,
    inspected: &Inspected<'_>,
    after_head: usize,
) -> Option<Taken> {
    let body = match inspected.body {
        Body::None => 0,
        Body::Length(n) if n <= after_head as u64 => n as usize,
        Body::Length(_) | Body::Chunked => return None,
    };
    let method = method(req.method?)?;
    (table.config.proxy.fast_path
        && req.version == Some(1)
        && !inspected.host_from_target
        && inspected.path.starts_with('/')
        && !inspected.expect)
        .then_some(Taken { method, body })
}

/// The methods the fast path forwards (the standard ones but `CONNECT` and `TRACE`, without an
/// allocation: `http`'s constants).
fn method(name: &str) -> Option<Method> {
    Some(match name {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        "OPTIONS" => Method::OPTIONS,
        _ => return None,
    })
}

impl FastPath {
    /// Answers a request [`takes`] took: `req` is its parsed head, which the edge inspected,
    /// `method` the method `takes` read from it, and `body` its whole body (empty when it has
    /// none).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn serve(
        &self,
        client: &mut ClientStream,
        table: Arc<RouteTable>,
        req: &httparse::Request<'_, '_>,
        inspected: &Inspected<'_>,
        method: Method,
        body: &[u8],
        client_ip: Option<IpAddr>,
        started: Instant,
    ) -> Exchange {
        // A standard method's name is `http`'s own static text.
        let method_str = method.as_str();
        let head = method == Method::HEAD;
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
                    && write_error(client, &answer, &request_id, head, None).await
                {
                    record.status = answer.status.as_u16();
                }
                record.path = &unrouted.path;
                record.failure = Some(&unrouted.failure);
                record.finish(&self.metrics);
                return Exchange::Served { keep_alive: false };
            }
        };
        let (index, pool, target) = (&routed.index, &routed.pool, routed.target());
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
            Some(_) => Mirror::begin(
                &self.shadow,
                &table,
                *index,
                pool.name(),
                &method,
                target,
                req.headers,
                &edge,
            ),
            None => None,
        };
        if let Some(m) = &mut mirror {
            m.request_body(Some(body), true);
        }
        let mut out = crate::buffers::take(1024 + body.len());
        wire::upstream_request_head(&mut out, method_str, target, req.headers, &edge);
        // Head and body leave in one write (and whole again on a retry or a fallback).
        out.extend_from_slice(body);
        let debug_headers = table.config.proxy.debug_headers;
        let mut attempts = 0;
        let mut side = fallback::choose(&table, *index, pool.clone(), &method, &self.metrics);
        let outcome = loop {
            let current = match &mut side {
                Ok(side) => side,
                Err(failure) => {
                    break self
                        .answer_failure(client, failure.clone(), pool, head, &request_id)
                        .await;
                }
            };
            let exchanging = Exchanging {
                head,
                request_id: &request_id,
                client_close,
                lifecycle: &self.lifecycle,
                debug: debug_headers.then_some(DebugHeaders {
                    route: &route.id,
                    upstream: current.pool.name(),
                    fallback: current.fallback.map(|r| r.label()),
                }),
                write_timeout: table.config.proxy.client_write_timeout,
                replaced: fallback::replaced_statuses(&table, *index, current, &method),
                read_timeout: current.read_timeout(route),
                route: &route.id,
            };
            let mut outcome = self
                .forward(
                    client,
                    &current.pool,
                    &method,
                    &out,
                    &exchanging,
                    mirror.as_mut(),
                )
                .await;
            outcome.attempts += attempts;
            match &outcome.failure {
                None => {
                    current.answered(outcome.status, outcome.backend, &self.metrics);
                    break outcome;
                }
                Some(failure) => {
                    current.failed(failure, outcome.backend, &self.metrics);
                    if outcome.status != 0 {
                        // Midway: the client already has the head.
                        break outcome;
                    }
                    if let Some(next) = fallback::after_failure(
                        &table,
                        *index,
                        current,
                        &method,
                        failure,
                        &self.metrics,
                    ) {
                        attempts = outcome.attempts;
                        side = Ok(next);
                        continue;
                    }
                    let failure = failure.clone();
                    let pool = current.pool.clone();
                    let mut answered = self
                        .answer_failure(client, failure, &pool, head, &request_id)
                        .await;
                    answered.backend = outcome.backend;
                    answered.attempts = outcome.attempts;
                    break answered;
                }
            }
        };
        let upstream = match &side {
            Ok(s) => s.pool.clone(),
            Err(_) => pool.clone(),
        };
        if let Some(m) = mirror {
            m.finish(outcome.status > 0 && outcome.failure.is_none());
        }
        record.path = routed.path();
        record.status = outcome.status;
        record.route = &route.id;
        record.upstream = upstream.name();
        record.backend = outcome.backend;
        record.attempts = outcome.attempts;
        record.failure = outcome.failure.as_ref();
        record.finish(&self.metrics);
        routed.done();
        crate::buffers::give(out);
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
        let mut tried = Tried::new();
        let mut rbuf = crate::buffers::take(FIRST_READ);
        let opened = upstream::open(
            &self.metrics,
            pool,
            method,
            request,
            &mut tried,
            &mut rbuf,
            exchanging,
        )
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
                let relayed = relay::relay(
                    client,
                    up,
                    &mut rbuf,
                    pool,
                    backend.addr,
                    exchanging,
                    mirror,
                )
                .await;
                crate::buffers::give(rbuf);
                outcome.backend = Some(backend.addr);
                match relayed {
                    Ok((status, keep_alive)) => {
                        outcome.status = status;
                        outcome.keep_alive = keep_alive;
                        return outcome;
                    }
                    Err(relay::Relay::BeforeHead(failure)) => failure,
                    Err(relay::Relay::Midway { status, failure }) => {
                        // The head went out: the client learns of the failure by the
                        // connection closing before the body is complete.
                        outcome.status = status;
                        outcome.failure = Some(failure);
                        return outcome;
                    }
                }
            }
            Err(failure) => {
                crate::buffers::give(rbuf);
                failure
            }
        };
        outcome.failure = Some(failure);
        outcome
    }

    /// Answers `failure` (of `pool`) to the client, as the edge maps it.
    async fn answer_failure(
        &self,
        client: &mut ClientStream,
        failure: Failure,
        pool: &Pool,
        head: bool,
        request_id: &str,
    ) -> Outcome {
        let mut status = 0;
        if let Some(answer) = failure.answer(pool.name())
            && write_error(client, &answer, request_id, head, failure.retry_after()).await
        {
            status = answer.status.as_u16();
        }
        Outcome {
            status,
            backend: None,
            attempts: 0,
            failure: Some(failure),
            keep_alive: false,
        }
    }
}
