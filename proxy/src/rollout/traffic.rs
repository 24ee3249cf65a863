//! What one side of a rolling-out route served, recorded on every request, and how a step is
//! judged from it: the gates ([`super::gate`]) applied to what each side served since the step
//! began.
//!
//! Recording is three relaxed atomic adds (requests, errors when it failed, one latency
//! bucket); judging reads two snapshots and subtracts, so no counter is ever reset under
//! requests still recording.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::gate::{self, Counts, Judged};
use super::latency::{self, Latencies};

#[derive(Debug, Default)]
pub(crate) struct Side {
    requests: AtomicU64,
    errors: AtomicU64,
    latencies: Latencies,
}

/// A side's counts at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Seen {
    pub(crate) counts: Counts,
    pub(crate) latencies: latency::Snapshot,
}

impl Side {
    /// One request this side served (or failed: a 5xx, a timeout, a refused connection).
    pub(crate) fn record(&self, failed: bool, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latencies.record(took);
    }

    /// One request this side could not be asked at all (its breaker open, no backend in
    /// rotation): a failure, with no latency to add (an answer at once is not a fast side).
    pub(crate) fn refused(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn seen(&self) -> Seen {
        Seen {
            counts: Counts {
                requests: self.requests.load(Ordering::Relaxed),
                errors: self.errors.load(Ordering::Relaxed),
            },
            latencies: self.latencies.snapshot(),
        }
    }
}

impl Seen {
    /// The two together (the same side as seen by two proxies).
    pub(crate) fn plus(&self, other: &Seen) -> Seen {
        Seen {
            counts: Counts {
                requests: self.counts.requests + other.counts.requests,
                errors: self.counts.errors + other.counts.errors,
            },
            latencies: self.latencies.plus(&other.latencies),
        }
    }

    /// What happened after `earlier`.
    pub(crate) fn since(&self, earlier: &Seen) -> Seen {
        Seen {
            counts: Counts {
                requests: self.counts.requests.saturating_sub(earlier.counts.requests),
                errors: self.counts.errors.saturating_sub(earlier.counts.errors),
            },
            latencies: self.latencies.since(&earlier.latencies),
        }
    }
}

/// The allowances a step is judged against (the route's `[route.rollout]` gates).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gates {
    pub(crate) min_requests: u64,
    /// Percentage points.
    pub(crate) max_error_delta: f64,
    pub(crate) max_p99_ratio: f64,
    /// Percent.
    pub(crate) max_mismatch_percent: f64,
    pub(crate) min_compared: u64,
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            min_requests: 200,
            max_error_delta: 0.5,
            max_p99_ratio: 1.2,
            max_mismatch_percent: 0.1,
            min_compared: 200,
        }
    }
}

/// Shadow comparisons since the step began (noise-only differences are not mismatches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Compared {
    pub(crate) compared: u64,
    pub(crate) mismatched: u64,
}

/// The gates of a step on what the new and the old side served during it. A step without live
/// traffic on the new side (step 0, shadow only) is judged on the shadow alone; the shadow
/// gate applies whenever the route shadows (`shadow` is `Some`).
pub(crate) fn judge(
    gates: &Gates,
    new: &Seen,
    old: &Seen,
    live: bool,
    shadow: Option<Compared>,
) -> Vec<Judged> {
    let mut out = Vec::with_capacity(3);
    if live {
        out.push(gate::error_rate(
            new.counts,
            old.counts,
            gates.max_error_delta,
            gates.min_requests,
        ));
        let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let old_p99 = old.latencies.quantile(0.99);
        let bound = old_p99.map(|p| p.mul_f64(gates.max_p99_ratio));
        out.push(gate::latency(
            ms(new.latencies.quantile(0.99)),
            ms(old_p99),
            bound.map_or(0, |b| new.latencies.slower_than(b)),
            new.latencies.total(),
            old.latencies.total(),
            gates.max_p99_ratio,
            gates.min_requests,
        ));
    }
    if let Some(s) = shadow {
        out.push(gate::mismatches(
            s.mismatched,
            s.compared,
            gates.max_mismatch_percent,
            gates.min_compared,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::gate::{Gate, Verdict};
    use super::*;

    fn serve(side: &Side, n: u64, failing_every: Option<u64>, took: Duration) {
        for i in 0..n {
            side.record(failing_every.is_some_and(|k| i % k == 0), took);
        }
    }

    fn verdicts(j: &[Judged]) -> Vec<(Gate, Verdict)> {
        j.iter().map(|g| (g.gate, g.verdict)).collect()
    }

    #[test]
    fn a_step_is_judged_on_its_own_traffic_only() {
        let (new, old) = (Side::default(), Side::default());
        // Before the step: the new side failed a lot. It does not count against this step.
        serve(&new, 100, Some(2), Duration::from_millis(90));
        let (new_start, old_start) = (new.seen(), old.seen());
        serve(&new, 300, None, Duration::from_millis(10));
        serve(&old, 3000, None, Duration::from_millis(10));
        let j = judge(
            &Gates::default(),
            &new.seen().since(&new_start),
            &old.seen().since(&old_start),
            true,
            None,
        );
        assert_eq!(
            verdicts(&j),
            [
                (Gate::ErrorRate, Verdict::Pass),
                (Gate::Latency, Verdict::Pass)
            ],
            "{j:?}"
        );
    }

    #[test]
    fn errors_slowness_and_mismatches_each_fail_their_gate() {
        let (new, old) = (Side::default(), Side::default());
        serve(&new, 600, Some(33), Duration::from_millis(20)); // 3 % errors, twice as slow
        serve(&old, 6000, None, Duration::from_millis(10));
        let shadow = Compared {
            compared: 1000,
            mismatched: 30,
        };
        let j = judge(
            &Gates::default(),
            &new.seen(),
            &old.seen(),
            true,
            Some(shadow),
        );
        assert_eq!(
            verdicts(&j),
            [
                (Gate::ErrorRate, Verdict::Fail),
                (Gate::Latency, Verdict::Fail),
                (Gate::Shadow, Verdict::Fail)
            ],
            "{j:?}"
        );
    }

    #[test]
    fn shadow_only_steps_are_judged_on_the_shadow_and_low_traffic_holds() {
        let (new, old) = (Side::default(), Side::default());
        let j = judge(
            &Gates::default(),
            &new.seen(),
            &old.seen(),
            false,
            Some(Compared {
                compared: 10,
                mismatched: 0,
            }),
        );
        assert_eq!(verdicts(&j), [(Gate::Shadow, Verdict::Inconclusive)]);
        serve(&new, 10, None, Duration::from_millis(1));
        serve(&old, 10, None, Duration::from_millis(1));
        let j = judge(&Gates::default(), &new.seen(), &old.seen(), true, None);
        assert!(
            j.iter().all(|g| g.verdict == Verdict::Inconclusive),
            "{j:?}"
        );
    }
}
