//! The shadow results store: what every comparison, drop and failure added up to, per route,
//! per endpoint template and per field template, plus a bounded set of redacted samples.
//!
//! Everything is counted twice: into the totals this process shows, and into a pending delta
//! that [`super::share`] moves to Redis every second when several proxies share results. Sizes
//! are bounded whatever the traffic: at most [`MAX_ENDPOINTS`] endpoint templates per route and
//! [`MAX_FIELDS`] field templates per endpoint (the rest are counted under [`OTHER`], as are the
//! events a saturated shadow thread took in bulk, [`super::bounds`]), at most
//! [`MAX_SAMPLES`] samples per route, each body cut at [`SAMPLE_BODY`] bytes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::compare::{DiffKind, Difference};
use super::noise;
use crate::metrics::Metrics;

pub(crate) const MAX_ENDPOINTS: usize = 200;
pub(crate) const MAX_FIELDS: usize = 100;
pub(crate) const MAX_SAMPLES: usize = 50;
pub(crate) const SAMPLE_BODY: usize = 16 * 1024;
/// Where endpoints and fields beyond the caps are counted.
pub(crate) const OTHER: &str = "(other)";

macro_rules! counts {
    ($($name:ident),* $(,)?) => {
        /// Per endpoint: what happened to the requests of a shadowed route.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub(crate) struct Counts {
            $(pub(crate) $name: u64,)*
        }

        impl Counts {
            /// Every counter by name (the Redis hash fields).
            pub(crate) fn named(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }

            /// Adds `n` to the counter `name`; false when no counter has that name.
            pub(crate) fn add_named(&mut self, name: &str, n: u64) -> bool {
                match name {
                    $(stringify!($name) => self.$name += n,)*
                    _ => return false,
                }
                true
            }

            pub(crate) fn add(&mut self, other: &Counts) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

counts!(
    // Both answers arrived and were compared: matched + mismatched + noise_only.
    compared,
    matched,
    mismatched,
    // Differed only in fields classified as noise.
    noise_only,
    // Not mirrored: the route's in-flight bound was reached (or the shadow thread's inbox was
    // full).
    dropped_in_flight,
    // Not mirrored (request body) or not compared (an answer) because over the cap.
    too_large,
    // The candidate could not be reached or broke the exchange.
    candidate_errors,
    candidate_timeouts,
    // The client's own request failed or was abandoned: nothing to compare with.
    primary_failed,
    // A write on a route that has not opted in: never sent to the candidate.
    writes_not_mirrored,
    // Noise learning: the two primaries were compared.
    primary_pairs,
);

/// What one comparison found, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Matched,
    /// Differences only in fields learned (or configured) as noise.
    NoiseOnly,
    Mismatched,
}

impl Comparison {
    /// The `outcome` label of `banyan_shadow_requests_total`.
    fn outcome(self) -> &'static str {
        match self {
            Comparison::Matched => "matched",
            Comparison::NoiseOnly => "noise_only",
            Comparison::Mismatched => "mismatched",
        }
    }
}

/// One thing that happened to a sampled (or write) request other than a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    DroppedInFlight,
    TooLarge,
    CandidateError,
    CandidateTimeout,
    PrimaryFailed,
    WriteNotMirrored,
}

impl Event {
    pub(crate) fn outcome(self) -> &'static str {
        match self {
            Event::DroppedInFlight => "dropped_in_flight",
            Event::TooLarge => "too_large",
            Event::CandidateError => "candidate_error",
            Event::CandidateTimeout => "candidate_timeout",
            Event::PrimaryFailed => "primary_failed",
            Event::WriteNotMirrored => "write_not_mirrored",
        }
    }

    fn apply(self, c: &mut Counts, n: u64) {
        match self {
            Event::DroppedInFlight => c.dropped_in_flight += n,
            Event::TooLarge => c.too_large += n,
            Event::CandidateError => c.candidate_errors += n,
            Event::CandidateTimeout => c.candidate_timeouts += n,
            Event::PrimaryFailed => c.primary_failed += n,
            Event::WriteNotMirrored => c.writes_not_mirrored += n,
        }
    }
}

