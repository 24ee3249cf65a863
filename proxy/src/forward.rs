//! Forwarding: Banyan's implementation of Pingora's [`ProxyHttp`] phases.
//!
//! Per request, in phase order:
//! - `request_filter`: take the current route table snapshot (kept for the whole request),
//!   normalize the path, match the route, decide the side of a split. Unroutable or malformed
//!   requests are answered here (400/404 in the catalog error format) and never forwarded.
//! - `upstream_peer`: the next available backend of the chosen pool, round-robin; on a retry,
//!   one not tried yet.
//! - `upstream_request_filter`: the normalized path, `X-Forwarded-*` (set, not trusted from
//!   the client: Banyan is the edge), `X-Request-Id`, `Via`.
//! - `fail_to_connect`: the backend leaves rotation; an idempotent request is retried on
//!   another backend (nothing was sent yet, so retrying cannot duplicate a write).
//! - `response_filter`: `X-Request-Id`, `Via`, and debug headers when configured.
//! - `fail_to_proxy`: 502/503/504 in the catalog error format.
//! - `logging`: metrics and one access-log line.
//!
//! Bodies stream through in both directions; nothing here buffers them. A shadowed request
//! ([`crate::shadow::mirror`]) also hands each body chunk, by reference, to its mirror: the
//! copy for the candidate and the primary's answer to compare it with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HOST, VIA};
use http::{HeaderName, HeaderValue, Uri};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use service_kit::ErrorResponse;

use crate::lifecycle::Lifecycle;
use crate::lifecycle::inflight::{OwnedRegistration, register_owned};
use crate::metrics::Metrics;
use crate::reload::LiveTable;
use crate::route_table::RouteTable;
use crate::route_table::normalize::normalize;
use crate::shadow::mirror::{MARKER, Mirror, Shadower};
use crate::split;
use crate::upstream::{Backend, Pool};

pub(crate) const VIA_VALUE: &str = "1.1 banyan";

/// Whether a header value is a valid header string (visible ASCII and tabs), as
/// `HeaderValue::to_str` takes it.
pub(crate) fn is_header_string(v: &[u8]) -> bool {
    v.iter().all(|b| *b == b'\t' || (32..127).contains(b))
}
pub(crate) const REQUEST_ID: &str = "x-request-id";

pub struct Banyan {
    pub live: Arc<LiveTable>,
    pub metrics: Arc<Metrics>,
    pub shadow: Arc<Shadower>,
    pub lifecycle: Arc<Lifecycle>,
}

/// Per-request state across phases.
pub struct RequestCtx {
    started: Instant,
    table: Option<Arc<RouteTable>>,
    route: Option<usize>,
    pool: Option<Arc<Pool>>,
    backend: Option<Arc<Backend>>,
    tried: Vec<SocketAddr>,
    request_id: String,
    /// Normalized path plus the original query: what is sent upstream.
    forward_uri: Option<Uri>,
    /// The path as matched (for the access log; never the query, which may carry secrets).
    path: String,
    /// Set when this request is shadowed.
    mirror: Option<Mirror>,
    /// Listed among the requests in flight while it lives.
    in_flight: Option<OwnedRegistration>,
}

/// The headers Banyan sets on what it forwards, on top of the client's: `X-Forwarded-*` (set,
/// never trusted from the client: Banyan is the edge), `X-Request-Id`, `Via`. The primary and
/// a shadow copy get the same.
fn edge_headers(session: &Session, request_id: &str) -> Vec<(HeaderName, HeaderValue)> {
    let req = session.req_header();
    edge_header_list(
        session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip()),
        req.headers.get(HOST).map(HeaderValue::as_bytes),
        req.headers.get(VIA).map(HeaderValue::as_bytes),
        request_id,
    )
}

