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
use crate::rollout::control::Rollouts;
use crate::rollout::live::Live;
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
    /// Per route: its rollout's live share and records (or a frozen route's share).
    rollouts: Vec<Option<Arc<Live>>>,
}

impl RouteTable {
    pub(crate) fn build(
        config: Config,
        version: String,
        registry: &Registry,
        bounds: &Bounds,
        breakers: &Breakers,
        rollouts: &Rollouts,
    ) -> Self {
        let mut config = config;
        // Before anything reads the routes' splits: a frozen route gets its split here.
        let rollouts: Vec<_> = config
            .routes
            .iter_mut()
            .map(|r| rollouts.attach(r))
            .collect();
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
            rollouts,
        }
    }

    /// The live rollout of route `index` (`None`: it has none, and is not frozen by one).
    pub(crate) fn rollout(&self, index: usize) -> Option<&Arc<Live>> {
        self.rollouts[index].as_ref()
    }

    /// The share of route `index`'s split that goes to its new side, in hundredths of a
    /// percent: the rollout's current step, else the file's percent.
    pub(crate) fn split_basis_points(&self, index: usize) -> u32 {
        match (&self.rollouts[index], &self.config.routes[index].split) {
            (Some(live), _) => live.basis_points(),
            (None, Some(split)) => split.basis_points,
            (None, None) => 0,
        }
    }

    /// The breaker of `upstream` for route `index` (`None`: the route's breaker is off, or it
    /// does not send to `upstream`).
    pub(crate) fn breaker(&self, index: usize, upstream: &str) -> Option<&Arc<Breaker>> {
        self.breakers[index]
            .iter()
            .find(|b| b.upstream() == upstream)
    }

    /// The breakers of route `index` (its upstream's, then its split's; none when off).
    pub(crate) fn breakers_of(&self, index: usize) -> &[Arc<Breaker>] {
        &self.breakers[index]
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