/// One concrete difference, for reading: where, what kind, both values (redacted, shortened).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Example {
    /// `GET /api/search?q=lamp` (secret query values redacted).
    pub request: String,
    /// The concrete path (`/hits/3/price`), at the primary's array positions.
    pub path: String,
    /// The candidate's side, when elsewhere (an element that moved in an unordered array).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_path: Option<String>,
    pub kind: String,
    pub primary: String,
    pub candidate: String,
}

/// Per field template of an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FieldStats {
    /// Requests whose candidate answer differed here (not noise).
    pub mismatches: u64,
    /// Requests whose candidate answer differed here, classified as noise.
    pub noise: u64,
    /// Primary pairs that differed here (noise learning).
    pub primary_differed: u64,
    /// The latest mismatch here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<Example>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EndpointStats {
    pub counts: Counts,
    pub fields: BTreeMap<String, FieldStats>,
}

impl EndpointStats {
    /// The name `template` is counted under: itself, or [`OTHER`] past [`MAX_FIELDS`].
    fn field_name<'a>(&self, template: &'a str) -> &'a str {
        if self.fields.len() >= MAX_FIELDS && !self.fields.contains_key(template) {
            OTHER
        } else {
            template
        }
    }

    fn field(&mut self, template: &str) -> &mut FieldStats {
        let key = self.field_name(template).to_owned();
        self.fields.entry(key).or_default()
    }

    /// Applies `f` once per distinct field name among `templates` (several templates may fall
    /// under [`OTHER`]; a request counts there once).
    fn each_field(&mut self, templates: &[String], f: impl Fn(&mut FieldStats)) {
        let mut done: Vec<String> = Vec::with_capacity(templates.len());
        for t in templates {
            let name = self.field_name(t).to_owned();
            if !done.contains(&name) {
                f(self.fields.entry(name.clone()).or_default());
                done.push(name);
            }
        }
    }

    /// Whether history calls differences at `template` noise.
    pub(crate) fn learned_noise(&self, template: &str) -> bool {
        let differed = self.fields.get(template).map_or(0, |f| f.primary_differed);
        noise::is_noise(self.counts.primary_pairs, differed)
    }
}

/// A request whose candidate answer differed, with both answers (redacted) for a human to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sample {
    pub at: String,
    pub endpoint: String,
    pub request: SampleRequest,
    pub primary: SampleAnswer,
    pub candidate: SampleAnswer,
    pub differences: Vec<SampleDifference>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SampleRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SampleAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// JSON bodies as JSON (secret fields redacted); others as text, cut at [`SAMPLE_BODY`].
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SampleDifference {
    pub path: String,
    /// The candidate's side, when elsewhere (see [`Difference::candidate_path`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_path: Option<String>,
    pub kind: String,
    pub noise: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RouteStats {
    pub endpoints: BTreeMap<String, EndpointStats>,
    /// Newest first.
    #[serde(default)]
    pub samples: VecDeque<Sample>,
    /// Per comparison rule (`ignore /hits/*/score`), in how many of the answers looked at some
    /// field matched it: a rule at 0 matches nothing (a typo?).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, u64>,
    /// Answers looked at for [`RouteStats::rules`].
    #[serde(default)]
    pub rules_checked: u64,
}

impl RouteStats {
    /// The name `endpoint` is counted under: itself, or [`OTHER`] once the route has
    /// [`MAX_ENDPOINTS`] others.
    fn name_of<'a>(&self, endpoint: &'a str) -> &'a str {
        if self.endpoints.len() >= MAX_ENDPOINTS && !self.endpoints.contains_key(endpoint) {
            OTHER
        } else {
            endpoint
        }
    }

    fn endpoint(&mut self, endpoint: &str) -> (String, &mut EndpointStats) {
        let name = self.name_of(endpoint).to_owned();
        let stats = self.endpoints.entry(name.clone()).or_default();
        (name, stats)
    }

    pub(crate) fn totals(&self) -> Counts {
        let mut c = Counts::default();
        for e in self.endpoints.values() {
            c.add(&e.counts);
        }
        c
    }

    pub(crate) fn add_sample(&mut self, sample: Sample) {
        self.samples.push_front(sample);
        self.samples.truncate(MAX_SAMPLES);
    }
}

