//! Which side serves a request once it is routed: the side the route (and its split) chose,
//! unless that side's breaker is open or it cannot take the request, in which case the route's
//! `fallback` (the monolith, a known-good twin of every route that moves) serves it.
//!
//! The rule for what may fall back is about never doing a write twice:
//! - reads (GET, HEAD, OPTIONS) fall back whenever the chosen side failed before any byte of
//!   its answer: breaker open, no healthy backend, connection refused, connect or answer timed
//!   out, an answer broken before its head;
//! - writes fall back only when the route says `fallback_writes = true` (the operator's
//!   statement that the fallback still owns those writes) and no byte of the write reached the
//!   failing side (breaker open, no healthy backend, connection refused or never established).
//!
//! A fallback is not a retry against the retry budget ([`super::retry`]): the budget keeps a
//! failing pool from being hit twice for each request, and a fallback does not touch the
//! failing pool again. What it adds goes to the fallback, which served the whole route before
//! the migration began, and it is the same load an open breaker sends there (not charged
//! either). Charging it would fail clients exactly when the fallback matters: a side that
//! fails after a healthy spell keeps its breaker closed until failures are `error_percent` of
//! a window full of successes, and the budget (a burst of 100) is spent long before that
//! (measured with a real catalog answering 503: 133 fallbacks, then 502s to clients).
//!
//! A request falls back once: the fallback's own failure is answered as it is. A route whose
//! chosen side *is* its fallback does not fall back to itself. Otherwise an open breaker is
//! answered at once with 503 and `Retry-After` ([`Failure::BreakerOpen`]): no client waits
//! on an upstream known to be failing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

use super::breaker::{Ticket, Verdict};
use super::failure::Failure;
use crate::config::RouteSpec;
use crate::metrics::Metrics;
use crate::rollout::live::{Live, Which};
use crate::route_table::RouteTable;
use crate::upstream::Pool;

/// Why a request was served by the fallback (`x-banyan-fallback`, `banyan_fallbacks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    BreakerOpen,
    NoBackend,
    Connect,
    Timeout,
    BadUpstream,
    /// The chosen side answered with a status its breaker counts as failed.
    Status,
}

impl Reason {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reason::BreakerOpen => "breaker_open",
            Reason::NoBackend => "no_backend",
            Reason::Connect => "connect",
            Reason::Timeout => "timeout",
            Reason::BadUpstream => "bad_upstream",
            Reason::Status => "status",
        }
    }

    /// Whether a write may have reached the failing side.
    fn write_may_have_landed(self) -> bool {
        matches!(self, Reason::Timeout | Reason::BadUpstream | Reason::Status)
    }
}

/// The side a request is sent to.
#[derive(Debug)]
pub(crate) struct Side {
    pub(crate) pool: Arc<Pool>,
    /// The breaker's admission of this request, to be given its verdict.
    pub(crate) ticket: Option<Ticket>,
    /// Set when the fallback serves the request.
    pub(crate) fallback: Option<Reason>,
    /// The rollout record this side's outcome goes to, when the route rolls out.
    meter: Option<Meter>,
}

/// What a side's outcome adds to its route's rollout: which side it was, and since when.
#[derive(Debug)]
struct Meter {
    live: Arc<Live>,
    which: Which,
    started: Instant,
}

impl Meter {
    /// For a request of route `index` sent to `pool`: the new side when `pool` is the
    /// rollout's, the old side when it is the route's own upstream (a fallback to another
    /// upstream is neither).
    fn of(table: &RouteTable, index: usize, pool: &Pool) -> Option<Meter> {
        let live = table.rollout(index)?;
        let which = if pool.name() == live.to {
            Which::New
        } else if pool.name() == table.route(index).upstream {
            Which::Old
        } else {
            return None;
        };
        Some(Meter {
            live: live.clone(),
            which,
            started: Instant::now(),
        })
    }

    fn finish(self, failed: bool) {
        self.live.record(self.which, failed, self.started.elapsed());
    }

    /// The side was chosen but could not be asked: a rollout must see a dead new side fail
    /// even while its breaker or the fallback keeps the clients from noticing, or the step
    /// would only ever hold for want of traffic.
    fn refused(self) {
        self.live.refused(self.which);
    }
}

impl Side {
    /// The side a request was routed to when nothing is sent to it (answered at once).
    pub(crate) fn unsent(pool: Arc<Pool>) -> Side {
        Side {
            pool,
            ticket: None,
            fallback: None,
            meter: None,
        }
    }

    /// How long this side may keep a request of `route` waiting for a read: the route's
    /// `timeout`, within the upstream's own `read_timeout`.
    pub(crate) fn read_timeout(&self, route: &RouteSpec) -> Duration {
        route.timeout.min(self.pool.spec.read_timeout)
    }

