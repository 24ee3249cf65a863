//! The verdict of one rollout gate on the traffic a step has seen: pass, fail, or
//! inconclusive — and the figures it was judged on, for `banyan status` and the history.
//!
//! Every gate is a test on a proportion, so one rule decides all of them:
//! - below its sample minimum a gate is **inconclusive**: a step never advances, and never
//!   aborts, on missing data;
//! - it **fails** only when the data show, at 95 % one-sided confidence, that the new side is
//!   worse than the allowance: a few errors on little traffic do not abort a step by chance;
//! - it **passes** when its point estimate is within the allowance;
//! - otherwise (worse than allowed, but not significantly yet) it is inconclusive, and the
//!   step holds while traffic accumulates, until the evidence decides either way.
//!
//! The tests:
//! - error rate, new against old side: a two-proportion z-test on the difference, with
//!   Agresti and Caffo's adjustment (one error and one success added to each side), which
//!   keeps its coverage at the small error counts a healthy service has;
//! - latency: the new side's requests slower than `max_p99_ratio` times the old side's p99 are
//!   counted; a p99 within the ratio means at most 1 % of them are, tested with the Wilson
//!   score bound (a quantile compared through a proportion, so the same rule applies);
//! - shadow: mismatches (noise excluded) among comparisons, against `max_mismatch_percent`,
//!   with the Wilson score bound.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One-sided 95 % normal quantile.
const Z: f64 = 1.644_853_626_951_472_2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }

    /// The verdict of a step: any gate failed -> failed; else any inconclusive -> holds.
    pub(crate) fn of_all(gates: &[Judged]) -> Verdict {
        if gates.iter().any(|g| g.verdict == Verdict::Fail) {
            Verdict::Fail
        } else if gates.iter().any(|g| g.verdict == Verdict::Inconclusive) {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        }
    }
}

/// Which gate judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Gate {
    ErrorRate,
    Latency,
    Shadow,
    /// A write route's read route has migrated ([`after`]).
    After,
}

impl Gate {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Gate::ErrorRate => "error_rate",
            Gate::Latency => "latency",
            Gate::Shadow => "shadow",
            Gate::After => "after",
        }
    }
}

/// A gate's verdict with the figures behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Judged {
    pub(crate) gate: Gate,
    pub(crate) verdict: Verdict,
    /// What was seen, in the gate's unit (percentage points, a ratio).
    pub(crate) observed: f64,
    /// What the gate allows, in the same unit.
    pub(crate) allowed: f64,
    /// The sample the verdict rests on (requests or comparisons) and the least it needs.
    pub(crate) sample: u64,
    pub(crate) min_sample: u64,
    /// Why, in words: for the status line and the history.
    pub(crate) reason: String,
}

impl fmt::Display for Judged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.gate.label(),
            self.verdict.label(),
            self.reason
        )
    }
}

/// Requests seen by one side during a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counts {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
}

impl Counts {
    fn percent(self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            100.0 * self.errors as f64 / self.requests as f64
        }
    }
}

/// Error rate of the new side at most `max_delta` percentage points above the old side's.
pub(crate) fn error_rate(new: Counts, old: Counts, max_delta: f64, min_requests: u64) -> Judged {
    let sample = new.requests.min(old.requests);
    let observed = new.percent() - old.percent();
    let judged = |verdict, reason: String| Judged {
        gate: Gate::ErrorRate,
        verdict,
        observed,
        allowed: max_delta,
        sample,
        min_sample: min_requests,
        reason,
    };
    if sample < min_requests {
        return judged(
            Verdict::Inconclusive,
            format!(
                "{} requests on the new side and {} on the old, {min_requests} needed on each",
                new.requests, old.requests
            ),
        );
    }
    let figures = format!(
        "new {:.2} % of {}, old {:.2} % of {}",
        new.percent(),
        new.requests,
        old.percent(),
        old.requests
    );
    let adjusted = |c: Counts| (c.errors as f64 + 1.0) / (c.requests as f64 + 2.0);
    let (a, b) = (adjusted(new), adjusted(old));
    let se = (a * (1.0 - a) / (new.requests as f64 + 2.0)
        + b * (1.0 - b) / (old.requests as f64 + 2.0))
        .sqrt();
    let lower = 100.0 * (a - b - Z * se);
    if lower > max_delta {
        judged(
            Verdict::Fail,
            format!(
                "{figures}: worse by {observed:.2} points (at least {lower:.2} at 95 %), {max_delta} allowed"
            ),
        )
    } else if observed <= max_delta {
        judged(
            Verdict::Pass,
            format!("{figures}: {observed:+.2} points, {max_delta} allowed"),
        )
    } else {
        judged(
            Verdict::Inconclusive,
            format!(
                "{figures}: {observed:+.2} points, {max_delta} allowed, not yet significant; holding for more traffic"
            ),
        )
    }
}