/// Results of all routes, by route id.
pub(crate) type Snapshot = BTreeMap<String, RouteStats>;

/// What a comparison came to, for the caller to build examples and a sample from.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// The endpoint name counted under (may be [`OTHER`]).
    pub endpoint: String,
    pub findings: Vec<Difference>,
    pub noise: Vec<Difference>,
}

#[derive(Default)]
struct Store {
    totals: Snapshot,
    pending: Snapshot,
    /// Per route, when its last sample was taken.
    last_sample: std::collections::HashMap<String, std::time::Instant>,
}

/// Samples per route are taken at most this often, unless a field has no example yet: a
/// candidate failing every request must not cost a sample per request.
pub(crate) const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// How many answers of a route are always checked against its rules.
pub(crate) const RULE_CHECKS: u64 = 20;

impl Store {
    /// Applies `f` to the endpoint's stats in the totals and in the pending delta.
    fn both<R>(
        &mut self,
        route: &str,
        endpoint: &str,
        mut f: impl FnMut(&mut EndpointStats) -> R,
    ) -> (String, R) {
        let (name, stats) = self
            .totals
            .entry(route.to_owned())
            .or_default()
            .endpoint(endpoint);
        let r = f(stats);
        let (_, pending) = self
            .pending
            .entry(route.to_owned())
            .or_default()
            .endpoint(&name);
        f(pending);
        (name, r)
    }
}

pub(crate) struct Results {
    store: Mutex<Store>,
    metrics: Arc<Metrics>,
}

fn kind_name(k: DiffKind) -> &'static str {
    match k {
        DiffKind::Missing => "missing in candidate",
        DiffKind::Extra => "only in candidate",
        DiffKind::Type => "type differs",
        DiffKind::Value => "value differs",
        DiffKind::Unmatched => "no equal element in candidate",
    }
}

pub(crate) fn describe_kind(k: DiffKind) -> String {
    kind_name(k).to_owned()
}