    /// The request ended with an answer of `status` from `backend` (after its head arrived):
    /// counted by the route's breaker and the backend's outlier ejection.
    pub(crate) fn answered(&mut self, status: u16, backend: Option<SocketAddr>, metrics: &Metrics) {
        if let Some(addr) = backend {
            self.pool.observe(addr, status >= 500, metrics);
        }
        if let Some(m) = self.meter.take() {
            m.finish(status >= 500);
        }
        if let Some(t) = self.ticket.take() {
            let verdict = if t.breaker().counts_as_failure(status) {
                Verdict::Failed
            } else {
                Verdict::Passed
            };
            t.finish(verdict);
        }
    }

    /// The request failed with `failure` on this side (at `backend`, the last one tried).
    pub(crate) fn failed(
        &mut self,
        failure: &Failure,
        backend: Option<SocketAddr>,
        metrics: &Metrics,
    ) {
        let upstream_failed = matches!(
            failure,
            Failure::Connect { .. }
                | Failure::Timeout
                | Failure::BadUpstream
                | Failure::FailedAnswer(_)
        );
        if upstream_failed && let Some(addr) = backend {
            self.pool.observe(addr, true, metrics);
        }
        // A request the client gave up on says nothing about the side.
        if let Some(m) = self.meter.take()
            && upstream_failed
        {
            m.finish(true);
        }
        if let Some(t) = self.ticket.take() {
            t.finish(if upstream_failed {
                Verdict::Failed
            } else {
                Verdict::Neither
            });
        }
    }
}

/// Before anything is sent: the side that serves a request routed (by route `index`) to
/// `chosen`, or the failure to answer at once.
pub(crate) fn choose(
    table: &RouteTable,
    index: usize,
    chosen: Arc<Pool>,
    method: &Method,
    metrics: &Metrics,
) -> Result<Side, Failure> {
    chosen.budget.deposit();
    let ticket = match table.breaker(index, chosen.name()).map(|b| b.admit()) {
        None => None,
        Some(Ok(ticket)) => Some(ticket),
        Some(Err(refused)) => {
            if let Some(m) = Meter::of(table, index, &chosen) {
                m.refused();
            }
            return fall_back(table, index, &chosen, method, Reason::BreakerOpen, metrics).ok_or(
                Failure::BreakerOpen {
                    retry_after: refused.retry_after,
                },
            );
        }
    };
    let mut meter = Meter::of(table, index, &chosen);
    if !chosen.any_available() {
        if let Some(m) = meter.take() {
            m.refused();
        }
        if let Some(side) = fall_back(table, index, &chosen, method, Reason::NoBackend, metrics) {
            return Ok(side);
        }
    }
    Ok(Side {
        meter,
        pool: chosen,
        ticket,
        fallback: None,
    })
}

/// After `side` failed with `failure` before any byte of its answer reached the client: the
/// fallback that serves the request instead, if the rules above allow one.
pub(crate) fn after_failure(
    table: &RouteTable,
    index: usize,
    side: &Side,
    method: &Method,
    failure: &Failure,
    metrics: &Metrics,
) -> Option<Side> {
    if side.fallback.is_some() {
        return None;
    }
    let reason = match failure {
        Failure::NoBackend => Reason::NoBackend,
        Failure::Connect { .. } => Reason::Connect,
        Failure::Timeout => Reason::Timeout,
        Failure::BadUpstream => Reason::BadUpstream,
        Failure::FailedAnswer(_) => Reason::Status,
        _ => return None,
    };
    // Not taken from the failing side's retry budget: the second attempt goes to the
    // fallback, not to the failing side again (see the module docs).
    fall_back(table, index, &side.pool, method, reason, metrics)
}

/// The statuses of `side`'s answer that are not relayed, because the route's fallback serves
/// the request instead (the answer's head is then dropped unread and the side reports
/// [`Failure::FailedAnswer`]): the statuses its breaker counts as failed, for a request that may
/// still fall back. `None`: every answer is relayed.
pub(crate) fn replaced_statuses<'t>(
    table: &'t RouteTable,
    index: usize,
    side: &Side,
    method: &Method,
) -> Option<&'t [u16]> {
    let route = table.route(index);
    (side.fallback.is_none() && may_fall_back(table, index, &side.pool, method, Reason::Status))
        .then_some(route.breaker.statuses.as_slice())
}

/// Whether a request of `method` on route `index` may leave `from` for the fallback.
fn may_fall_back(
    table: &RouteTable,
    index: usize,
    from: &Pool,
    method: &Method,
    reason: Reason,
) -> bool {
    let route = table.route(index);
    let Some(to) = route.fallback.as_deref() else {
        return false;
    };
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    to != from.name() && (read || (route.fallback_writes && !reason.write_may_have_landed()))
}

fn fall_back(
    table: &RouteTable,
    index: usize,
    from: &Pool,
    method: &Method,
    reason: Reason,
    metrics: &Metrics,
) -> Option<Side> {
    if !may_fall_back(table, index, from, method, reason) {
        return None;
    }
    let route = table.route(index);
    let to = route.fallback.as_deref()?;
    metrics.fallback(&route.id, reason.label());
    let pool = table.pool(to).clone();
    Some(Side {
        meter: Meter::of(table, index, &pool),
        pool,
        ticket: None,
        fallback: Some(reason),
    })
}
