//! The validated route table configuration: what the proxy runs on. Every value here has been
//! checked (addresses resolved, durations parsed, ties refused), so nothing downstream of
//! [`super::load`] has to doubt it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Method};

pub(crate) use crate::edge::head::HeadLimits;

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub proxy: ProxySettings,
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    pub routes: Vec<RouteSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProxySettings {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub debug_headers: bool,
    /// Requests without a body, or whose body came with the head, skip Pingora's proxy
    /// pipeline ([`crate::fast_path`]).
    pub fast_path: bool,
    pub threads: usize,
    pub reload_settle: Duration,
    /// The admin token's file, resolved against the route table's directory.
    pub admin_token_file: Option<PathBuf>,
    /// Host names the admin API answers to besides loopback names and IP addresses (lower case).
    pub admin_hosts: Vec<String>,
    /// Bounds of a client's request head, on both pipelines.
    pub head: HeadLimits,
    /// How long one write of an answer to the client may take, on both pipelines: a client
    /// that stops reading is cut off after it rather than holding its exchange (and the
    /// upstream connection under it) for ever.
    pub client_write_timeout: Duration,
    /// Where rollouts keep their progress and history: operational state, not configuration
    /// (a relative path is taken from the route table's directory).
    pub state_dir: PathBuf,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            debug_headers: false,
            fast_path: true,
            threads: 2,
            reload_settle: Duration::from_millis(150),
            admin_token_file: None,
            admin_hosts: Vec::new(),
            head: HeadLimits::default(),
            client_write_timeout: Duration::from_secs(30),
            state_dir: PathBuf::from("banyan-state"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UpstreamSpec {
    pub name: String,
    pub addrs: Vec<SocketAddr>,
    pub health: Option<HealthSpec>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub outlier: OutlierSpec,
}

/// Passive outlier ejection ([`crate::upstream::outlier`]): a backend with `consecutive`
/// failures in a row leaves rotation for `base` times the number of its ejections (at most
/// 300 s), never more than `max_eject_percent` of a pool at once.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutlierSpec {
    pub enabled: bool,
    pub consecutive: u32,
    pub base: Duration,
    pub max_eject_percent: u32,
}

impl Default for OutlierSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive: 5,
            base: Duration::from_secs(30),
            max_eject_percent: 50,
        }
    }
}

/// An upstream's settings where `routes.toml` leaves them out (`name` and `addrs` are always
/// given).
impl Default for UpstreamSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            addrs: Vec::new(),
            health: None,
            // Longer than Linux's first SYN retransmission (1 s): one SYN dropped by a busy
            // backend's full accept queue must not fail the request and eject the backend.
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            outlier: OutlierSpec::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HealthSpec {
    pub path: String,
    pub interval: Duration,
    /// At most the interval (a probe never outlives the next one).
    pub timeout: Duration,
}

