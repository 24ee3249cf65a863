//! The requests being served right now, so that the end of a grace period can name each one
//! it cuts off by its request id.
//!
//! Registration is on every request's path, so it must cost next to nothing: the registry is
//! sharded, each worker thread using its own shard (connections stay on their thread, so a
//! shard's lock is never contended in practice), and an entry holds the request id and a
//! reference to the route table snapshot the request already holds, not copies of strings.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use slab::Slab;

use crate::route_table::RouteTable;

const SHARDS: usize = 32;

/// One request in flight.
#[derive(Debug)]
struct Entry {
    request_id: crate::edge::headers::RequestId,
    /// The table it was routed with, and its route there (`None`: not routed yet).
    route: Option<(Arc<RouteTable>, usize)>,
    started: Instant,
}

/// What the log says of a request cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Running {
    pub request_id: String,
    pub route: String,
    pub elapsed_ms: u128,
}

#[derive(Debug)]
pub(crate) struct Inflight {
    shards: Box<[Mutex<Slab<Entry>>]>,
}

impl Default for Inflight {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Slab::new())).collect(),
        }
    }
}

thread_local! {
    /// This thread's shard.
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

/// Keeps a request registered while it lives.
pub(crate) struct Registered<'a> {
    inflight: &'a Inflight,
    shard: usize,
    key: usize,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.inflight.remove(self.shard, self.key);
    }
}

/// [`Registered`] for state that must own its registry (Pingora's per-request context).
pub(crate) struct OwnedRegistration {
    lifecycle: Arc<super::Lifecycle>,
    shard: usize,
    key: usize,
}

impl Drop for OwnedRegistration {
    fn drop(&mut self) {
        self.lifecycle.inflight.remove(self.shard, self.key);
    }
}

impl Inflight {
    fn insert(&self, request_id: &str, route: Option<(Arc<RouteTable>, usize)>) -> (usize, usize) {
        let shard = SHARD.with(|s| *s);
        let key = self.shards[shard].lock().unwrap().insert(Entry {
            request_id: crate::edge::headers::RequestId::of(request_id.as_bytes()),
            route,
            started: Instant::now(),
        });
        (shard, key)
    }

    fn remove(&self, shard: usize, key: usize) {
        self.shards[shard].lock().unwrap().try_remove(key);
    }

    /// Registers a request until the returned guard drops.
    pub(crate) fn register(
        &self,
        request_id: &str,
        route: Option<(Arc<RouteTable>, usize)>,
    ) -> Registered<'_> {
        let (shard, key) = self.insert(request_id, route);
        Registered {
            inflight: self,
            shard,
            key,
        }
    }

    /// The requests in flight now, oldest first.
    pub(crate) fn running(&self) -> Vec<Running> {
        let mut all: Vec<(Instant, Running)> = Vec::new();
        for shard in self.shards.iter() {
            for (_, e) in shard.lock().unwrap().iter() {
                all.push((
                    e.started,
                    Running {
                        request_id: e.request_id.to_string(),
                        route: e
                            .route
                            .as_ref()
                            .map_or_else(|| "-".to_owned(), |(t, i)| t.route(*i).id.clone()),
                        elapsed_ms: e.started.elapsed().as_millis(),
                    },
                ));
            }
        }
        all.sort_by_key(|(started, _)| *started);
        all.into_iter().map(|(_, r)| r).collect()
    }
}

/// Registers a request for state that outlives any borrow (see [`OwnedRegistration`]).
pub(crate) fn register_owned(
    lifecycle: &Arc<super::Lifecycle>,
    request_id: &str,
    route: Option<(Arc<RouteTable>, usize)>,
) -> OwnedRegistration {
    let (shard, key) = lifecycle.inflight.insert(request_id, route);
    OwnedRegistration {
        lifecycle: lifecycle.clone(),
        shard,
        key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_listed_while_registered() {
        let inflight = Inflight::default();
        let a = inflight.register("req-a", None);
        let b = inflight.register("req-b", None);
        let ids: Vec<_> = inflight
            .running()
            .into_iter()
            .map(|r| r.request_id)
            .collect();
        assert_eq!(ids, ["req-a", "req-b"]);
        drop(a);
        assert_eq!(inflight.running()[0].request_id, "req-b");
        drop(b);
        assert!(inflight.running().is_empty());
    }
}
