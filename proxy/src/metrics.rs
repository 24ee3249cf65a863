//! Prometheus metrics, served by the admin API at `/metrics`.
//!
//! Labels are bounded by the configuration (route ids, upstream names, backend addresses) and
//! by status *classes*, never by request paths or ids, so cardinality cannot be driven by
//! clients. Shadow metrics carry endpoint and field *templates*, whose number per route the
//! results store caps ([`crate::shadow::results`]).

use std::net::SocketAddr;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::route_table::RouteTable;

mod series;

pub(crate) struct Metrics {
    /// Tells this `Metrics` apart from another in the same process ([`series`]).
    id: u64,
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    reloads: IntCounterVec,
    backend_up: IntGaugeVec,
    upstream_failures: IntCounterVec,
    table_info: IntGaugeVec,
    shadow_requests: IntCounterVec,
    shadow_fields: IntCounterVec,
    pipelines: IntCounterVec,
    /// `pipelines`' three series (fast, pingora, edge), made on first use and then counted
    /// without the family's lock.
    by_pipeline: [std::sync::OnceLock<prometheus::IntCounter>; 3],
    breaker_state: IntGaugeVec,
    fallbacks: IntCounterVec,
    ejections: IntCounterVec,
    retries: IntCounterVec,
    sync_lag: prometheus::GaugeVec,
    /// The streams each (upstream, backend) last reported a lag for, so a stream it stops
    /// reporting (or a backend that stops answering) leaves no stale figure.
    sync_streams: std::sync::Mutex<std::collections::HashMap<(String, String), Vec<String>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "banyan_requests_total",
                "Requests by route, upstream and status class",
            ),
            &["route", "upstream", "class"],
        )
        .unwrap();
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "banyan_request_duration_seconds",
                "Time from request start to the end of the response",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route", "upstream"],
        )
        .unwrap();
        let reloads = IntCounterVec::new(
            Opts::new("banyan_reloads_total", "Route table reloads by result"),
            &["result"],
        )
        .unwrap();
        let backend_up = IntGaugeVec::new(
            Opts::new(
                "banyan_backend_up",
                "1 when the backend passed its last health check",
            ),
            &["upstream", "backend"],
        )
        .unwrap();
        let upstream_failures = IntCounterVec::new(
            Opts::new(
                "banyan_upstream_failures_total",
                "Failures talking to an upstream, by kind",
            ),
            &["upstream", "kind"],
        )
        .unwrap();
        let table_info = IntGaugeVec::new(
            Opts::new(
                "banyan_route_table_info",
                "The live route table version (value is 1)",
            ),
            &["version"],
        )
        .unwrap();
        let shadow_requests = IntCounterVec::new(
            Opts::new(
                "banyan_shadow_requests_total",
                "Shadowed requests by route, endpoint template and outcome",
            ),
            &["route", "endpoint", "outcome"],
        )
        .unwrap();
        let shadow_fields = IntCounterVec::new(
            Opts::new(
                "banyan_shadow_field_differences_total",
                "Candidate answers that differed at a field template, as mismatch or noise",
            ),
            &["route", "endpoint", "field", "class"],
        )
        .unwrap();
        let pipelines = IntCounterVec::new(
            Opts::new(
                "banyan_request_pipeline_total",
                "Requests by the pipeline that forwarded them: the fast path or Pingora's",
            ),
            &["pipeline"],
        )
        .unwrap();
        let sync_lag = prometheus::GaugeVec::new(
            Opts::new(
                "banyan_upstream_sync_lag_seconds",
                "How long since the backend's sync last read to the end of its source, per stream (from its /health)",
            ),
            &["upstream", "backend", "stream"],
        )
        .unwrap();
        let breaker_state = IntGaugeVec::new(
            Opts::new(
                "banyan_breaker_state",
                "Circuit breaker of an upstream for a route: 0 closed, 1 open, 2 half-open",
            ),
            &["route", "upstream"],
        )
        .unwrap();
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "banyan_fallbacks_total",
                "Requests served by the route's fallback instead of the side chosen, by reason",
            ),
            &["route", "reason"],
        )
        .unwrap();
        let ejections = IntCounterVec::new(
            Opts::new(
                "banyan_ejections_total",
                "Backends ejected for failing request after request",
            ),
            &["upstream", "backend"],
        )
        .unwrap();
        let retries = IntCounterVec::new(
            Opts::new(
                "banyan_retries_total",
                "Second attempts of a request (another backend, the fallback) by route: retried, or refused by the upstream's retry budget",
            ),
            &["route", "result"],
        )
        .unwrap();
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(retries.clone()),
            Box::new(ejections.clone()),
            Box::new(breaker_state.clone()),
            Box::new(sync_lag.clone()),
            Box::new(fallbacks.clone()),
            Box::new(latency.clone()),
            Box::new(reloads.clone()),
            Box::new(backend_up.clone()),
            Box::new(upstream_failures.clone()),
            Box::new(table_info.clone()),
            Box::new(shadow_requests.clone()),
            Box::new(shadow_fields.clone()),
            Box::new(pipelines.clone()),
        ] {
            registry.register(c).unwrap();
        }
        for result in ["applied", "refused"] {
            reloads.with_label_values(&[result]);
        }
        Metrics {
            id: series::next_id(),
            registry,
            requests,
            latency,
            reloads,
            backend_up,
            upstream_failures,
            table_info,
            shadow_requests,
            shadow_fields,
            pipelines,
            by_pipeline: Default::default(),
            breaker_state,
            sync_lag,
            sync_streams: Default::default(),
            fallbacks,
            ejections,
            retries,
        }
    }

    /// A breaker's state ([`crate::edge::breaker::Phase`] as 0, 1, 2).
    pub(crate) fn breaker_state(&self, route: &str, upstream: &str, value: i64) {
        self.breaker_state
            .with_label_values(&[route, upstream])
            .set(value);
    }

    /// A breaker no route uses any more.
    pub(crate) fn forget_breaker(&self, route: &str, upstream: &str) {
        let _ = self.breaker_state.remove_label_values(&[route, upstream]);
    }

    /// A backend ejected ([`crate::upstream::outlier`]).
    pub(crate) fn ejection(&self, upstream: &str, backend: SocketAddr) {
        self.ejections
            .with_label_values(&[upstream, &backend.to_string()])
            .inc();
    }

    /// A second attempt of a request of `route` (`result`: retried or budget_exhausted).
    pub(crate) fn retry(&self, route: &str, result: &str) {
        self.retries.with_label_values(&[route, result]).inc();
    }

    /// A request served by its route's fallback.
    pub(crate) fn fallback(&self, route: &str, reason: &str) {
        self.fallbacks.with_label_values(&[route, reason]).inc();
    }

    /// One request forwarded (or answered) by `pipeline`: "fast" or "pingora".
    pub(crate) fn pipeline(&self, pipeline: &str) {
        let at = match pipeline {
            "fast" => 0,
            "pingora" => 1,
            "edge" => 2,
            other => {
                self.pipelines.with_label_values(&[other]).inc();
                return;
            }
        };
        self.by_pipeline[at]
            .get_or_init(|| self.pipelines.with_label_values(&[pipeline]))
            .inc();
    }

    /// One shadowed request's outcome (endpoint templates are capped per route by the results
    /// store, so clients cannot grow this without bound).
    pub(crate) fn shadow_outcome(&self, route: &str, endpoint: &str, outcome: &str, n: u64) {
        self.shadow_requests
            .with_label_values(&[route, endpoint, outcome])
            .inc_by(n);
    }

    /// One candidate answer differing at `field` (`class`: mismatch or noise).
    pub(crate) fn shadow_field(&self, route: &str, endpoint: &str, field: &str, class: &str) {
        self.shadow_fields
            .with_label_values(&[route, endpoint, field, class])
            .inc();
    }

    /// One request's count and latency (through this thread's kept series: [`series`]).
    pub(crate) fn request(&self, route: &str, upstream: &str, status: u16, elapsed: Duration) {
        self.count_request(route, upstream, status, elapsed.as_secs_f64());
    }

    pub(crate) fn reload(&self, result: &str) {
        self.reloads.with_label_values(&[result]).inc();
    }

    pub(crate) fn backend_health(&self, upstream: &str, backend: SocketAddr, up: bool) {
        self.backend_up
            .with_label_values(&[upstream, &backend.to_string()])
            .set(i64::from(up));
    }

    /// The sync lags a backend's health check reported (`stream -> seconds`); an empty list
    /// when it reported none or did not answer.
    pub(crate) fn sync_lags(&self, upstream: &str, backend: SocketAddr, lags: &[(String, f64)]) {
        let backend = backend.to_string();
        let mut streams = self.sync_streams.lock().unwrap_or_else(|e| e.into_inner());
        let key = (upstream.to_owned(), backend.clone());
        let before = streams.remove(&key).unwrap_or_default();
        for stream in &before {
            if !lags.iter().any(|(s, _)| s == stream) {
                let _ = self
                    .sync_lag
                    .remove_label_values(&[upstream, &backend, stream]);
            }
        }
        for (stream, seconds) in lags {
            self.sync_lag
                .with_label_values(&[upstream, &backend, stream])
                .set(*seconds);
        }
        if !lags.is_empty() {
            streams.insert(key, lags.iter().map(|(s, _)| s.clone()).collect());
        }
    }

    pub(crate) fn upstream_failure(&self, upstream: &str, kind: &str) {
        self.upstream_failures
            .with_label_values(&[upstream, kind])
            .inc();
    }

    pub(crate) fn table_loaded(&self, table: &RouteTable) {
        self.table_info.reset();
        self.table_info.with_label_values(&[&table.version]).set(1);
    }

    /// Requests per route id: by status class, and by side (upstream) and class, so a split's
    /// real share shows (for the admin API's `/routes`).
    pub(crate) fn requests_by_route(&self) -> std::collections::HashMap<String, RouteCounts> {
        let mut out: std::collections::HashMap<String, RouteCounts> = Default::default();
        for family in self.registry.gather() {
            if family.name() != "banyan_requests_total" {
                continue;
            }
            for m in family.get_metric() {
                let label = |n: &str| label(m, n);
                let n = m.get_counter().get_value() as u64;
                let route = out.entry(label("route")).or_default();
                *route.classes.entry(label("class")).or_default() += n;
                let side = route.sides.entry(label("upstream")).or_default();
                *side.entry(label("class")).or_default() += n;
                *side.entry("total".to_owned()).or_default() += n;
            }
        }
        out
    }

    /// Every metric family's current values.
    pub(crate) fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("metrics encode");
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The value of label `name` of one gathered metric ("" when it has none).
pub(crate) fn label(m: &prometheus::proto::Metric, name: &str) -> String {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value().to_owned())
        .unwrap_or_default()
}

/// What `/routes` shows of one route's traffic.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct RouteCounts {
    /// Status class -> requests.
    pub classes: std::collections::BTreeMap<String, u64>,
    /// Upstream -> status class (and `total`) -> requests.
    pub sides: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
}
