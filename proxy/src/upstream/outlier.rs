//! Passive outlier ejection: a backend that fails request after request leaves rotation, even
//! while its health check passes (a process whose `/health` answers while its API fails).
//!
//! Each answer a backend gives counts: a failure (connect error, timeout, broken answer, a 5xx
//! status) adds one to its failures in a row, anything else resets them. At `consecutive`
//! failures in a row it is ejected for `base` times the number of times it has been ejected
//! (30 s, 60 s, … at most 300 s), unless that would eject more than `max_eject_percent` of
//! its pool at once: a pool whose backends all fail keeps serving from them (and the route's
//! breaker and fallback take over) rather than having no backend at all. An ejected backend
//! comes back when its time is up, or earlier when its active health check, having failed,
//! passes again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Backend, Pool};
use crate::metrics::Metrics;

/// The longest one ejection lasts, however often the backend was ejected.
const MAX_EJECTION: Duration = Duration::from_secs(300);

impl Backend {
    pub(super) fn is_ejected_at(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Whether the backend is out of rotation by ejection now.
    pub(crate) fn is_ejected(&self) -> bool {
        self.is_ejected_at(self.now_ms())
    }
}

impl Pool {
    /// Counts one answer of the backend at `addr`: `failed` or not.
    pub(crate) fn observe(&self, addr: std::net::SocketAddr, failed: bool, metrics: &Metrics) {
        let spec = &self.spec.outlier;
        if !spec.enabled {
            return;
        }
        let Some(backend) = self.backends.iter().find(|b| b.addr == addr) else {
            return;
        };
        if !failed {
            if backend.consecutive_failures.load(Ordering::Relaxed) != 0 {
                backend.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let in_a_row = backend.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row < spec.consecutive {
            return;
        }
        let now = backend.now_ms();
        let ejected = self
            .backends
            .iter()
            .filter(|b| b.is_ejected_at(now))
            .count();
        if backend.is_ejected_at(now)
            || (ejected + 1) * 100 > spec.max_eject_percent as usize * self.backends.len()
        {
            return;
        }
        backend.consecutive_failures.store(0, Ordering::Relaxed);
        let times = backend.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = spec.base.saturating_mul(times).min(MAX_EJECTION);
        backend
            .ejected_until_ms
            .store(now + length.as_millis() as u64, Ordering::Relaxed);
        metrics.ejection(self.name(), addr);
        tracing::warn!(
            upstream = self.name(),
            backend = %addr,
            failures_in_a_row = in_a_row,
            ejected_for_ms = length.as_millis() as u64,
            times,
            "backend ejected: it failed request after request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OutlierSpec, UpstreamSpec};
    use crate::upstream::Registry;

    fn pool(n: u16, outlier: OutlierSpec) -> Pool {
        let spec = UpstreamSpec {
            name: "u".into(),
            addrs: (1..=n)
                .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
                .collect(),
            outlier,
            ..UpstreamSpec::default()
        };
        Pool::new(spec, &Registry::default())
    }

    #[test]
    fn a_backend_failing_in_a_row_is_ejected_for_longer_each_time() {
        let p = pool(2, OutlierSpec::default());
        let m = Metrics::new();
        let bad = p.backends[0].addr;
        for _ in 0..4 {
            p.observe(bad, true, &m);
        }
        p.observe(bad, false, &m);
        for _ in 0..4 {
            p.observe(bad, true, &m);
        }
        assert!(!p.backends[0].is_ejected(), "a success resets the count");
        p.observe(bad, true, &m);
        assert!(p.backends[0].is_ejected());
        assert!(!p.backends[0].is_available());
        assert!((0..10).all(|_| p.pick(&[]).unwrap().addr != bad));
        let first = p.backends[0].ejected_until_ms.load(Ordering::Relaxed);
        // Brought back by its health check, then ejected again: for twice as long.
        p.backends[0].set_probe_result(false);
        p.backends[0].set_probe_result(true);
        assert!(!p.backends[0].is_ejected());
        for _ in 0..5 {
            p.observe(bad, true, &m);
        }
        let second = p.backends[0].ejected_until_ms.load(Ordering::Relaxed);
        assert!(second >= first + 29_000, "{first} then {second}");
    }

    #[test]
    fn never_more_than_max_eject_percent_of_a_pool() {
        let p = pool(2, OutlierSpec::default());
        let m = Metrics::new();
        for b in 0..2 {
            for _ in 0..10 {
                p.observe(p.backends[b].addr, true, &m);
            }
        }
        let ejected = p.backends.iter().filter(|b| b.is_ejected()).count();
        assert_eq!(ejected, 1, "50 % of two backends is one");
        let lone = pool(1, OutlierSpec::default());
        for _ in 0..10 {
            lone.observe(lone.backends[0].addr, true, &m);
        }
        assert!(!lone.backends[0].is_ejected(), "a pool is never emptied");
    }
}
