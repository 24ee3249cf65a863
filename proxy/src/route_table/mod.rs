//! The route table: one immutable, fully built snapshot of a valid `routes.toml`.
//!
//! A request takes the current snapshot once, at its start, and uses it to the end, so a
//! reload never changes the rules under a request in flight. A reload builds a whole new
//! snapshot and swaps it in atomically ([`crate::reload`]); nothing here is ever mutated.

pub(crate) mod matcher;
pub(crate) mod normalize;

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;

use crate::edge::headers::Headers;

use crate::config::{Config, RouteSpec};
use crate::edge::breaker::{Breaker, Breakers};
use crate::shadow::bounds::{Bounds, RouteBound};
use crate::upstream::{Pool, Registry};
use matcher::Matcher;

#[derive(Debug)]
pub(crate) struct RouteTable {
    /// Short hash of the file's bytes: tells operators which file is live.
    pub version: String,
    /// Unix milliseconds.
    pub loaded_at_ms: i64,
    pub config: Config,
    pub pools: BTreeMap<String, Arc<Pool>>,
    matcher: Matcher,
    /// Per route: the in-flight bound and backlog of its shadow, if it has one.
    shadow_bounds: Vec<Option<RouteBound>>,
    /// Per route: the breakers of the upstreams it sends to (none when its breaker is off).
    breakers: Vec<Vec<Arc<Breaker>>>,
}

impl RouteTable {
    pub(crate) fn build(
        config: Config,
        version: String,
        registry: &Registry,
        bounds: &Bounds,
        breakers: &Breakers,
    ) -> Self {
        let pools = config
            .upstreams
            .iter()
            .map(|(name, spec)| (name.clone(), Arc::new(Pool::new(spec.clone(), registry))))
            .collect();
        let matcher = Matcher::build(&config.routes);
        let shadow_bounds = config
            .routes
            .iter()
            .map(|r| {
                r.shadow
                    .as_ref()
                    .map(|s| bounds.get(&r.id, s.max_in_flight))
            })
            .collect();
        let breakers = config
            .routes
            .iter()
            .map(|r| {
                if !r.breaker.enabled {
                    return Vec::new();
                }
                std::iter::once(&r.upstream)
                    .chain(r.split.as_ref().map(|s| &s.to))
                    .map(|u| breakers.get(&r.id, u, &r.breaker))
                    .collect()
            })
            .collect();
        RouteTable {
            version,
            loaded_at_ms: service_kit::clock::now_ms(),
            config,
            pools,
            matcher,
            shadow_bounds,
            breakers,
        }
    }

    /// The breaker of `upstream` for route `index` (`None`: the route's breaker is off, or it
    /// does not send to `upstream`).
    pub(crate) fn breaker(&self, index: usize, upstream: &str) -> Option<&Arc<Breaker>> {
        self.breakers[index]
            .iter()
            .find(|b| b.upstream() == upstream)
    }

    /// Every (route, upstream) pair with a breaker.
    pub(crate) fn breaker_keys(&self) -> Vec<(String, String)> {
        self.config
            .routes
            .iter()
            .zip(&self.breakers)
            .flat_map(|(r, bs)| bs.iter().map(|b| (r.id.clone(), b.upstream().to_owned())))
            .collect()
    }

    /// The in-flight bound and backlog of route `index`'s shadow (`None`: no shadow).
    pub(crate) fn shadow_bound(&self, index: usize) -> Option<&RouteBound> {
        self.shadow_bounds[index].as_ref()
    }

    /// The ids of the routes with a shadow.
    pub(crate) fn shadowed_routes(&self) -> Vec<&str> {
        self.config
            .routes
            .iter()
            .filter(|r| r.shadow.is_some())
            .map(|r| r.id.as_str())
            .collect()
    }

    /// The index of the route for a request (normalized path).
    pub(crate) fn find<H: Headers + ?Sized>(
        &self,
        path: &str,
        method: &Method,
        headers: &H,
    ) -> Option<usize> {
        self.matcher
            .find(&self.config.routes, path, method, headers)
    }

    pub(crate) fn route(&self, index: usize) -> &RouteSpec {
        &self.config.routes[index]
    }

    /// The pool of a validated upstream name (validation guarantees it exists).
    pub(crate) fn pool(&self, name: &str) -> &Arc<Pool> {
        &self.pools[name]
    }
}