/// The edge headers from their parts (the client's address, its `Host` and first `Via`), as
/// both paths give them to a shadow copy.
pub(crate) fn edge_header_list(
    client_ip: Option<std::net::IpAddr>,
    host: Option<&[u8]>,
    via: Option<&[u8]>,
    request_id: &str,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(5);
    if let Some(ip) = client_ip
        && let Ok(v) = HeaderValue::from_str(&ip.to_string())
    {
        out.push((HeaderName::from_static("x-forwarded-for"), v));
    }
    out.push((
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    ));
    if let Some(host) = host.and_then(|h| HeaderValue::from_bytes(h).ok()) {
        out.push((HeaderName::from_static("x-forwarded-host"), host));
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        out.push((HeaderName::from_static(REQUEST_ID), v));
    }
    // A previous `Via` is kept when it is a valid header string (visible ASCII).
    let previous = via.filter(|v| is_header_string(v));
    let via = match previous {
        Some(prev) => HeaderValue::from_bytes(&[prev, b", ", VIA_VALUE.as_bytes()].concat()).ok(),
        None => Some(HeaderValue::from_static(VIA_VALUE)),
    };
    if let Some(v) = via {
        out.push((VIA, v));
    }
    out
}

/// A client's `X-Request-Id` is kept when it is short and plain; otherwise Banyan makes one.
pub(crate) fn acceptable_request_id(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

fn is_idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}

