//! What `routes.toml` looks like on disk: plain serde structs, strict (`deny_unknown_fields`),
//! with spans kept on every value a later check may need to point at.
//!
//! Nothing outside [`crate::config`] reads these structs. [`super::load`] validates them into the
//! model in [`super::model`], which is what the proxy uses.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    #[serde(default)]
    pub proxy: Option<Spanned<ProxySection>>,
    #[serde(default)]
    pub upstreams: BTreeMap<Spanned<String>, Spanned<UpstreamSection>>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RouteSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProxySection {
    pub listen: Option<Spanned<String>>,
    pub admin: Option<Spanned<String>>,
    /// Add `x-banyan-route` / `x-banyan-upstream` to responses (for debugging; off by default).
    pub debug_headers: Option<bool>,
    /// Forward requests without a body, or with their body in hand, on the fast path (on by
    /// default).
    pub fast_path: Option<bool>,
    /// Worker threads of the proxy service.
    pub threads: Option<Spanned<i64>>,
    /// How long the file must stay unchanged before it is applied.
    pub reload_settle: Option<Spanned<String>>,
    /// A file holding the admin API's token (actions, and every read off loopback, need it).
    pub admin_token_file: Option<Spanned<String>>,
    /// Host names the admin API answers to besides loopback names and IP addresses.
    pub admin_hosts: Option<Vec<Spanned<String>>>,
    /// Largest request head accepted (431 beyond it).
    pub max_request_head: Option<Spanned<String>>,
    /// Most header lines in a request head (431 beyond it).
    pub max_request_headers: Option<Spanned<i64>>,
    /// Time a client has to send a whole request head once it began (408 after it).
    pub request_head_timeout: Option<Spanned<String>>,
    /// Time a write of an answer to the client may take (the connection closes after it).
    pub client_write_timeout: Option<Spanned<String>>,
    /// Where rollouts keep their progress and history (relative: to the table's directory).
    pub state_dir: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamSection {
    pub addrs: Spanned<Vec<Spanned<String>>>,
    pub health: Option<Spanned<HealthSection>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub read_timeout: Option<Spanned<String>>,
    pub write_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub outlier: Option<Spanned<OutlierSection>>,
}

/// `outlier = { … }`: passive ejection of a backend that keeps failing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutlierSection {
    pub enabled: Option<bool>,
    pub consecutive: Option<Spanned<i64>>,
    pub base: Option<Spanned<String>>,
    pub max_eject_percent: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthSection {
    pub path: Spanned<String>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteSection {
    pub id: Spanned<String>,
    pub path: Spanned<String>,
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub headers: BTreeMap<Spanned<String>, Spanned<String>>,
    pub upstream: Spanned<String>,
    pub split: Option<Spanned<SplitSection>>,
    pub shadow: Option<Spanned<ShadowSection>>,
    /// The longest an upstream may keep a request of this route waiting for a read.
    pub timeout: Option<Spanned<String>>,
    /// The upstream that serves a request its chosen side cannot (the monolith).
    pub fallback: Option<Spanned<String>>,
    /// Writes fall back too, when no byte of them reached the failing side.
    pub fallback_writes: Option<Spanned<bool>>,
    pub breaker: Option<Spanned<BreakerSection>>,
    pub rollout: Option<Spanned<RolloutSection>>,
}

/// `[route.rollout]`: the route moves itself to `to` through `steps`, each judged by gates on
/// its live traffic and shadow comparisons.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolloutSection {
    pub to: Spanned<String>,
    pub steps: Option<Spanned<Vec<Spanned<f64>>>>,
    pub interval: Option<Spanned<String>>,
    pub sticky: Option<Spanned<String>>,
    pub min_requests: Option<Spanned<i64>>,
    pub max_error_delta: Option<Spanned<f64>>,
    pub max_p99_ratio: Option<Spanned<f64>>,
    pub max_mismatch_percent: Option<Spanned<f64>>,
    pub min_compared: Option<Spanned<i64>>,
    pub approve_at: Option<Vec<Spanned<f64>>>,
    pub failures: Option<Spanned<i64>>,
    /// On a route that takes writes: the read route that must have migrated first.
    pub after: Option<Spanned<String>>,
}

/// `[route.breaker]`: when an upstream of the route fails too often, stop sending it requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BreakerSection {
    pub enabled: Option<bool>,
    pub window: Option<Spanned<String>>,
    pub min_requests: Option<Spanned<i64>>,
    pub error_percent: Option<Spanned<f64>>,
    pub reset: Option<Spanned<String>>,
    pub probes: Option<Spanned<i64>>,
    pub statuses: Option<Spanned<Vec<Spanned<i64>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SplitSection {
    pub to: Spanned<String>,
    pub percent: Spanned<f64>,
    pub sticky: Option<Spanned<String>>,
}

/// `[route.shadow]`: a copy of sampled requests goes to `to`, and its answers are compared.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShadowSection {
    pub to: Spanned<String>,
    pub percent: Spanned<f64>,
    /// Mirror POST/PUT/PATCH/DELETE too (off by default: the candidate would write twice).
    pub writes: Option<bool>,
    /// Noise learning: the same request also goes to this (old-code) upstream.
    pub second_primary: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub max_in_flight: Option<Spanned<i64>>,
    pub max_request_body: Option<Spanned<String>>,
    pub max_response_body: Option<Spanned<String>>,
    /// Response headers compared (besides the status and the body).
    pub headers: Option<Vec<Spanned<String>>>,
    pub ignore: Option<Vec<Spanned<String>>>,
    pub unordered: Option<Vec<Spanned<String>>>,
    pub tolerance: Option<BTreeMap<Spanned<String>, Spanned<f64>>>,
}
