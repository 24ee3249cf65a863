//! Circuit breakers: one per (route, upstream), so a new service that starts failing stops
//! getting requests within its window, and gets them back only once a few probes pass.
//!
//! A breaker is **closed** while the share of failed requests over its rolling `window` stays
//! under `error_percent` (judged only on at least `min_requests`, so a handful of errors on
//! little traffic cannot open it). Reaching it **opens** the breaker for `reset`: no request is
//! sent to that upstream for that route (the edge falls back or answers 503 at once). Then it
//! is **half-open**: up to `probes` requests go through, one at a time in flight per free slot;
//! all passing close it, any failing opens it again for another `reset`.
//!
//! What counts as a failure is the edge's to say (a connect error, a timeout, a broken answer,
//! or an answer whose status the route lists); a request that never reached the upstream (no
//! backend, the client gone) counts neither way.
//!
//! Breakers live in [`Breakers`], keyed by route id and upstream name, outside any table
//! version: a reload keeps an open breaker open. Editing a route's breaker settings starts that
//! breaker afresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::BreakerSpec;
use crate::metrics::Metrics;

/// The rolling window is kept as this many buckets of `window / BUCKETS` each.
const BUCKETS: usize = 10;

/// What a breaker lets a request do.
pub(crate) type Admission = Result<Ticket, Refused>;

/// The breaker is open: nothing goes to the upstream for this long yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) retry_after: Duration,
}

/// How an admitted request went, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Passed,
    Failed,
    /// It never reached the upstream, or nothing can be said (the client went away).
    Neither,
}

/// A breaker's state, as `/routes` and `banyan_breaker_state` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Closed,
    Open,
    HalfOpen,
}

impl Phase {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::HalfOpen => "half_open",
        }
    }

    /// The value of `banyan_breaker_state`: 0 closed, 1 open, 2 half-open.
    fn gauge(self) -> i64 {
        match self {
            Phase::Closed => 0,
            Phase::Open => 1,
            Phase::HalfOpen => 2,
        }
    }
}

/// One `window / BUCKETS` slice of the window, counted with atomics: a closed breaker (every
/// breaker, nearly always) takes no lock on a request. At the turn of a slice a count racing
/// the reset may be lost; the window is a rate, not a ledger.
#[derive(Debug, Default)]
struct Bucket {
    /// Which slice of time since the breaker's epoch this bucket counts.
    slot: AtomicU64,
    total: AtomicU32,
    failed: AtomicU32,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

fn phase_of(v: u8) -> Phase {
    match v {
        CLOSED => Phase::Closed,
        OPEN => Phase::Open,
        _ => Phase::HalfOpen,
    }
}

/// What changes only with the phase, under the lock.
#[derive(Debug)]
struct State {
    /// When the phase began (wall clock, for operators).
    since: SystemTime,
    /// Open: when it turns half-open.
    open_until: Instant,
    probes_in_flight: u32,
    probes_passed: u32,
}

/// One (route, upstream) breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    route: String,
    upstream: String,
    spec: BreakerSpec,
    epoch: Instant,
    bucket_ms: u64,
    /// The phase, read without the lock; written only under it.
    phase: AtomicU8,
    buckets: [Bucket; BUCKETS],
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

/// What `/routes` shows of a breaker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) phase: Phase,
    pub(crate) since: SystemTime,
    /// Requests and failures counted in the current window.
    pub(crate) requests: u32,
    pub(crate) failures: u32,
}

impl Breaker {
    fn new(route: &str, upstream: &str, spec: BreakerSpec, metrics: Arc<Metrics>) -> Self {
        metrics.breaker_state(route, upstream, Phase::Closed.gauge());
        let bucket_ms = (spec.window.as_millis() as u64 / BUCKETS as u64).max(1);
        Self {
            route: route.to_owned(),
            upstream: upstream.to_owned(),
            spec,
            epoch: Instant::now(),
            bucket_ms,
            phase: AtomicU8::new(CLOSED),
            buckets: Default::default(),
            state: Mutex::new(State {
                since: SystemTime::now(),
                open_until: Instant::now(),
                probes_in_flight: 0,
                probes_passed: 0,
            }),
            metrics,
        }
    }

    pub(crate) fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Whether an upstream answer with this status counts as a failure.
    pub(crate) fn counts_as_failure(&self, status: u16) -> bool {
        self.spec.statuses.contains(&status)
    }

    fn slot(&self, now: Instant) -> u64 {
        now.duration_since(self.epoch).as_millis() as u64 / self.bucket_ms
    }

    /// Requests and failures in the window ending at `now`.
    fn window(&self, now: Instant) -> (u32, u32) {
        let current = self.slot(now);
        self.buckets
            .iter()
            .filter(|b| {
                let slot = b.slot.load(Ordering::Relaxed);
                slot + BUCKETS as u64 > current && slot <= current
            })
            .fold((0, 0), |(t, f), b| {
                (
                    t + b.total.load(Ordering::Relaxed),
                    f + b.failed.load(Ordering::Relaxed),
                )
            })
    }