impl Default for HealthSpec {
    fn default() -> Self {
        Self {
            path: "/health".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RouteSpec {
    pub id: String,
    /// Normalized, without a trailing slash (except the root `/`).
    pub path: String,
    /// `None`: any method.
    pub methods: Option<Vec<Method>>,
    /// Header name -> exact value, all of which must match.
    pub headers: Vec<(HeaderName, String)>,
    pub upstream: String,
    pub split: Option<SplitSpec>,
    pub shadow: Option<ShadowSpec>,
    /// The longest an upstream may keep a request of this route waiting for its answer's head
    /// or the next piece of its body (at most the upstream's own `read_timeout`).
    pub timeout: Duration,
    /// The upstream that serves what the chosen side cannot ([`crate::edge::fallback`]).
    pub fallback: Option<String>,
    /// Writes fall back too (only when no byte of them reached the failing side).
    pub fallback_writes: bool,
    /// The circuit breaker of each upstream this route sends to ([`crate::edge::breaker`]).
    pub breaker: BreakerSpec,
    /// The route moves itself to a new upstream ([`crate::rollout`]). With one, `split` is the
    /// rollout's (its `to` and sticky key), and its share is the rollout's current step.
    pub rollout: Option<RolloutSpec>,
}

/// A route's `[route.rollout]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RolloutSpec {
    pub to: String,
    /// Percent of the new side at each step, rising, ending at 100; 0 is shadow only.
    pub steps: Vec<f64>,
    /// Time at each step before it is judged (and between checks while it holds).
    pub interval: Duration,
    pub gates: crate::rollout::traffic::Gates,
    /// Steps that wait for `banyan rollout approve`.
    pub approve_at: Vec<f64>,
    /// Failed checks in a row that abort.
    pub failures: u32,
    /// On a route that takes writes: the read route that must have migrated before this one
    /// moves (in one step, 0 -> 100).
    pub after: Option<String>,
}

impl RolloutSpec {
    /// The steps the rollout walks, for [`crate::rollout::progress`].
    pub(crate) fn plan(&self) -> crate::rollout::progress::Plan {
        crate::rollout::progress::Plan {
            steps: self.steps.clone(),
            approve_at: self.approve_at.clone(),
            failures: self.failures,
        }
    }

    /// What identifies this plan: a saved progress resumes only under the same plan, so any
    /// edit of the block starts the rollout over.
    pub(crate) fn fingerprint(&self, sticky: &StickyKey) -> String {
        let text = format!(
            "{}|{:?}|{}|{sticky}|{:?}|{:?}|{}|{:?}",
            self.to,
            self.steps,
            self.interval.as_millis(),
            self.gates,
            self.approve_at,
            self.failures,
            self.after
        );
        crate::reload::version_of(text.as_bytes())
    }
}

/// A rollout's settings where `routes.toml` leaves them out (`to` is always given).
pub(crate) const ROLLOUT_STEPS: [f64; 6] = [0.0, 1.0, 5.0, 25.0, 50.0, 100.0];
pub(crate) const ROLLOUT_INTERVAL: Duration = Duration::from_secs(60);
pub(crate) const ROLLOUT_FAILURES: u32 = 2;

/// A route's circuit breakers: an upstream whose share of failures over `window` reaches
/// `error_percent` (on at least `min_requests`) gets no requests for `reset`, then `probes`
/// requests decide whether it is back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BreakerSpec {
    pub enabled: bool,
    pub window: Duration,
    pub min_requests: u32,
    /// 1..=100.
    pub error_percent: f64,
    pub reset: Duration,
    pub probes: u32,
    /// Upstream answers that count as failures (connect errors and timeouts always do).
    pub statuses: Vec<u16>,
}

/// A route's `timeout` where `routes.toml` leaves it out (the seeds' 3 s).
pub(crate) const ROUTE_TIMEOUT: Duration = Duration::from_secs(3);

impl Default for BreakerSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(10),
            min_requests: 20,
            error_percent: 50.0,
            reset: Duration::from_secs(30),
            probes: 3,
            statuses: vec![500, 502, 503, 504],
        }
    }
}

/// A route's shadow: sampled requests are mirrored to `to` and the answers compared.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ShadowSpec {
    pub to: String,
    /// Share of requests mirrored, in hundredths of a percent (0..=10_000).
    pub basis_points: u32,
    /// POST/PUT/PATCH/DELETE are mirrored only when true.
    pub writes: bool,
    /// Noise learning: the request also goes to this upstream, running the old code.
    pub second_primary: Option<String>,
    /// Whole exchange with the candidate (connect, send, read the answer).
    pub timeout: Duration,
    /// Shadows in flight for this route; beyond it new ones are dropped and counted.
    pub max_in_flight: usize,
    /// Requests with a larger body are not mirrored (counted).
    pub max_request_body: usize,
    /// Answers larger than this are not compared (counted).
    pub max_response_body: usize,
    /// Response headers compared, besides the status and the body.
    pub headers: Vec<HeaderName>,
    pub rules: crate::shadow::compare::Rules,
}

/// A shadow's settings where `routes.toml` leaves them out (`to` and `percent` are always
/// given; `basis_points` is the reference's `percent = 100`).
impl Default for ShadowSpec {
    fn default() -> Self {
        Self {
            to: String::new(),
            basis_points: 10_000,
            writes: false,
            second_primary: None,
            timeout: Duration::from_secs(2),
            max_in_flight: 64,
            max_request_body: 64 * 1024,
            max_response_body: 1024 * 1024,
            headers: vec![http::header::CONTENT_TYPE],
            rules: crate::shadow::compare::Rules::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SplitSpec {
    pub to: String,
    /// Share of keys sent to `to`, in hundredths of a percent (0..=10_000).
    pub basis_points: u32,
    pub sticky: StickyKey,
}

/// What keeps a user on one side of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StickyKey {
    Cookie(String),
    Header(HeaderName),
    ClientAddr,
    /// No key: each request is split on its own.
    PerRequest,
}

impl std::fmt::Display for StickyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StickyKey::Cookie(c) => write!(f, "cookie:{c}"),
            StickyKey::Header(h) => write!(f, "header:{h}"),
            StickyKey::ClientAddr => write!(f, "client"),
            StickyKey::PerRequest => write!(f, "none"),
        }
    }
}
