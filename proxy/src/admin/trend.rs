//! Traffic over time, for `GET /status` and the dashboard: what each side of each route served
//! in the last minute (requests/s, error rate, p50 and p99), the extracted services' share of
//! the last five minutes, and per minute over the last hour.
//!
//! The counters Prometheus scrapes only grow; a rate is the difference of two readings. So a
//! sampler reads them every [`FINE`] (keeping five minutes of readings) and every [`COARSE`]
//! (keeping an hour), and a window is "now minus the reading that long ago". Nothing is added
//! to the request path: the readings are the registry's own counters and latency histograms
//! (`banyan_requests_total`, `banyan_request_duration_seconds`). Quantiles come from the
//! histogram's buckets (linear inside the bucket, as Prometheus's `histogram_quantile`), so
//! they are as fine as its bucket bounds.
//!
//! Memory is bounded: at 200 routes with two sides, an hour of readings is about 300 KiB.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::metrics::Metrics;

/// How often the fine readings are taken, and how many are kept (five minutes).
pub(crate) const FINE: Duration = Duration::from_secs(5);
const FINE_KEPT: usize = 61;
/// How often the coarse readings are taken, and how many are kept (an hour).
const COARSE: Duration = Duration::from_secs(60);
const COARSE_KEPT: usize = 61;

/// One side's counters at a reading: requests, failed (5xx) requests, and the latency
/// histogram's cumulative bucket counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counters {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) buckets: Vec<(f64, u64)>,
}

/// A reading of every (route, upstream).
#[derive(Debug, Clone, Default)]
pub(crate) struct Reading {
    pub(crate) at_ms: i64,
    pub(crate) sides: BTreeMap<(String, String), Counters>,
}

impl Reading {
    /// The registry's counters now.
    pub(crate) fn take(metrics: &Metrics, at_ms: i64) -> Reading {
        let mut sides: BTreeMap<(String, String), Counters> = BTreeMap::new();
        for family in metrics.gather() {
            let requests = family.name() == "banyan_requests_total";
            let latency = family.name() == "banyan_request_duration_seconds";
            if !requests && !latency {
                continue;
            }
            for m in family.get_metric() {
                let label = |n: &str| crate::metrics::label(m, n);
                let side = sides
                    .entry((label("route"), label("upstream")))
                    .or_default();
                if requests {
                    let n = m.get_counter().get_value() as u64;
                    side.requests += n;
                    if label("class") == "5xx" {
                        side.errors += n;
                    }
                } else {
                    let h = m.get_histogram();
                    side.buckets = h
                        .get_bucket()
                        .iter()
                        .map(|b| (b.upper_bound(), b.cumulative_count()))
                        .collect();
                    side.buckets.push((f64::INFINITY, h.get_sample_count()));
                }
            }
        }
        Reading { at_ms, sides }
    }
}

/// What one side served between two readings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Window {
    pub(crate) requests: u64,
    pub(crate) requests_per_second: f64,
    /// Share of the requests answered 5xx, in percent; `None` without requests.
    pub(crate) error_percent: Option<f64>,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
}

fn window(now: &Counters, then: Option<&Counters>, seconds: f64) -> Window {
    let zero = Counters::default();
    let then = then.unwrap_or(&zero);
    let requests = now.requests.saturating_sub(then.requests);
    let errors = now.errors.saturating_sub(then.errors);
    let buckets: Vec<(f64, u64)> = now
        .buckets
        .iter()
        .map(|&(le, n)| {
            let before = then
                .buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0, |&(_, c)| c);
            (le, n.saturating_sub(before))
        })
        .collect();
    Window {
        requests,
        requests_per_second: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        error_percent: (requests > 0).then(|| 100.0 * errors as f64 / requests as f64),
        p50_ms: quantile(&buckets, 0.5).map(|s| s * 1000.0),
        p99_ms: quantile(&buckets, 0.99).map(|s| s * 1000.0),
    }
}

/// The `q` quantile of a cumulative histogram, interpolated inside its bucket; in the last
/// finite bound's units when it falls in the `+Inf` bucket.
pub(crate) fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(le, n) in buckets {
        if n as f64 >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = (n - below) as f64;
            let frac = if inside > 0.0 {
                (rank - below as f64) / inside
            } else {
                1.0
            };
            return Some(lower + (le - lower) * frac);
        }
        lower = le;
        below = n;
    }
    Some(lower)
}

/// The readings kept.
#[derive(Debug, Default)]
pub(crate) struct Trend {
    inner: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    first: Option<Reading>,
    fine: VecDeque<Reading>,
    coarse: VecDeque<Reading>,
}

/// A route's extracted share in one minute of the last hour.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Point {
    pub(crate) at_ms: i64,
    pub(crate) requests: u64,
    /// Percent of the route's requests served by extracted services; `None` without requests.
    pub(crate) extracted_percent: Option<f64>,
    /// p99 per upstream, in ms.
    pub(crate) p99_ms: BTreeMap<String, f64>,
}

impl Trend {
    /// Keeps `reading` (taken every [`FINE`]).
    pub(crate) fn keep(&self, reading: Reading) {
        let mut k = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if k.first.is_none() {
            k.first = Some(reading.clone());
        }
        let coarse_due = k
            .coarse
            .back()
            .is_none_or(|c| reading.at_ms - c.at_ms >= COARSE.as_millis() as i64);
        if coarse_due {
            k.coarse.push_back(reading.clone());
            if k.coarse.len() > COARSE_KEPT {
                k.coarse.pop_front();
            }
        }
        k.fine.push_back(reading);
        if k.fine.len() > FINE_KEPT {
            k.fine.pop_front();
        }
    }

