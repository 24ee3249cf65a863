//! What a shadowed route keeps across table versions: its in-flight bound and its backlog.
//!
//! The client's side tells the shadow thread what happened to a request it did not mirror
//! (dropped at the bound, too large, a write not mirrored, the primary failed) through the
//! shadow thread's inbox. That thread runs at idle priority: on a saturated machine it can be
//! kept off the CPU for as long as the saturation lasts, while every request still produces an
//! event. An unbounded inbox would then grow by one message per request (hundreds of MB a minute
//! at full speed) exactly when memory is tightest. So the inbox is bounded, and an event that
//! finds it full is added to its route's [`Backlog`] instead: four atomic counters, no
//! allocation, no lock. The shadow thread takes the backlogs on every pass and counts them under
//! the endpoint [`super::results::OTHER`]: the route's totals stay exact, only the endpoint of
//! those events is lost.
//!
//! Both live here, by route id, rather than in a table snapshot: a reload that keeps a route's
//! bound keeps its count of shadows in flight (a changed bound starts a new one), and its backlog
//! keeps counting across versions. The reload side is the only one that locks [`Bounds`]; the
//! shadow thread reads the published list of backlogs without a lock, so an idle-priority thread
//! that loses the CPU can never hold up a reload or a request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use super::results::Event;

/// The events the client's side reports, in backlog order.
const CLIENT_SIDE: [Event; 4] = [
    Event::DroppedInFlight,
    Event::TooLarge,
    Event::WriteNotMirrored,
    Event::PrimaryFailed,
];

/// Events of one route that did not fit in the shadow thread's inbox, not yet counted.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    counts: [AtomicU64; CLIENT_SIDE.len()],
}

impl Backlog {
    /// Adds one event (only client-side events are ever reported here).
    pub(crate) fn add(&self, event: Event) {
        if let Some(i) = CLIENT_SIDE.iter().position(|e| *e == event) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes every count, leaving zeros: (event, how many), non-zero ones only. A zero count is
    /// only read, not written: the shadow thread asks on every tick, and a write would take the
    /// cache line from the request threads for nothing.
    pub(crate) fn take(&self) -> impl Iterator<Item = (Event, u64)> + '_ {
        CLIENT_SIDE
            .iter()
            .zip(&self.counts)
            .filter(|(_, c)| c.load(Ordering::Relaxed) > 0)
            .map(|(e, c)| (*e, c.swap(0, Ordering::Relaxed)))
    }

    fn is_empty(&self) -> bool {
        self.counts.iter().all(|c| c.load(Ordering::Relaxed) == 0)
    }
}

/// The backlogs the shadow thread drains, by route id.
pub(crate) type Backlogs = Arc<ArcSwap<Vec<(String, Arc<Backlog>)>>>;

/// One shadowed route's share of [`Bounds`], as a table snapshot holds it.
#[derive(Debug, Clone)]
pub(crate) struct RouteBound {
    /// Slots for shadows in flight (`max_in_flight`).
    pub slots: Arc<Semaphore>,
    pub backlog: Arc<Backlog>,
}

#[derive(Debug)]
struct Entry {
    max: usize,
    slots: Arc<Semaphore>,
    backlog: Arc<Backlog>,
}

/// Every shadowed route's bound and backlog, by route id.
#[derive(Debug, Default)]
pub(crate) struct Bounds {
    map: Mutex<HashMap<String, Entry>>,
    published: Backlogs,
}

impl Bounds {
    /// The list the shadow thread reads; [`Bounds::retain`] updates it once a table is built.
    pub(crate) fn backlogs(&self) -> Backlogs {
        self.published.clone()
    }

    /// The bound of `route` with `max` slots: the same one as before when `max` is unchanged.
    /// A new route's backlog is listed for the shadow thread at the next [`Bounds::retain`]
    /// (what it counts before then is taken then).
    pub(crate) fn get(&self, route: &str, max: usize) -> RouteBound {
        let mut map = self.map.lock().unwrap();
        let entry = map.entry(route.to_owned()).or_insert_with(|| Entry {
            max,
            slots: Arc::new(Semaphore::new(max)),
            backlog: Arc::default(),
        });
        if entry.max != max {
            entry.max = max;
            entry.slots = Arc::new(Semaphore::new(max));
        }
        RouteBound {
            slots: entry.slots.clone(),
            backlog: entry.backlog.clone(),
        }
    }

    /// Called with the shadowed routes of each table built: forgets the routes no longer
    /// shadowed, except a backlog not yet taken (it stays listed until the shadow thread has
    /// counted it; a later reload forgets it then), and lists the rest for the shadow thread.
    pub(crate) fn retain(&self, routes: &[&str]) {
        let mut map = self.map.lock().unwrap();
        map.retain(|r, e| routes.contains(&r.as_str()) || !e.backlog.is_empty());
        let list = map
            .iter()
            .map(|(r, e)| (r.clone(), e.backlog.clone()))
            .collect();
        self.published.store(Arc::new(list));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_counts_client_side_events_and_hands_them_over_once() {
        let b = Backlog::default();
        for _ in 0..3 {
            b.add(Event::DroppedInFlight);
        }
        b.add(Event::PrimaryFailed);
        b.add(Event::CandidateTimeout); // not a client-side event: never reported here
        let mut taken: Vec<_> = b.take().collect();
        taken.sort_by_key(|(e, _)| e.outcome());
        assert_eq!(
            taken,
            [(Event::DroppedInFlight, 3), (Event::PrimaryFailed, 1)]
        );
        assert_eq!(b.take().count(), 0, "taken once");
        assert!(b.is_empty());
    }

    #[test]
    fn bounds_outlive_reloads_and_backlogs_outlive_their_route_until_taken() {
        let bounds = Bounds::default();
        let list = bounds.backlogs();
        let a = bounds.get("a", 4);
        assert!(
            Arc::ptr_eq(&a.slots, &bounds.get("a", 4).slots),
            "same bound"
        );
        let a2 = bounds.get("a", 8);
        assert!(
            !Arc::ptr_eq(&a.slots, &a2.slots),
            "a new bound for a new max"
        );
        assert!(
            Arc::ptr_eq(&a.backlog, &a2.backlog),
            "the backlog keeps counting"
        );
        bounds.retain(&["a"]);
        assert_eq!(list.load().len(), 1);

        a.backlog.add(Event::TooLarge);
        bounds.retain(&[]);
        assert_eq!(list.load().len(), 1, "kept until counted");
        assert_eq!(list.load()[0].1.take().count(), 1);
        bounds.retain(&[]);
        assert!(list.load().is_empty());
    }
}
