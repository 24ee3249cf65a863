//! What a request sees of a rollout: the route's current share of the new side (one atomic
//! load at routing) and the two sides' records it adds to (three relaxed atomic adds when the
//! request ends). Nothing here locks on the request path.
//!
//! One [`Live`] per (route, new upstream), kept across reloads in [`Registry`] like breakers
//! and backend health, so a reload that leaves a rollout alone neither resets its share nor
//! loses the traffic its current step is being judged on. The controller
//! ([`super::control`]) is the only writer of the share.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::traffic::Side;

/// Which side of a rolling-out route served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    New,
    Old,
}

#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) route: String,
    /// The upstream moving in.
    pub(crate) to: String,
    /// What keeps a user on one side (the rollout's, kept if the route is frozen).
    pub(crate) sticky: crate::config::StickyKey,
    /// Share of the new side, in hundredths of a percent.
    share: AtomicU32,
    pub(crate) new: Side,
    pub(crate) old: Side,
}

impl Live {
    /// The new side's share now, in hundredths of a percent.
    pub(crate) fn basis_points(&self) -> u32 {
        self.share.load(Ordering::Relaxed)
    }

    pub(crate) fn set_percent(&self, percent: f64) {
        let bp = (percent.clamp(0.0, 100.0) * 100.0).round() as u32;
        self.share.store(bp, Ordering::Relaxed);
    }

    pub(crate) fn percent(&self) -> f64 {
        f64::from(self.basis_points()) / 100.0
    }

    /// One request `which` side served: failed (a failing status, a timeout, a refused or
    /// broken connection) or not, in `took`.
    pub(crate) fn record(&self, which: Which, failed: bool, took: Duration) {
        match which {
            Which::New => self.new.record(failed, took),
            Which::Old => self.old.record(failed, took),
        }
    }

    /// One request routed to `which` side that the side could not be asked (see
    /// [`Side::refused`]).
    pub(crate) fn refused(&self, which: Which) {
        match which {
            Which::New => self.new.refused(),
            Which::Old => self.old.refused(),
        }
    }
}

/// Every rollout's [`Live`], by route and new upstream.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    by_key: Mutex<BTreeMap<(String, String), Arc<Live>>>,
}

impl Registry {
    /// The live state of `route`'s rollout to `to`, created at `percent` if it is new.
    pub(crate) fn get(
        &self,
        route: &str,
        to: &str,
        sticky: &crate::config::StickyKey,
        percent: impl FnOnce() -> f64,
    ) -> Arc<Live> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        by_key
            .entry((route.to_owned(), to.to_owned()))
            .or_insert_with(|| {
                let live = Live {
                    route: route.to_owned(),
                    to: to.to_owned(),
                    sticky: sticky.clone(),
                    share: AtomicU32::new(0),
                    new: Side::default(),
                    old: Side::default(),
                };
                live.set_percent(percent());
                Arc::new(live)
            })
            .clone()
    }

    /// The live state of `route`'s rollout, if one exists.
    pub(crate) fn find(&self, route: &str) -> Option<Arc<Live>> {
        let by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        by_key
            .iter()
            .find(|((r, _), _)| r == route)
            .map(|(_, l)| l.clone())
    }

    /// Forgets the rollouts no route has any more.
    pub(crate) fn retain(&self, keep: &[(String, String)]) {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        by_key.retain(|k, _| keep.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollout_keeps_its_share_and_traffic_across_lookups() {
        let reg = Registry::default();
        let sticky = crate::config::StickyKey::PerRequest;
        let live = reg.get("products", "catalog", &sticky, || 5.0);
        assert_eq!(live.basis_points(), 500);
        live.record(Which::New, true, Duration::from_millis(3));
        live.set_percent(25.0);
        let again = reg.get("products", "catalog", &sticky, || 0.0);
        assert_eq!(again.percent(), 25.0);
        assert_eq!(again.new.seen().counts.errors, 1);
        // Another target is another rollout.
        assert_eq!(
            reg.get("products", "search", &sticky, || 0.0)
                .basis_points(),
            0
        );
        reg.retain(&[("products".into(), "search".into())]);
        assert!(reg.find("products").is_some_and(|l| l.to == "search"));
    }
}