/// Writes a complete JSON error response to the client.
async fn respond(session: &mut Session, ctx: &RequestCtx, err: ErrorResponse) -> Result<()> {
    let body = Bytes::from(err.to_json());
    let mut resp = ResponseHeader::build(err.status.as_u16(), Some(4))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
    resp.insert_header(VIA, VIA_VALUE)?;
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

pub(crate) fn upstream_error(status: u16, upstream: &str) -> ErrorResponse {
    let mut e = match status {
        503 => ErrorResponse::unavailable(format!("no healthy backend for upstream {upstream}")),
        504 => ErrorResponse::unavailable(format!("upstream {upstream} did not answer in time")),
        _ => ErrorResponse::unavailable(format!("upstream {upstream} is unavailable")),
    };
    e.status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    e.code = match status {
        503 => "unavailable",
        504 => "gateway_timeout",
        _ => "bad_gateway",
    };
    e
}

#[async_trait]
impl ProxyHttp for Banyan {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            table: None,
            route: None,
            pool: None,
            backend: None,
            tried: Vec::new(),
            request_id: String::new(),
            forward_uri: None,
            path: String::new(),
            mirror: None,
            in_flight: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let table = self.live.current();
        let req = session.req_header();
        ctx.request_id = match req.headers.get(REQUEST_ID) {
            Some(v) if acceptable_request_id(v.as_bytes()) => {
                v.to_str().unwrap_or_default().to_owned()
            }
            _ => service_kit::telemetry::new_request_id(),
        };
        let normalized = match normalize(req.uri.path()) {
            Ok(p) => p,
            Err(e) => {
                ctx.path = "-".into();
                respond(session, ctx, ErrorResponse::bad_request(e.to_string())).await?;
                return Ok(true);
            }
        };
        let Some(index) = table.find(&normalized, &req.method, &req.headers) else {
            ctx.path = normalized;
            respond(
                session,
                ctx,
                ErrorResponse::not_found("no route for this path"),
            )
            .await?;
            return Ok(true);
        };
        let route = table.route(index);
        let pool_name = match &route.split {
            Some(s) => {
                let client = session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip());
                if split::goes_to_new_side(s, &req.headers, client) {
                    &s.to
                } else {
                    &route.upstream
                }
            }
            None => &route.upstream,
        };
        ctx.pool = Some(table.pool(pool_name).clone());
        let forward = match req.uri.query() {
            Some(q) => format!("{normalized}?{q}"),
            None => normalized.clone(),
        };
        ctx.forward_uri = Some(forward.parse().map_err(|_| {
            Error::explain(ErrorType::InvalidHTTPHeader, "unforwardable request target")
        })?);
        if route.shadow.is_some() {
            ctx.mirror = Mirror::begin(
                &self.shadow,
                &table,
                index,
                pool_name,
                &req.method,
                &forward,
                &req.headers,
                || edge_headers(session, &ctx.request_id),
            );
        }
        ctx.in_flight = Some(register_owned(
            &self.lifecycle,
            &ctx.request_id,
            Some((table.clone(), index)),
        ));
        ctx.path = normalized;
        ctx.route = Some(index);
        ctx.table = Some(table);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let pool = ctx.pool.clone().expect("request_filter chose a pool");
        if !ctx.tried.is_empty()
            && let Some(m) = &mut ctx.mirror
        {
            m.retrying();
        }
        let Some(backend) = pool.pick(&ctx.tried) else {
            let status = if ctx.tried.is_empty() { 503 } else { 502 };
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "no available backend",
            ));
        };
        ctx.tried.push(backend.addr);
        let spec = &pool.spec;
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        peer.options.connection_timeout = Some(spec.connect_timeout);
        peer.options.total_connection_timeout = Some(spec.connect_timeout);
        peer.options.read_timeout = Some(spec.read_timeout);
        peer.options.write_timeout = Some(spec.write_timeout);
        peer.options.idle_timeout = Some(spec.idle_timeout);
        ctx.backend = Some(backend);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(uri) = ctx.forward_uri.clone() {
            upstream.set_uri(uri);
        }
        // Only Banyan may say a request is shadow traffic, and only to a candidate.
        upstream.remove_header(MARKER);
        upstream.remove_header("x-forwarded-for");
        upstream.remove_header("x-forwarded-host");
        for (name, value) in edge_headers(session, &ctx.request_id) {
            upstream.insert_header(name, value)?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(m) = &mut ctx.mirror {
            m.request_body(body.as_deref(), end_of_stream);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(m) = &mut ctx.mirror {
            m.response_header(
                upstream_response.status.as_u16(),
                &upstream_response.headers,
            );
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(m) = &mut ctx.mirror {
            m.response_body(body.as_deref());
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(pool), Some(backend)) = (&ctx.pool, &ctx.backend) {
            backend.mark_connect_failure(pool.spec.health.is_some());
            self.metrics.upstream_failure(pool.name(), "connect");
            tracing::warn!(upstream = pool.name(), backend = %backend.addr, error = %e, "connect failed; backend out of rotation");
            let another = pool.pick(&ctx.tried).is_some();
            e.set_retry(another && is_idempotent(&session.req_header().method));
        }
        e
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.lifecycle.is_closing() {
            // No answer promises keep-alive once the proxy is closing (`crate::lifecycle`).
            session.set_keepalive(None);
        }
        resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        let via = match resp.headers.get(VIA).and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {VIA_VALUE}"),
            None => VIA_VALUE.to_owned(),
        };
        resp.insert_header(VIA, via)?;
        if let (Some(table), Some(i), Some(pool)) = (&ctx.table, ctx.route, &ctx.pool)
            && table.config.proxy.debug_headers
        {
            resp.insert_header("x-banyan-route", table.route(i).id.as_str())?;
            resp.insert_header("x-banyan-upstream", pool.name())?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                504
            }
            ErrorType::ConnectTimedout => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let upstream = ctx
                .pool
                .as_ref()
                .map(|p| p.name().to_owned())
                .unwrap_or_default();
            let body = match code {
                502..=504 => upstream_error(code, &upstream),
                400 => ErrorResponse::bad_request("malformed request"),
                _ => ErrorResponse::internal(),
            };
            if let Err(write) = respond(session, ctx, body).await {
                tracing::debug!(error = %write, "could not send the error response");
            }
            if let Some(pool) = &ctx.pool {
                self.metrics
                    .upstream_failure(pool.name(), if code == 504 { "timeout" } else { "error" });
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if let Some(m) = ctx.mirror.take() {
            m.finish(e.is_none() && status > 0);
        }
        let route = match (&ctx.table, ctx.route) {
            (Some(t), Some(i)) => t.route(i).id.as_str(),
            _ => "-",
        };
        let upstream = ctx.pool.as_ref().map_or("-", |p| p.name());
        let elapsed = ctx.started.elapsed();
        self.metrics.request(route, upstream, status, elapsed);
        self.metrics.pipeline("pingora");
        tracing::info!(
            target: "access",
            method = %session.req_header().method,
            path = %ctx.path,
            status,
            route,
            upstream,
            backend = %ctx.backend.as_ref().map_or_else(|| "-".to_owned(), |b| b.addr.to_string()),
            attempts = ctx.tried.len(),
            elapsed_ms = format_args!("{:.2}", elapsed.as_secs_f64() * 1000.0),
            request_id = %ctx.request_id,
            error = e.map(|e| e.etype().as_str()),
            "request"
        );
    }
}