impl Results {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            store: Mutex::default(),
            metrics,
        }
    }

    pub(crate) fn count(&self, route: &str, endpoint: &str, event: Event) {
        self.count_many(route, endpoint, event, 1);
    }

    /// Records `n` times the same event (a route's backlog, [`super::bounds`]).
    pub(crate) fn count_many(&self, route: &str, endpoint: &str, event: Event, n: u64) {
        let (name, ()) = self
            .store
            .lock()
            .unwrap()
            .both(route, endpoint, |e| event.apply(&mut e.counts, n));
        self.metrics
            .shadow_outcome(route, &name, event.outcome(), n);
    }

    /// Records one comparison. `candidate` are the candidate's differences from the primary.
    /// With noise `learning` on, `pair` holds the two primaries' differences for this request
    /// (`None` when the second primary did not answer: history alone then classifies).
    pub(crate) fn compared(
        &self,
        route: &str,
        endpoint: &str,
        candidate: Vec<Difference>,
        learning: bool,
        pair: Option<&[Difference]>,
    ) -> Verdict {
        let mut store = self.store.lock().unwrap();
        let this_request = pair.unwrap_or_default();
        let mut primary_templates: Vec<String> =
            this_request.iter().map(|d| d.template.clone()).collect();
        primary_templates.sort_unstable();
        primary_templates.dedup();
        // Learn first, so this request's pair counts toward the history it is judged by.
        if pair.is_some() {
            store.both(route, endpoint, |e| {
                e.counts.primary_pairs += 1;
                e.each_field(&primary_templates, |f| f.primary_differed += 1);
            });
        }
        let route_stats = store.totals.entry(route.to_owned()).or_default();
        let learned = route_stats.endpoints.get(route_stats.name_of(endpoint));
        let (findings, noise) = noise::classify(candidate, this_request, |t| {
            learning && learned.is_some_and(|e| e.learned_noise(t))
        });
        let templates = |d: &[Difference]| {
            let mut t: Vec<String> = d.iter().map(|d| d.template.clone()).collect();
            t.sort_unstable();
            t.dedup();
            t
        };
        let (finding_t, noise_t) = (templates(&findings), templates(&noise));
        let comparison = if !findings.is_empty() {
            Comparison::Mismatched
        } else if !noise.is_empty() {
            Comparison::NoiseOnly
        } else {
            Comparison::Matched
        };
        let (name, ()) = store.both(route, endpoint, |e| {
            e.counts.compared += 1;
            match comparison {
                Comparison::Mismatched => e.counts.mismatched += 1,
                Comparison::NoiseOnly => e.counts.noise_only += 1,
                Comparison::Matched => e.counts.matched += 1,
            }
            e.each_field(&finding_t, |f| f.mismatches += 1);
            e.each_field(&noise_t, |f| f.noise += 1);
        });
        drop(store);
        self.metrics
            .shadow_outcome(route, &name, comparison.outcome(), 1);
        for t in &finding_t {
            self.metrics.shadow_field(route, &name, t, "mismatch");
        }
        for t in &noise_t {
            self.metrics.shadow_field(route, &name, t, "noise");
        }
        Verdict {
            endpoint: name,
            findings,
            noise,
        }
    }

    /// Stores examples (template -> example) and a sample of a mismatched request.
    pub(crate) fn mismatch(
        &self,
        route: &str,
        endpoint: &str,
        examples: Vec<(String, Example)>,
        sample: Sample,
    ) {
        let mut store = self.store.lock().unwrap();
        store.both(route, endpoint, |e| {
            for (t, ex) in &examples {
                e.field(t).example = Some(ex.clone());
            }
        });
        let store = &mut *store;
        for snap in [&mut store.totals, &mut store.pending] {
            snap.entry(route.to_owned())
                .or_default()
                .add_sample(sample.clone());
        }
    }

    /// Whether the rules should be checked against this compared answer: the first
    /// [`RULE_CHECKS`] answers of a route, then every hundredth while a rule has matched nothing
    /// (so a typo keeps being looked for, at little cost, and a route whose rules all matched
    /// costs nothing).
    pub(crate) fn rule_check_due(&self, route: &str, rules: usize) -> bool {
        if rules == 0 {
            return false;
        }
        let store = self.store.lock().unwrap();
        let Some(r) = store.totals.get(route) else {
            return true;
        };
        r.rules_checked < RULE_CHECKS
            || (r.rules.values().any(|n| *n == 0) && r.totals().compared % 100 == 0)
    }

    /// Records which rules (`names`, in order) matched a field of one compared answer.
    pub(crate) fn rules_seen(&self, route: &str, names: &[String], seen: &[bool]) {
        let mut store = self.store.lock().unwrap();
        let Store {
            totals, pending, ..
        } = &mut *store;
        for stats in [totals, pending] {
            let r = stats.entry(route.to_owned()).or_default();
            r.rules_checked += 1;
            for (name, hit) in names.iter().zip(seen) {
                *r.rules.entry(name.clone()).or_default() += u64::from(*hit);
            }
        }
    }

    /// Whether a mismatch with `findings` should be sampled: always when one of its fields has
    /// no example yet, else at most every [`SAMPLE_EVERY`] per route. Claims the slot.
    pub(crate) fn wants_sample(
        &self,
        route: &str,
        endpoint: &str,
        findings: &[Difference],
    ) -> bool {
        let mut store = self.store.lock().unwrap();
        let missing_example = store
            .totals
            .get(route)
            .and_then(|r| r.endpoints.get(endpoint))
            .is_none_or(|e| {
                findings.iter().any(|d| {
                    e.fields
                        .get(e.field_name(&d.template))
                        .is_none_or(|f| f.example.is_none())
                })
            });
        let now = std::time::Instant::now();
        let due = store
            .last_sample
            .get(route)
            .is_none_or(|t| now.duration_since(*t) >= SAMPLE_EVERY);
        if missing_example || due {
            store.last_sample.insert(route.to_owned(), now);
            true
        } else {
            false
        }
    }

    /// One route's counts so far, over its endpoints (what a rollout's shadow gate judges).
    pub(crate) fn route_totals(&self, route: &str) -> Counts {
        let store = self.store.lock().unwrap();
        store
            .totals
            .get(route)
            .map(RouteStats::totals)
            .unwrap_or_default()
    }

    /// This process's totals.
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.store.lock().unwrap().totals.clone()
    }

    /// What was counted since the last flush, not yet shared.
    pub(crate) fn pending(&self) -> Snapshot {
        self.store.lock().unwrap().pending.clone()
    }

    /// Takes what was counted since the last call (for sharing).
    pub(crate) fn take_pending(&self) -> Snapshot {
        std::mem::take(&mut self.store.lock().unwrap().pending)
    }

    /// Puts back a delta that could not be shared, so it is sent next time.
    pub(crate) fn restore_pending(&self, delta: Snapshot) {
        let mut store = self.store.lock().unwrap();
        let mut merged = delta;
        merge(&mut merged, std::mem::take(&mut store.pending));
        store.pending = merged;
    }

    /// Forgets everything (the admin API's reset).
    pub(crate) fn reset(&self) {
        *self.store.lock().unwrap() = Store::default();
    }
}

