//! The per-request series (`banyan_requests_total`, `banyan_request_duration_seconds`,
//! `banyan_request_pipeline_total`) found without the registry's lock.
//!
//! Why: `prometheus`' `with_label_values` hashes the labels, takes the metric family's read
//! lock and clones the series' `Arc`, and every request did that three times, on a lock and
//! reference counts that every worker thread touches. Each worker thread keeps here the series
//! it has used, by route and upstream, and a request only hashes its two labels in that
//! thread's own map; the counters' increments are the only shared writes left. A series is
//! created in the registry (as before) the first time a thread uses it, so `/metrics` shows
//! exactly the series requests made, and request series are never removed, so a kept handle
//! is never stale.
//!
//! Bounds: labels are route ids and upstream names from the configuration, so a thread keeps
//! at most one entry per route and upstream it served, as the registry does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{Histogram, IntCounter};

use super::Metrics;

/// Status classes, in the order of [`class`]'s index.
pub(super) const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// The index in [`CLASSES`] of a status.
pub(super) fn class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// Tells apart the `Metrics` of one process (tests build several): a thread's kept series are
/// per `Metrics`.
pub(super) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One route and upstream's series on this thread.
struct Kept {
    /// By status class, made on first use.
    requests: [Option<IntCounter>; 6],
    latency: Histogram,
}

#[derive(Default)]
struct Threads {
    /// By `Metrics` id, then by `route \0 upstream`.
    kept: HashMap<u64, HashMap<Box<str>, Kept>>,
    /// The key being looked up (reused: no allocation a request).
    key: String,
}

thread_local! {
    static THIS_THREAD: RefCell<Threads> = RefCell::new(Threads::default());
}

impl Metrics {
    /// Counts one request of `route` served by `upstream` with `status` in `elapsed` seconds.
    pub(super) fn count_request(&self, route: &str, upstream: &str, status: u16, elapsed: f64) {
        let class = class(status);
        THIS_THREAD.with_borrow_mut(|t| {
            t.key.clear();
            t.key.push_str(route);
            t.key.push('\0');
            t.key.push_str(upstream);
            let mine = t.kept.entry(self.id).or_default();
            if !mine.contains_key(t.key.as_str()) {
                let kept = Kept {
                    requests: Default::default(),
                    latency: self.latency.with_label_values(&[route, upstream]),
                };
                mine.insert(t.key.as_str().into(), kept);
            }
            let Some(kept) = mine.get_mut(t.key.as_str()) else {
                return;
            };
            kept.requests[class]
                .get_or_insert_with(|| {
                    self.requests
                        .with_label_values(&[route, upstream, CLASSES[class]])
                })
                .inc();
            kept.latency.observe(elapsed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .map(|v| v.trim().parse().unwrap())
    }

    #[test]
    fn every_request_is_counted_in_its_series_from_every_thread() {
        let metrics = std::sync::Arc::new(Metrics::new());
        let other = Metrics::new();
        std::thread::scope(|s| {
            for _ in 0..3 {
                let m = metrics.clone();
                s.spawn(move || {
                    for i in 0..100u16 {
                        m.request(
                            "r",
                            if i % 2 == 0 { "a" } else { "b" },
                            200,
                            Default::default(),
                        );
                    }
                    m.request("r", "a", 503, Default::default());
                    m.request("r", "a", 0, Default::default());
                });
            }
        });
        other.request("r", "a", 200, Default::default());
        let text = metrics.render();
        let counted = |labels: &str| value(&text, &format!("banyan_requests_total{{{labels}}}"));
        assert_eq!(
            counted("class=\"2xx\",route=\"r\",upstream=\"a\""),
            Some(150.0)
        );
        assert_eq!(
            counted("class=\"2xx\",route=\"r\",upstream=\"b\""),
            Some(150.0)
        );
        assert_eq!(
            counted("class=\"5xx\",route=\"r\",upstream=\"a\""),
            Some(3.0)
        );
        assert_eq!(
            counted("class=\"none\",route=\"r\",upstream=\"a\""),
            Some(3.0)
        );
        assert_eq!(
            counted("class=\"4xx\",route=\"r\",upstream=\"a\""),
            None,
            "made on use"
        );
        assert_eq!(
            value(
                &text,
                "banyan_request_duration_seconds_count{route=\"r\",upstream=\"a\"}"
            ),
            Some(156.0)
        );
        // Another `Metrics` (another proxy in the same process) counts on its own.
        assert_eq!(
            value(
                &other.render(),
                "banyan_requests_total{class=\"2xx\",route=\"r\",upstream=\"a\"}"
            ),
            Some(1.0)
        );
    }
}