    /// Asks to send one request to the upstream.
    pub(crate) fn admit(self: &Arc<Self>) -> Admission {
        if self.phase.load(Ordering::Acquire) == CLOSED {
            return Ok(Ticket {
                breaker: self.clone(),
                probe: false,
                done: false,
            });
        }
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        match self.phase.load(Ordering::Acquire) {
            CLOSED => {
                return Ok(Ticket {
                    breaker: self.clone(),
                    probe: false,
                    done: false,
                });
            }
            OPEN if now < state.open_until => {
                return Err(Refused {
                    retry_after: state.open_until - now,
                });
            }
            OPEN => self.enter(&mut state, Phase::HalfOpen, now),
            _ => {}
        }
        if state.probes_in_flight + state.probes_passed >= self.spec.probes {
            // Every probe slot is taken: the others wait for their verdicts.
            return Err(Refused {
                retry_after: Duration::from_secs(1),
            });
        }
        state.probes_in_flight += 1;
        Ok(Ticket {
            breaker: self.clone(),
            probe: true,
            done: false,
        })
    }

    fn record(&self, probe: bool, verdict: Verdict) {
        if probe {
            self.record_probe(verdict);
            return;
        }
        if verdict == Verdict::Neither || self.phase.load(Ordering::Relaxed) != CLOSED {
            return;
        }
        let now = Instant::now();
        let slot = self.slot(now);
        let bucket = &self.buckets[slot as usize % BUCKETS];
        let seen = bucket.slot.load(Ordering::Relaxed);
        if seen != slot
            && bucket
                .slot
                .compare_exchange(seen, slot, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            bucket.total.store(0, Ordering::Relaxed);
            bucket.failed.store(0, Ordering::Relaxed);
        }
        bucket.total.fetch_add(1, Ordering::Relaxed);
        if verdict != Verdict::Failed {
            return;
        }
        bucket.failed.fetch_add(1, Ordering::Relaxed);
        let (total, failed) = self.window(now);
        if total >= self.spec.min_requests
            && f64::from(failed) * 100.0 >= self.spec.error_percent * f64::from(total)
        {
            let mut state = self.state.lock().unwrap();
            if self.phase.load(Ordering::Acquire) != CLOSED {
                return;
            }
            tracing::warn!(
                route = %self.route,
                upstream = %self.upstream,
                requests = total,
                failures = failed,
                window_ms = self.spec.window.as_millis() as u64,
                "circuit breaker opened: no requests to this upstream for this route until it recovers"
            );
            self.enter(&mut state, Phase::Open, now);
        }
    }

    fn record_probe(&self, verdict: Verdict) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        state.probes_in_flight = state.probes_in_flight.saturating_sub(1);
        if self.phase.load(Ordering::Acquire) != HALF_OPEN {
            return;
        }
        match verdict {
            Verdict::Failed => self.enter(&mut state, Phase::Open, now),
            Verdict::Passed => {
                state.probes_passed += 1;
                if state.probes_passed >= self.spec.probes {
                    self.enter(&mut state, Phase::Closed, now);
                }
            }
            Verdict::Neither => {}
        }
    }

    /// Moves to `phase`, under the lock (one log line and the gauge for every change but the
    /// opening, which the caller logs with its figures).
    fn enter(&self, state: &mut State, phase: Phase, now: Instant) {
        let from = phase_of(self.phase.load(Ordering::Acquire));
        state.since = SystemTime::now();
        state.probes_in_flight = 0;
        state.probes_passed = 0;
        match phase {
            Phase::Open => state.open_until = now + self.spec.reset,
            Phase::Closed => {
                for b in &self.buckets {
                    b.total.store(0, Ordering::Relaxed);
                    b.failed.store(0, Ordering::Relaxed);
                }
            }
            Phase::HalfOpen => {}
        }
        let value = match phase {
            Phase::Closed => CLOSED,
            Phase::Open => OPEN,
            Phase::HalfOpen => HALF_OPEN,
        };
        self.phase.store(value, Ordering::Release);
        self.metrics
            .breaker_state(&self.route, &self.upstream, phase.gauge());
        if !(from == Phase::Closed && phase == Phase::Open) {
            tracing::warn!(
                route = %self.route,
                upstream = %self.upstream,
                from = from.label(),
                to = phase.label(),
                "circuit breaker changed state"
            );
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = self.state.lock().unwrap();
        let (requests, failures) = self.window(Instant::now());
        Snapshot {
            phase: phase_of(self.phase.load(Ordering::Acquire)),
            since: state.since,
            requests,
            failures,
        }
    }
}

/// One admitted request. Dropped without a verdict (the request ended some other way), it
/// counts neither way and frees its probe slot.
#[derive(Debug)]
pub(crate) struct Ticket {
    breaker: Arc<Breaker>,
    probe: bool,
    done: bool,
}

impl Ticket {
    pub(crate) fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub(crate) fn finish(mut self, verdict: Verdict) {
        self.done = true;
        self.breaker.record(self.probe, verdict);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.record(self.probe, Verdict::Neither);
        }
    }
}

