//! Whether a request may go to the same upstream again (another backend, or a new connection
//! after a kept-alive one turned out closed): only within the upstream's retry budget
//! ([`crate::upstream::budget`]), so a failing pool is not hit twice for every request. Which
//! requests may go again at all (nothing of them applied) is
//! [`super::failure::retried_on_connect_failure`]'s to say; this is the budget every such
//! second attempt is taken from, and counted against (`banyan_retries_total{route,result}`).
//! A fallback to another upstream is not such an attempt ([`super::fallback`] says why).

use crate::metrics::Metrics;
use crate::upstream::Pool;

/// Takes one retry of `pool`'s budget for a request of `route`; false (counted as
/// `budget_exhausted`) when it is spent.
pub(crate) fn may_retry(route: &str, pool: &Pool, metrics: &Metrics) -> bool {
    let allowed = pool.budget.withdraw();
    metrics.retry(
        route,
        if allowed {
            "retried"
        } else {
            "budget_exhausted"
        },
    );
    allowed
}