/// Adds `from` into `into`: counts summed, the newer example and samples kept.
pub(crate) fn merge(into: &mut Snapshot, from: Snapshot) {
    for (route, r) in from {
        let target = into.entry(route).or_default();
        for (name, e) in r.endpoints {
            let t = target.endpoints.entry(name).or_default();
            t.counts.add(&e.counts);
            for (field, f) in e.fields {
                let tf = t.fields.entry(field).or_default();
                tf.mismatches += f.mismatches;
                tf.noise += f.noise;
                tf.primary_differed += f.primary_differed;
                if f.example.is_some() {
                    tf.example = f.example;
                }
            }
        }
        for s in r.samples.into_iter().rev() {
            target.add_sample(s);
        }
        target.rules_checked += r.rules_checked;
        for (rule, n) in r.rules {
            *target.rules.entry(rule).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(t: &str) -> Difference {
        Difference {
            path: t.replace('*', "0"),
            candidate_path: None,
            template: t.to_owned(),
            kind: DiffKind::Value,
        }
    }

    fn results() -> Results {
        Results::new(Arc::new(Metrics::new()))
    }

    #[test]
    fn comparisons_are_counted_per_endpoint_and_field() {
        let r = results();
        let ep = "GET /api/search";
        r.compared("search", ep, vec![], false, None);
        let v = r.compared(
            "search",
            ep,
            vec![diff("/hits/*/price"), diff("/hits/*/price")],
            false,
            None,
        );
        assert_eq!(v.findings.len(), 2);
        r.count("search", ep, Event::CandidateTimeout);
        let snap = r.snapshot();
        let e = &snap["search"].endpoints[ep];
        assert_eq!(
            (e.counts.compared, e.counts.matched, e.counts.mismatched),
            (2, 1, 1)
        );
        assert_eq!(e.counts.candidate_timeouts, 1);
        assert_eq!(
            e.fields["/hits/*/price"].mismatches, 1,
            "counted once per request"
        );
        // The pending delta holds the same, once; then it is empty.
        assert_eq!(r.take_pending(), snap);
        assert!(r.take_pending().is_empty());
    }

    #[test]
    fn noise_from_this_request_and_from_history() {
        let r = results();
        let ep = "GET /x";
        // The primaries differ at /at on this request: noise at once.
        let v = r.compared("x", ep, vec![diff("/at")], true, Some(&[diff("/at")]));
        assert_eq!((v.findings.len(), v.noise.len()), (0, 1));
        for _ in 0..4 {
            r.compared("x", ep, vec![], true, Some(&[diff("/at")]));
        }
        // The primaries agreed this time, but /at differed in 5 of 6 pairs: still noise.
        let v = r.compared("x", ep, vec![diff("/at"), diff("/price")], true, Some(&[]));
        assert_eq!(v.findings, vec![diff("/price")]);
        let snap = r.snapshot();
        let e = &snap["x"].endpoints[ep];
        assert_eq!(e.counts.primary_pairs, 6);
        assert_eq!(e.fields["/at"].noise, 2);
        assert_eq!(e.fields["/at"].mismatches, 0);
        assert_eq!(e.fields["/price"].mismatches, 1);
        assert_eq!(
            (e.counts.noise_only, e.counts.mismatched, e.counts.matched),
            (1, 1, 4)
        );
        // The second primary failed: history alone says noise, and no pair is counted.
        let v = r.compared("x", ep, vec![diff("/at")], true, None);
        assert_eq!(v.noise.len(), 1);
        assert_eq!(r.snapshot()["x"].endpoints[ep].counts.primary_pairs, 6);
        // Without noise learning, history is not consulted.
        let v = r.compared("x", ep, vec![diff("/at")], false, None);
        assert_eq!(v.findings.len(), 1);
    }

    #[test]
    fn sizes_are_bounded() {
        let r = results();
        for i in 0..MAX_ENDPOINTS + 10 {
            r.compared("big", &format!("GET /e{i}"), vec![], false, None);
        }
        let fields: Vec<Difference> = (0..MAX_FIELDS + 10)
            .map(|i| diff(&format!("/f{i}")))
            .collect();
        r.compared("big", "GET /e0", fields, false, None);
        let sample = Sample {
            at: String::new(),
            endpoint: "GET /e0".into(),
            request: SampleRequest {
                method: "GET".into(),
                target: "/e0".into(),
                headers: vec![],
            },
            primary: SampleAnswer {
                status: 200,
                headers: vec![],
                body: serde_json::Value::Null,
            },
            candidate: SampleAnswer {
                status: 200,
                headers: vec![],
                body: serde_json::Value::Null,
            },
            differences: vec![],
        };
        for _ in 0..MAX_SAMPLES + 5 {
            r.mismatch("big", "GET /e0", vec![], sample.clone());
        }
        let snap = r.snapshot();
        let route = &snap["big"];
        assert_eq!(route.endpoints.len(), MAX_ENDPOINTS + 1);
        assert_eq!(route.endpoints[OTHER].counts.compared, 10);
        assert_eq!(route.endpoints["GET /e0"].fields.len(), MAX_FIELDS + 1);
        assert_eq!(route.endpoints["GET /e0"].fields[OTHER].mismatches, 1);
        assert_eq!(route.samples.len(), MAX_SAMPLES);
    }

    #[test]
    fn merging_adds_counts_and_keeps_newest_samples() {
        let (a, b) = (results(), results());
        a.compared("r", "GET /", vec![diff("/v")], false, None);
        b.compared("r", "GET /", vec![diff("/v")], false, None);
        b.compared("r", "GET /", vec![], false, None);
        let mut all = a.snapshot();
        merge(&mut all, b.snapshot());
        let e = &all["r"].endpoints["GET /"];
        assert_eq!((e.counts.compared, e.fields["/v"].mismatches), (3, 2));
        let mut c = Counts::default();
        assert!(c.add_named("compared", 2));
        assert!(!c.add_named("nonsense", 1));
        assert_eq!(c.named()[0], ("compared", 2));
    }
}