/// Every breaker, by route id and upstream name, across table versions.
#[derive(Debug)]
pub(crate) struct Breakers {
    all: Mutex<HashMap<(String, String), Arc<Breaker>>>,
    metrics: Arc<Metrics>,
}

impl Breakers {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            all: Mutex::default(),
            metrics,
        }
    }

    /// The breaker of `upstream` for `route` under `spec`: the one already running when its
    /// settings are unchanged, else a new, closed one.
    pub(crate) fn get(&self, route: &str, upstream: &str, spec: &BreakerSpec) -> Arc<Breaker> {
        let mut all = self.all.lock().unwrap();
        let key = (route.to_owned(), upstream.to_owned());
        match all.get(&key) {
            Some(b) if b.spec == *spec => b.clone(),
            _ => {
                let b = Arc::new(Breaker::new(
                    route,
                    upstream,
                    spec.clone(),
                    self.metrics.clone(),
                ));
                all.insert(key, b.clone());
                b
            }
        }
    }

    /// Forgets the breakers no route uses any more (after a reload), and their gauges.
    pub(crate) fn retain(&self, in_use: &[(String, String)]) {
        self.all.lock().unwrap().retain(|key, b| {
            let keep = in_use.contains(key);
            if !keep {
                self.metrics.forget_breaker(&b.route, &b.upstream);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(spec: BreakerSpec) -> Arc<Breaker> {
        Breakers::new(Arc::new(Metrics::new())).get("r", "u", &spec)
    }

    fn spec() -> BreakerSpec {
        BreakerSpec {
            min_requests: 10,
            error_percent: 50.0,
            probes: 2,
            reset: Duration::from_millis(50),
            ..BreakerSpec::default()
        }
    }

    fn run(b: &Arc<Breaker>, verdict: Verdict, n: usize) {
        for _ in 0..n {
            b.admit().expect("admitted").finish(verdict);
        }
    }

    #[test]
    fn opens_at_the_error_share_only_on_enough_requests() {
        let b = breaker(spec());
        run(&b, Verdict::Failed, 9);
        assert_eq!(b.snapshot().phase, Phase::Closed, "9 requests are too few");
        run(&b, Verdict::Passed, 1);
        assert_eq!(b.snapshot().phase, Phase::Closed, "a pass never opens it");
        run(&b, Verdict::Failed, 1);
        assert_eq!(b.snapshot().phase, Phase::Open);
        let refused = b.admit().unwrap_err();
        assert!(refused.retry_after <= Duration::from_millis(50));
    }

    #[test]
    fn stays_closed_under_the_error_share() {
        let b = breaker(spec());
        for _ in 0..50 {
            run(&b, Verdict::Passed, 2);
            run(&b, Verdict::Failed, 1);
        }
        assert_eq!(b.snapshot().phase, Phase::Closed);
        assert_eq!(b.snapshot().requests, 150);
        assert_eq!(b.snapshot().failures, 50);
    }

    #[test]
    fn half_open_probes_close_it_or_open_it_again() {
        let b = breaker(spec());
        run(&b, Verdict::Failed, 10);
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(60));
        // Two probe slots: a third request waits.
        let p1 = b.admit().unwrap();
        let p2 = b.admit().unwrap();
        assert_eq!(b.snapshot().phase, Phase::HalfOpen);
        assert!(b.admit().is_err());
        p1.finish(Verdict::Passed);
        p2.finish(Verdict::Failed);
        assert_eq!(b.snapshot().phase, Phase::Open, "a failed probe reopens it");
        std::thread::sleep(Duration::from_millis(60));
        run(&b, Verdict::Passed, 2);
        assert_eq!(b.snapshot().phase, Phase::Closed);
        assert_eq!(b.snapshot().requests, 0, "closing starts a fresh window");
    }

    #[test]
    fn a_probe_that_ends_without_a_verdict_frees_its_slot() {
        let b = breaker(BreakerSpec {
            probes: 1,
            ..spec()
        });
        run(&b, Verdict::Failed, 10);
        std::thread::sleep(Duration::from_millis(60));
        drop(b.admit().unwrap());
        run(&b, Verdict::Passed, 1);
        assert_eq!(b.snapshot().phase, Phase::Closed);
    }

    #[test]
    fn requests_that_never_reached_the_upstream_do_not_count() {
        let b = breaker(spec());
        run(&b, Verdict::Neither, 100);
        assert_eq!(b.snapshot().requests, 0);
    }

    #[test]
    fn a_reload_keeps_a_breaker_and_new_settings_restart_it() {
        let breakers = Breakers::new(Arc::new(Metrics::new()));
        let b = breakers.get("r", "u", &spec());
        run(&b, Verdict::Failed, 10);
        assert_eq!(
            breakers.get("r", "u", &spec()).snapshot().phase,
            Phase::Open
        );
        let edited = BreakerSpec {
            min_requests: 11,
            ..spec()
        };
        assert_eq!(
            breakers.get("r", "u", &edited).snapshot().phase,
            Phase::Closed
        );
    }
}
