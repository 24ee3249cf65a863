//! Upstream pools: named groups of backends, picked round-robin among the healthy ones.
//!
//! A backend's health is known two ways. Actively: when the upstream has a `health` check, a
//! probe (`GET path`, 2xx = up) runs every interval ([`health`]). Passively: a failed connect
//! marks the backend down at once; it comes back on its next passing probe, or, without active
//! checks, after [`PASSIVE_COOLDOWN`].
//!
//! Backends live in a [`Registry`] keyed by address that outlives route-table versions, so a
//! reload does not forget that a backend is down (or make a healthy one wait for a probe).

pub(crate) mod budget;
pub(crate) mod health;
pub(crate) mod outlier;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::UpstreamSpec;

/// How long a backend that failed a connect stays out of rotation when no active check exists.
pub(crate) const PASSIVE_COOLDOWN: Duration = Duration::from_secs(5);

/// One backend process. Shared by every table version that names its address.
#[derive(Debug)]
pub(crate) struct Backend {
    pub addr: SocketAddr,
    healthy: AtomicBool,
    /// Milliseconds since [`Registry::epoch`] until which the backend is passively down.
    down_until_ms: AtomicU64,
    /// Outlier ejection ([`outlier`]): failures in a row, times ejected, and until when.
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    ejected_until_ms: AtomicU64,
    epoch: Instant,
}

impl Backend {
    fn new(addr: SocketAddr, epoch: Instant) -> Self {
        Self {
            addr,
            healthy: AtomicBool::new(true),
            down_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            epoch,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// In rotation: the last probe passed, no recent connect failure, not ejected.
    pub(crate) fn is_available(&self) -> bool {
        let now = self.now_ms();
        self.healthy.load(Ordering::Relaxed)
            && self.down_until_ms.load(Ordering::Relaxed) <= now
            && !self.is_ejected_at(now)
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Result of an active probe. Returns true when the state changed. A backend that was
    /// down and passes again also ends its ejection: the check says it recovered.
    pub(crate) fn set_probe_result(&self, up: bool) -> bool {
        if up {
            self.down_until_ms.store(0, Ordering::Relaxed);
        }
        let changed = self.healthy.swap(up, Ordering::Relaxed) != up;
        if up && changed {
            self.ejected_until_ms.store(0, Ordering::Relaxed);
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        changed
    }

    /// A connect to this backend failed: out of rotation until a probe passes (with active
    /// checks) or for the cooldown (without).
    pub(crate) fn mark_connect_failure(&self, has_active_check: bool) {
        if has_active_check {
            self.healthy.store(false, Ordering::Relaxed);
        } else {
            self.down_until_ms.store(
                self.now_ms() + PASSIVE_COOLDOWN.as_millis() as u64,
                Ordering::Relaxed,
            );
        }
    }
}

/// Every backend the proxy knows, by address.
#[derive(Debug)]
pub(crate) struct Registry {
    epoch: Instant,
    backends: Mutex<HashMap<SocketAddr, Arc<Backend>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            backends: Mutex::default(),
        }
    }
}

impl Registry {
    pub(crate) fn backend(&self, addr: SocketAddr) -> Arc<Backend> {
        self.backends
            .lock()
            .unwrap()
            .entry(addr)
            .or_insert_with(|| Arc::new(Backend::new(addr, self.epoch)))
            .clone()
    }

    /// Forgets backends no table uses any more (called after a reload).
    pub(crate) fn retain(&self, in_use: &[SocketAddr]) {
        self.backends
            .lock()
            .unwrap()
            .retain(|addr, _| in_use.contains(addr));
    }
}

/// A named upstream in one table version.
#[derive(Debug)]
pub(crate) struct Pool {
    pub spec: UpstreamSpec,
    pub backends: Vec<Arc<Backend>>,
    next: AtomicUsize,
    /// How many retries this pool may still take ([`budget`]).
    pub budget: budget::RetryBudget,
}

impl Pool {
    pub(crate) fn new(spec: UpstreamSpec, registry: &Registry) -> Self {
        let backends = spec.addrs.iter().map(|a| registry.backend(*a)).collect();
        Self {
            spec,
            backends,
            next: AtomicUsize::new(0),
            budget: budget::RetryBudget::default(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.spec.name
    }

    /// Whether any backend is in rotation.
    pub(crate) fn any_available(&self) -> bool {
        self.backends.iter().any(|b| b.is_available())
    }

    /// The next available backend, round-robin, skipping `tried` (earlier attempts of the same
    /// request). `None` when no backend is available.
    pub(crate) fn pick(&self, tried: &[SocketAddr]) -> Option<Arc<Backend>> {
        let n = self.backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.backends[(start + i) % n])
            .find(|b| b.is_available() && !tried.contains(&b.addr))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(addrs: &[&str]) -> UpstreamSpec {
        UpstreamSpec {
            name: "u".into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            health: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            outlier: crate::config::OutlierSpec::default(),
        }
    }

    #[test]
    fn round_robin_skips_down_and_tried_backends() {
        let reg = Registry::default();
        let pool = Pool::new(spec(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]), &reg);
        let picks: Vec<_> = (0..6)
            .map(|_| pool.pick(&[]).unwrap().addr.port())
            .collect();
        assert_eq!(picks, vec![1, 2, 3, 1, 2, 3]);
        pool.backends[1].mark_connect_failure(true);
        assert!((0..6).all(|_| pool.pick(&[]).unwrap().addr.port() != 2));
        let tried = [pool.backends[0].addr];
        assert!((0..6).all(|_| pool.pick(&tried).unwrap().addr.port() == 3));
        pool.backends[1].set_probe_result(true);
        assert!((0..6).any(|_| pool.pick(&[]).unwrap().addr.port() == 2));
    }

    #[test]
    fn health_outlives_a_reload() {
        let reg = Registry::default();
        let v1 = Pool::new(spec(&["127.0.0.1:1", "127.0.0.1:2"]), &reg);
        v1.backends[0].mark_connect_failure(true);
        let v2 = Pool::new(spec(&["127.0.0.1:1", "127.0.0.1:2"]), &reg);
        assert!(!v2.backends[0].is_available());
        assert!(v2.pick(&[]).is_some_and(|b| b.addr.port() == 2));
    }
}