/// Wilson score lower bound (one-sided 95 %) of a proportion of `k` in `n`, in percent.
fn wilson_lower(k: u64, n: u64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = Z * Z;
    let center = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    100.0 * (center - half).max(0.0)
}

/// A share of `k` in `n` at most `limit_percent`, on at least `min_sample`.
fn share(
    k: u64,
    n: u64,
    limit_percent: f64,
    min_sample: u64,
    what: &str,
) -> (Verdict, f64, String) {
    let observed = if n == 0 {
        0.0
    } else {
        100.0 * k as f64 / n as f64
    };
    if n < min_sample {
        return (
            Verdict::Inconclusive,
            observed,
            format!("{n} {what}, {min_sample} needed"),
        );
    }
    let lower = wilson_lower(k, n);
    let figures = format!("{k} of {n} {what} ({observed:.3} %), {limit_percent} % allowed");
    if lower > limit_percent {
        (
            Verdict::Fail,
            observed,
            format!("{figures}; at least {lower:.3} % at 95 %"),
        )
    } else if observed <= limit_percent {
        (Verdict::Pass, observed, figures)
    } else {
        (
            Verdict::Inconclusive,
            observed,
            format!("{figures}; not yet significant, holding for more"),
        )
    }
}

/// A write route moves only once its read route (`route`) has migrated: a pass once it has,
/// inconclusive (holding) until then, never a failure. `now` says where the read route is.
pub(crate) fn after(route: &str, migrated: bool, now: &str) -> Judged {
    Judged {
        gate: Gate::After,
        verdict: if migrated {
            Verdict::Pass
        } else {
            Verdict::Inconclusive
        },
        observed: 0.0,
        allowed: 0.0,
        sample: 0,
        min_sample: 0,
        reason: if migrated {
            format!("read route {route} has migrated")
        } else {
            format!("waiting for read route {route} to migrate (it is {now})")
        },
    }
}

/// Shadow mismatches (noise excluded) at most `max_percent` of `compared`.
pub(crate) fn mismatches(
    mismatched: u64,
    compared: u64,
    max_percent: f64,
    min_compared: u64,
) -> Judged {
    let (verdict, observed, reason) = share(
        mismatched,
        compared,
        max_percent,
        min_compared,
        "comparisons differed",
    );
    Judged {
        gate: Gate::Shadow,
        verdict,
        observed,
        allowed: max_percent,
        sample: compared,
        min_sample: min_compared,
        reason,
    }
}

