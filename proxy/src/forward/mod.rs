//! Forwarding: Banyan's implementation of Pingora's [`ProxyHttp`] phases.
//!
//! Each phase asks the edge ([`crate::edge`]) what to do and only moves bytes itself:
//! - `request_filter`: take the current route table snapshot (kept for the whole request) and
//!   route ([`crate::edge::route`]); a request that cannot be routed is answered here, as the
//!   edge maps it ([`crate::edge::failure`]), and never forwarded.
//! - `upstream_peer`: the next available backend of the chosen pool, round-robin; on a retry,
//!   one not tried yet.
//! - `upstream_request_filter`: the normalized target, and the edge's request header rules
//!   ([`crate::edge::headers`]).
//! - `fail_to_connect`: the backend leaves rotation; the edge says whether the request is tried
//!   on another backend.
//! - `response_filter`: the edge's response header rules.
//! - `fail_to_proxy`: Pingora's error, named as the edge's [`Failure`], answered as it says.
//! - `logging`: the edge's access record ([`crate::edge::record`]).
//!
//! `ctx.rs` holds the per-request state across the phases, `answer.rs` the mapping of
//! Pingora's errors to the edge's failures and the error answers written through Pingora.
//!
//! Bodies stream through in both directions; nothing here buffers them. A shadowed request
//! ([`crate::shadow::mirror`]) also hands each body chunk, by reference, to its mirror: the
//! copy for the candidate and the primary's answer to compare it with.

mod answer;
mod ctx;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderMap;
use http::header::HOST;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};

use crate::edge::failure::{self, Failure};
use crate::edge::fallback::{self, Side};
use crate::edge::headers::{self, DebugHeaders, Disposition, EdgeRequest, EdgeResponse, Nominated};
use crate::edge::record::{Pipeline, Record};
use crate::edge::{retry, route};
use crate::lifecycle::Lifecycle;
use crate::lifecycle::inflight::register_owned;
use crate::metrics::Metrics;
use crate::reload::LiveTable;
use crate::shadow::mirror::Mirror;
use crate::shadow::thread::Shadower;

use self::answer::{failure_of, respond};
pub(crate) use self::ctx::RequestCtx;