    /// The newest kept reading at least `age` older than `now` (else the oldest kept one).
    fn back(&self, now: &Reading, age: Duration) -> Option<Reading> {
        let k = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let limit = now.at_ms - age.as_millis() as i64;
        k.fine
            .iter()
            .rev()
            .find(|r| r.at_ms <= limit)
            .or_else(|| k.fine.front())
            .cloned()
    }

    /// Each side's traffic over the last `age` (or since the oldest reading), by (route,
    /// upstream).
    pub(crate) fn windows(
        &self,
        now: &Reading,
        age: Duration,
    ) -> BTreeMap<(String, String), Window> {
        let then = self.back(now, age);
        let seconds = then
            .as_ref()
            .map_or(0.0, |t| (now.at_ms - t.at_ms) as f64 / 1000.0);
        now.sides
            .iter()
            .map(|(key, c)| {
                let before = then.as_ref().and_then(|t| t.sides.get(key));
                (key.clone(), window(c, before, seconds))
            })
            .collect()
    }

    /// Requests served by upstreams `extracted` calls extracted, and all requests, over the
    /// last `age`.
    pub(crate) fn share(
        &self,
        now: &Reading,
        age: Duration,
        extracted: impl Fn(&str) -> bool,
    ) -> (u64, u64) {
        let then = self.back(now, age);
        let (mut served, mut total) = (0, 0);
        for (key, c) in &now.sides {
            let before = then
                .as_ref()
                .and_then(|t| t.sides.get(key))
                .map_or(0, |b| b.requests);
            let n = c.requests.saturating_sub(before);
            total += n;
            if extracted(&key.1) {
                served += n;
            }
        }
        (served, total)
    }

    /// Per route, one point per minute of the last hour, the last one up to `now`.
    pub(crate) fn series(
        &self,
        now: &Reading,
        extracted: impl Fn(&str) -> bool,
    ) -> BTreeMap<String, Vec<Point>> {
        let k = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut readings: Vec<&Reading> = k.coarse.iter().collect();
        readings.push(now);
        let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
        for pair in readings.windows(2) {
            let (then, at) = (pair[0], pair[1]);
            let seconds = (at.at_ms - then.at_ms) as f64 / 1000.0;
            if seconds <= 0.0 {
                continue;
            }
            let mut by_route: BTreeMap<&str, Point> = BTreeMap::new();
            for ((route, upstream), c) in &at.sides {
                let w = window(
                    c,
                    then.sides.get(&(route.clone(), upstream.clone())),
                    seconds,
                );
                let p = by_route.entry(route).or_insert(Point {
                    at_ms: at.at_ms,
                    requests: 0,
                    extracted_percent: Some(0.0),
                    p99_ms: BTreeMap::new(),
                });
                let served = p.extracted_percent.unwrap_or(0.0) * p.requests as f64 / 100.0
                    + if extracted(upstream) {
                        w.requests as f64
                    } else {
                        0.0
                    };
                p.requests += w.requests;
                p.extracted_percent = Some(if p.requests == 0 {
                    0.0
                } else {
                    100.0 * served / p.requests as f64
                });
                if let Some(p99) = w.p99_ms {
                    p.p99_ms.insert(upstream.clone(), p99);
                }
            }
            for (route, mut p) in by_route {
                if p.requests == 0 {
                    p.extracted_percent = None;
                }
                out.entry(route.to_owned()).or_default().push(p);
            }
        }
        out
    }
}

/// Takes a reading every [`FINE`] until the process ends.
pub(crate) async fn run(trend: std::sync::Arc<Trend>, metrics: std::sync::Arc<Metrics>) {
    let mut every = tokio::time::interval(FINE);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        trend.keep(Reading::take(&metrics, service_kit::clock::now_ms()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(requests: u64, errors: u64, buckets: &[(f64, u64)]) -> Counters {
        Counters {
            requests,
            errors,
            buckets: buckets.to_vec(),
        }
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let b = [(0.001, 50), (0.01, 100), (f64::INFINITY, 100)];
        assert_eq!(quantile(&b, 0.5), Some(0.001));
        let p99 = quantile(&b, 0.99).unwrap();
        assert!((p99 - 0.00982).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(&[(0.1, 0), (f64::INFINITY, 0)], 0.5), None);
        // Beyond the last bound: the last bound (Prometheus does the same).
        assert_eq!(quantile(&[(0.1, 0), (f64::INFINITY, 4)], 0.99), Some(0.1));
    }

    #[test]
    fn a_window_is_the_difference_of_two_readings() {
        let trend = Trend::default();
        let key = ("r".to_owned(), "new".to_owned());
        let mut first = Reading {
            at_ms: 0,
            ..Default::default()
        };
        first.sides.insert(
            key.clone(),
            side(100, 10, &[(0.01, 100), (f64::INFINITY, 100)]),
        );
        trend.keep(first);
        let mut now = Reading {
            at_ms: 10_000,
            ..Default::default()
        };
        now.sides.insert(
            key.clone(),
            side(300, 12, &[(0.01, 100), (f64::INFINITY, 300)]),
        );
        let w = &trend.windows(&now, Duration::from_secs(60))[&key];
        assert_eq!(w.requests, 200);
        assert_eq!(w.requests_per_second, 20.0);
        assert_eq!(w.error_percent, Some(1.0));
        // Every request of the window was slower than the last bound.
        assert_eq!(w.p50_ms, Some(10.0));
        let (served, total) = trend.share(&now, Duration::from_secs(300), |u| u == "new");
        assert_eq!((served, total), (200, 200));
        let series = trend.series(&now, |u| u == "new");
        assert_eq!(series["r"].len(), 1);
        assert_eq!(series["r"][0].extracted_percent, Some(100.0));
    }
}
