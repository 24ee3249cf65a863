//! What a request carries across Pingora's phases: the table snapshot it was routed on, the
//! side serving it (and its breaker ticket), the backends tried, the shadow mirror. Moving the
//! request to its fallback is a change of this state, asked of the edge.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::Uri;

use crate::edge::failure::Failure;
use crate::edge::fallback::{self, Side};
use crate::lifecycle::inflight::OwnedRegistration;
use crate::metrics::Metrics;
use crate::route_table::RouteTable;
use crate::shadow::mirror::Mirror;
use crate::upstream::{Backend, Pool};

/// Per-request state across phases.
pub(crate) struct RequestCtx {
    pub(super) started: Instant,
    pub(super) table: Option<Arc<RouteTable>>,
    pub(super) route: Option<usize>,
    /// The side serving the request ([`fallback`]): its pool, its breaker ticket, and why the
    /// fallback serves it when it does.
    pub(super) side: Option<Side>,
    pub(super) backend: Option<Arc<Backend>>,
    pub(super) tried: Vec<SocketAddr>,
    pub(super) request_id: crate::edge::headers::RequestId,
    /// Normalized path plus the original query: what is sent upstream.
    pub(super) forward_uri: Option<Uri>,
    /// The path as matched (for the access log; never the query, which may carry secrets).
    pub(super) path: String,
    /// What the request failed with, when the edge answered it (no route, a bad path).
    pub(super) failure: Option<Failure>,
    /// Set when this request is shadowed.
    pub(super) mirror: Option<Mirror>,
    /// Set when an upstream answer was refused for the fallback to serve the request.
    pub(super) replaced: Option<u16>,
    /// Listed among the requests in flight while it lives.
    pub(super) in_flight: Option<OwnedRegistration>,
}

impl RequestCtx {
    pub(super) fn pool(&self) -> Option<&Arc<Pool>> {
        self.side.as_ref().map(|s| &s.pool)
    }

    /// Moves the request to the route's fallback after `failure`, when the edge allows it.
    pub(super) fn fall_back(
        &mut self,
        method: &http::Method,
        failure: &Failure,
        metrics: &Metrics,
    ) -> bool {
        let (Some(table), Some(index), Some(side)) = (&self.table, self.route, &mut self.side)
        else {
            return false;
        };
        side.failed(failure, self.backend.as_ref().map(|b| b.addr), metrics);
        match fallback::after_failure(table, index, side, method, failure, metrics) {
            Some(next) => {
                *side = next;
                if let Some(m) = &mut self.mirror {
                    m.retrying();
                }
                true
            }
            None => false,
        }
    }
}