pub(crate) struct Banyan {
    pub live: Arc<LiveTable>,
    pub metrics: Arc<Metrics>,
    pub shadow: Arc<Shadower>,
    pub lifecycle: Arc<Lifecycle>,
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The request's `Host` (the edge rewrote any absolute-form target to origin-form).
fn host_of(req: &RequestHeader) -> Option<&[u8]> {
    req.headers.get(HOST).map(|h| h.as_bytes())
}

#[async_trait]
impl ProxyHttp for Banyan {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            table: None,
            route: None,
            side: None,
            backend: None,
            tried: Vec::new(),
            request_id: Default::default(),
            forward_uri: None,
            path: String::new(),
            failure: None,
            mirror: None,
            replaced: None,
            in_flight: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let table = self.live.current();
        session.set_write_timeout(Some(table.config.proxy.client_write_timeout));
        let client = client_ip(session);
        let req = session.req_header();
        ctx.request_id = headers::request_id(&req.headers);
        let routed = route::route(
            &table,
            &req.method,
            req.uri.path(),
            req.uri.query(),
            &req.headers,
            client,
        );
        let routed = match routed {
            Ok(r) => r,
            Err(unrouted) => {
                ctx.path = unrouted.path;
                if let Some(answer) = unrouted.failure.answer("") {
                    respond(session, ctx, answer, None).await?;
                }
                ctx.failure = Some(unrouted.failure);
                return Ok(true);
            }
        };
        let route = table.route(routed.index);
        ctx.forward_uri = routed.uri();
        if route.shadow.is_some() {
            let via = headers::via(&req.headers);
            let edge = EdgeRequest {
                client_ip: client,
                host: host_of(req),
                request_id: &ctx.request_id,
                via: &via,
            };
            ctx.mirror = Mirror::begin(
                &self.shadow,
                &table,
                routed.index,
                routed.pool.name(),
                &req.method,
                routed.target(),
                &req.headers,
                &edge,
            );
        }
        ctx.in_flight = Some(register_owned(
            &self.lifecycle,
            &ctx.request_id,
            Some((table.clone(), routed.index)),
        ));
        let side = fallback::choose(
            &table,
            routed.index,
            routed.pool.clone(),
            &req.method,
            &self.metrics,
        );
        ctx.path = routed.path().to_owned();
        ctx.route = Some(routed.index);
        ctx.table = Some(table);
        match side {
            Ok(side) => {
                ctx.side = Some(side);
                Ok(false)
            }
            Err(failure) => {
                ctx.side = Some(Side::unsent(routed.pool.clone()));
                if let Some(answer) = failure.answer(ctx.pool().map_or("", |p| p.name())) {
                    respond(session, ctx, answer, failure.retry_after()).await?;
                }
                ctx.failure = Some(failure);
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        if !ctx.tried.is_empty()
            && let Some(m) = &mut ctx.mirror
        {
            m.retrying();
        }
        let mut pool = ctx.pool().expect("request_filter chose a side").clone();
        let mut backend = pool.pick(&ctx.tried);
        if backend.is_none() {
            let failure = if ctx.tried.is_empty() {
                Failure::NoBackend
            } else {
                Failure::Connect { timeout: false }
            };
            if ctx.fall_back(&session.req_header().method, &failure, &self.metrics) {
                pool = ctx.pool().expect("the fallback's side").clone();
                backend = pool.pick(&ctx.tried);
            }
        }
        let Some(backend) = backend else {
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
        let side = ctx.side.as_ref().expect("request_filter chose a side");
        let route = ctx
            .table
            .as_ref()
            .zip(ctx.route)
            .map(|(t, i)| t.route(i))
            .expect("request_filter routed the request");
        peer.options.read_timeout = Some(side.read_timeout(route));
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
        let req = session.req_header();
        let via = headers::via(&req.headers);
        let edge = EdgeRequest {
            client_ip: client_ip(session),
            host: host_of(req),
            request_id: &ctx.request_id,
            via: &via,
        };
        for name in dropped(&upstream.headers, headers::request_header) {
            upstream.remove_header(&name);
        }
        for (name, value) in headers::request_additions(&edge) {
            let value = http::HeaderValue::from_bytes(&value)
                .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "edge header"))?;
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
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if let (Some(table), Some(index), Some(side)) = (&ctx.table, ctx.route, &ctx.side)
            && fallback::replaced_statuses(table, index, side, &session.req_header().method)
                .is_some_and(|s| s.contains(&status))
        {
            ctx.replaced = Some(status);
            return Err(Error::explain(
                ErrorType::Custom("failed answer"),
                "the upstream's answer is replaced by the route's fallback",
            ));
        }
        if let Some(m) = &mut ctx.mirror {
            m.response_header(
                upstream_response.status.as_u16(),
                upstream_response.headers.clone(),
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
        if let (Some(pool), Some(backend)) = (ctx.pool(), &ctx.backend) {
            let timeout = matches!(e.etype(), ErrorType::ConnectTimedout);
            failure::connect_failed(&self.metrics, pool, backend, timeout);
            let method = &session.req_header().method;
            let route = ctx
                .table
                .as_ref()
                .zip(ctx.route)
                .map(|(t, i)| t.route(i).id.clone());
            let retry = if pool.pick(&ctx.tried).is_some() {
                failure::retried_on_connect_failure(method)
                    && retry::may_retry(route.as_deref().unwrap_or("-"), pool, &self.metrics)
            } else {
                // The pool has no backend left to try: the fallback, when the edge allows.
                ctx.fall_back(method, &Failure::Connect { timeout }, &self.metrics)
            };
            e.set_retry(retry);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // An idempotent request whose body is still whole is tried again when the failure was
        // on a reused connection (the edge's rule; Pingora decides whether it was one).
        if !failure::retried_on_reused_close(&session.req_header().method)
            || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        // A new connection closed or reset before any byte of the answer (a backend killed as
        // it held the request): a request without a body may go to another backend.
        if !e.retry()
            && ctx.replaced.is_none()
            && session.response_written().is_none()
            && e.esource() == &ErrorSource::Upstream
            && matches!(
                e.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError
            )
            && failure::retried_after_reset(&session.req_header().method)
            && ctx.pool().is_some_and(|p| p.pick(&ctx.tried).is_some())
        {
            e.set_retry(true);
        }
        // Pingora's retries are second attempts: within the budget.
        if e.retry()
            && let (Some(table), Some(index), Some(pool)) = (&ctx.table, ctx.route, ctx.pool())
            && !retry::may_retry(&table.route(index).id, pool, &self.metrics)
        {
            e.set_retry(false);
        }
        // Nothing of the answer reached the client yet: the fallback may serve it (and must,
        // when it was the upstream's answer that was refused for it).
        let replaced = ctx.replaced.take();
        if (replaced.is_some() || !e.retry()) && session.response_written().is_none() {
            let failure = match replaced {
                Some(status) => Failure::FailedAnswer(status),
                None => failure_of(&e),
            };
            let method = session.req_header().method.clone();
            let fell_back = ctx.fall_back(&method, &failure, &self.metrics);
            e.set_retry(fell_back || (replaced.is_none() && e.retry()));
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
        let via = headers::via(&resp.headers);
        for name in dropped(&resp.headers, headers::response_header) {
            resp.remove_header(&name);
        }
        if let Some(side) = &mut ctx.side {
            let backend = ctx.backend.as_ref().map(|b| b.addr);
            side.answered(resp.status.as_u16(), backend, &self.metrics);
        }
        let debug = match (&ctx.table, ctx.route, &ctx.side) {
            (Some(table), Some(i), Some(side)) if table.config.proxy.debug_headers => {
                Some(DebugHeaders {
                    route: table.route(i).id.as_str(),
                    upstream: side.pool.name(),
                    fallback: side.fallback.map(|r| r.label()),
                })
            }
            _ => None,
        };
        let edge = EdgeResponse {
            request_id: &ctx.request_id,
            via: &via,
            debug,
            // Pingora says `Connection` itself, from whether the session keeps alive.
            close: false,
        };
        for (name, value) in headers::response_additions(&edge) {
            if name == "connection" {
                continue;
            }
            let value = http::HeaderValue::from_bytes(value)
                .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "edge header"))?;
            resp.insert_header(name, value)?;
        }
        Ok(())
    }

    /// Pingora's own warning for each attempt it tries again is not written: every second
    /// attempt is the edge's decision, counted in `banyan_retries_total` or
    /// `banyan_fallbacks_total` and in the access record's `attempts`, as on the fast path
    /// (which logs nothing per attempt). A failing new service behind a fallback would
    /// otherwise write a warning per request it fails.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        matches!(context, ProxyWarnLogContext::UpstreamRetry)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let failure = failure_of(e);
        if let Some(side) = &mut ctx.side {
            let backend = ctx.backend.as_ref().map(|b| b.addr);
            side.failed(&failure, backend, &self.metrics);
        }
        let answer = failure.answer(ctx.pool().map_or("", |p| p.name()));
        let code = answer.as_ref().map_or(0, |a| a.status.as_u16());
        if let Some(answer) = answer
            && session.response_written().is_none()
            && let Err(write) = respond(session, ctx, answer, failure.retry_after()).await
        {
            tracing::debug!(error = %write, "could not send the error response");
        }
        ctx.failure = Some(failure);
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
        let failure = ctx.failure.take().or_else(|| e.map(failure_of));
        let route = match (&ctx.table, ctx.route) {
            (Some(t), Some(i)) => t.route(i).id.as_str(),
            _ => "-",
        };
        let path = if ctx.path.is_empty() {
            "-"
        } else {
            ctx.path.as_str()
        };
        Record {
            pipeline: Pipeline::Pingora,
            started: ctx.started,
            method: session.req_header().method.as_str(),
            path,
            status,
            route,
            upstream: ctx.pool().map_or("-", |p| p.name()),
            backend: ctx.backend.as_ref().map(|b| b.addr),
            attempts: ctx.tried.len(),
            request_id: &ctx.request_id,
            failure: failure.as_ref(),
        }
        .finish(&self.metrics);
    }
}

/// The headers of `map` the edge's rule `rule` drops, to be removed through Pingora's header
/// types (which keep each name's case beside the map).
fn dropped(
    map: &HeaderMap,
    rule: fn(&str, &Nominated<'_>) -> Disposition,
) -> Vec<http::HeaderName> {
    let nominated = Nominated::of(map);
    map.keys()
        .filter(|n| rule(n.as_str(), &nominated) == Disposition::Drop)
        .cloned()
        .collect()
}