/// The new side's p99 at most `max_ratio` times the old side's: `slower` of the new side's
/// `requests` took longer than `max_ratio` x the old side's p99 (`old_p99_ms`, from at least
/// `min_requests` of its own), which a p99 within the ratio keeps at 1 % or less.
pub(crate) fn latency(
    new_p99_ms: f64,
    old_p99_ms: f64,
    slower: u64,
    new_requests: u64,
    old_requests: u64,
    max_ratio: f64,
    min_requests: u64,
) -> Judged {
    let observed = if old_p99_ms > 0.0 {
        new_p99_ms / old_p99_ms
    } else {
        0.0
    };
    let sample = new_requests.min(old_requests);
    let (verdict, _, detail) = share(
        slower,
        new_requests,
        1.0,
        min_requests,
        "new-side requests over the bound",
    );
    let verdict = if old_requests < min_requests {
        Verdict::Inconclusive
    } else {
        verdict
    };
    Judged {
        gate: Gate::Latency,
        verdict,
        observed,
        allowed: max_ratio,
        sample,
        min_sample: min_requests,
        reason: format!(
            "p99 new {new_p99_ms:.2} ms, old {old_p99_ms:.2} ms ({observed:.2}x, {max_ratio}x allowed; \
             old side {old_requests} requests); {detail}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(requests: u64, errors: u64) -> Counts {
        Counts { requests, errors }
    }

    #[test]
    fn below_the_minimum_nothing_is_decided() {
        // Even 5 errors in 10 requests: too little traffic to judge.
        let j = error_rate(c(10, 5), c(10, 0), 0.5, 200);
        assert_eq!(j.verdict, Verdict::Inconclusive, "{j}");
        assert!(j.reason.contains("200 needed"), "{j}");
        let j = error_rate(c(10, 0), c(10, 0), 0.5, 200);
        assert_eq!(j.verdict, Verdict::Inconclusive, "{j}");
    }

    #[test]
    fn a_healthy_new_side_passes_at_the_minimum() {
        let j = error_rate(c(200, 0), c(4000, 2), 0.5, 200);
        assert_eq!(j.verdict, Verdict::Pass, "{j}");
        // One error in 200 is within the half point allowed? 0.5 points exactly: passes.
        let j = error_rate(c(200, 1), c(4000, 0), 0.5, 200);
        assert_eq!(j.verdict, Verdict::Pass, "{j}");
    }

    #[test]
    fn a_few_errors_hold_the_step_rather_than_abort_it() {
        // 2 of 200 (1 %) against 0: worse than allowed, but not significantly.
        let j = error_rate(c(200, 2), c(4000, 0), 0.5, 200);
        assert_eq!(j.verdict, Verdict::Inconclusive, "{j}");
        assert!(j.reason.contains("not yet significant"), "{j}");
    }

    #[test]
    fn three_percent_of_errors_fail_once_the_traffic_shows_it() {
        let j = error_rate(c(400, 12), c(8000, 0), 0.5, 200);
        assert_eq!(j.verdict, Verdict::Fail, "{j}");
        assert!((j.observed - 3.0).abs() < 1e-9, "{j}");
    }

    /// The test's promise, checked by simulation with a fixed seed: a new side as good as the
    /// old fails a step far less than 5 % of the time, and one with 3 % errors (against 0.1 %)
    /// passes a step of 400 requests almost never.
    #[test]
    fn chance_rarely_decides() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut draw = |n: u64, p: f64| (0..n).filter(|_| rng.r#gen::<f64>() < p).count() as u64;
        let (mut false_fail, mut false_pass) = (0, 0);
        const STEPS: usize = 500;
        for _ in 0..STEPS {
            let (new, old) = (draw(400, 0.004), draw(2000, 0.004));
            if error_rate(c(400, new), c(2000, old), 0.5, 200).verdict == Verdict::Fail {
                false_fail += 1;
            }
            let (new, old) = (draw(400, 0.03), draw(2000, 0.001));
            if error_rate(c(400, new), c(2000, old), 0.5, 200).verdict == Verdict::Pass {
                false_pass += 1;
            }
        }
        eprintln!("{false_fail} healthy steps failed, {false_pass} bad steps passed, of {STEPS}");
        assert!(
            false_fail < STEPS / 20,
            "{false_fail} of {STEPS} healthy steps failed"
        );
        assert!(
            false_pass < STEPS / 100,
            "{false_pass} of {STEPS} bad steps passed"
        );
    }

    #[test]
    fn shadow_mismatches_are_judged_the_same_way() {
        assert_eq!(mismatches(0, 50, 0.1, 100).verdict, Verdict::Inconclusive);
        assert_eq!(mismatches(0, 1000, 0.1, 100).verdict, Verdict::Pass);
        assert_eq!(mismatches(1, 1000, 0.1, 100).verdict, Verdict::Pass);
        // 2 in 1000 is over 0.1 % but could be chance; 20 in 1000 is not.
        assert_eq!(mismatches(2, 1000, 0.1, 100).verdict, Verdict::Inconclusive);
        let j = mismatches(20, 1000, 0.1, 100);
        assert_eq!(j.verdict, Verdict::Fail, "{j}");
    }

    #[test]
    fn a_slower_new_side_fails_on_latency() {
        // Twice as slow: most new-side requests exceed 1.2x the old p99.
        let j = latency(40.0, 20.0, 300, 400, 4000, 1.2, 200);
        assert_eq!(j.verdict, Verdict::Fail, "{j}");
        assert!((j.observed - 2.0).abs() < 1e-9);
        let j = latency(19.0, 20.0, 2, 400, 4000, 1.2, 200);
        assert_eq!(j.verdict, Verdict::Pass, "{j}");
        // The old side's p99 from too few requests decides nothing.
        let j = latency(40.0, 20.0, 300, 400, 100, 1.2, 200);
        assert_eq!(j.verdict, Verdict::Inconclusive, "{j}");
    }

    #[test]
    fn a_step_is_as_good_as_its_worst_gate() {
        let pass = error_rate(c(200, 0), c(200, 0), 0.5, 200);
        let hold = mismatches(0, 5, 0.1, 100);
        let fail = mismatches(50, 1000, 0.1, 100);
        assert_eq!(Verdict::of_all(std::slice::from_ref(&pass)), Verdict::Pass);
        assert_eq!(
            Verdict::of_all(&[pass.clone(), hold.clone()]),
            Verdict::Inconclusive
        );
        assert_eq!(Verdict::of_all(&[pass, hold, fail]), Verdict::Fail);
    }
}
