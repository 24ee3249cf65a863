//! Mirroring: the copy of a sampled request that goes to the candidate, off the client's path.
//!
//! How a request is shadowed, phase by phase ([`crate::forward`] calls in):
//! 1. routing ([`Mirror::begin`]): the route has a shadow and the request is served by the old
//!    side. Writes stop here unless the route opted in (counted as `writes_not_mirrored`); then
//!    the sample is drawn; a declared body over the cap stops it (`too_large`); and a slot of the
//!    route's in-flight bound is *tried*, never waited for: when none is free the shadow is
//!    dropped and counted (`dropped_in_flight`).
//! 2. request body ([`Mirror::request_body`]): chunks are kept (reference-counted `Bytes`, no
//!    byte copy) while they stream to the primary; past the cap the shadow is abandoned.
//! 3. the primary's answer ([`Mirror::response_header`], [`Mirror::response_body`]): kept the
//!    same way, up to the cap, as it streams to the client.
//! 4. the end of the request ([`Mirror::finish`]): one message to the shadow thread with the
//!    request copy and the primary's answer. Nothing else crosses over.
//!
//! Everything else happens on the shadow thread ([`Shadower`]): the candidate (and, for noise
//! learning, the second primary) get the copy, concurrently, with the route's timeout; the
//! answers are compared; the outcome is recorded. The client's side never takes a lock the
//! shadow side holds, never waits on it and never wakes it: the shadow thread collects messages
//! on a short tick. Events counted on the client's side (drops, caps, writes not mirrored) travel
//! the same way. The inbox is bounded: when the shadow thread is that far behind, a job is shed
//! (counted as `dropped_in_flight`) and an event goes to the route's backlog
//! ([`super::bounds`]), so a starved shadow thread never costs memory.
//!
//! The copy carries the client's headers (minus hop-by-hop ones), the same `X-Forwarded-*`,
//! `X-Request-Id` and `Via` the primary gets, and [`MARKER`], so the candidate knows it is
//! shadow traffic. A client cannot send the marker itself: the primary never receives it.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::answer::{self, Answer};
use super::bounds::{Backlog, Backlogs};
use super::compare::Difference;
use super::endpoint;
use super::redact;
use super::results::{
    self, Event, Example, Results, Sample, SampleAnswer, SampleDifference, SampleRequest,
};
use crate::config::ShadowSpec;
use crate::edge::headers::{self, Disposition, EdgeRequest, Nominated};
use crate::route_table::RouteTable;
use crate::upstream::Pool;

/// Marks a request as shadow traffic. Its value says which copy: `candidate` or
/// `second-primary`.
pub const MARKER: &str = crate::edge::headers::SHADOW_MARKER;

pub fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The process-wide part of shadowing: the HTTP client candidates are called with, the runtime
/// shadow tasks run on, and the results store.
///
/// Shadow tasks run on their own thread, scheduled `SCHED_IDLE` on Linux: it only gets CPU time
/// no client request wants. On a saturated machine the shadow side slows down, its in-flight
/// bound fills and further shadows are dropped (and counted) instead of taking CPU from clients.
/// Where idle scheduling is refused, the thread runs at the lowest normal priority.
///
/// Its inbox is bounded ([`INBOX`] messages): what does not fit is counted in the route's
/// [`Backlog`] instead, so a starved shadow thread costs no memory (see [`super::bounds`]).
pub struct Shadower {
    inbox: std::sync::mpsc::SyncSender<Message>,
    pub results: Arc<Results>,
}

/// What the client's side sends the shadow thread.
enum Message {
    Event {
        route: String,
        endpoint: String,
        event: Event,
    },
    Job(Box<Job>),
}

/// A request to shadow, complete: the copy, the primary's answer, its in-flight slot.
struct Job {
    table: Arc<RouteTable>,
    route: usize,
    endpoint: String,
    copy: Replica,
    primary: Answer,
    _permit: OwnedSemaphorePermit,
}

/// Messages the shadow thread's inbox holds (about 1 MiB at most): at its 1 ms tick, room for
/// more than ten times the events of 100,000 requests/s before the backlogs take over.
const INBOX: usize = 16_384;

/// How often the shadow thread looks for messages: quickly while they come, backing off to
/// [`TICK_IDLE`] when none do.
const TICK_BUSY: Duration = Duration::from_millis(1);
const TICK_IDLE: Duration = Duration::from_millis(50);

/// Starts the shadow thread: it runs shadow jobs until the process ends.
fn start_shadow_thread(
    inbox: std::sync::mpsc::Receiver<Message>,
    results: Arc<Results>,
    backlogs: Backlogs,
) {
    std::thread::Builder::new()
        .name("banyan-shadow".into())
        .spawn(move || {
            let lowered = service_kit::priority::lower_current_thread();
            tracing::debug!(?lowered, "shadow thread priority");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building the shadow runtime");
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .http1_only()
                .connect_timeout(Duration::from_secs(1))
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(256)
                .build()
                .expect("building the shadow HTTP client");
            rt.block_on(drain(inbox, results, backlogs, client));
        })
        .expect("starting the shadow thread");
}

async fn drain(
    inbox: std::sync::mpsc::Receiver<Message>,
    results: Arc<Results>,
    backlogs: Backlogs,
    client: reqwest::Client,
) {
    let mut tick = TICK_BUSY;
    loop {
        tokio::time::sleep(tick).await;
        let mut any = false;
        loop {
            match inbox.try_recv() {
                Ok(Message::Event {
                    route,
                    endpoint,
                    event,
                }) => results.count(&route, &endpoint, event),
                Ok(Message::Job(job)) => {
                    tokio::spawn(run(client.clone(), results.clone(), *job));
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            }
            any = true;
        }
        any |= count_backlogs(&backlogs, &results);
        tick = if any {
            TICK_BUSY
        } else {
            (tick * 2).min(TICK_IDLE)
        };
    }
}

/// Counts what the routes' backlogs hold (under [`results::OTHER`]); true when anything was.
fn count_backlogs(backlogs: &Backlogs, results: &Results) -> bool {
    let mut any = false;
    for (route, backlog) in backlogs.load().iter() {
        for (event, n) in backlog.take() {
            results.count_many(route, results::OTHER, event, n);
            any = true;
        }
    }
    any
}

impl Shadower {
    /// Starts the shadow thread; it drains `backlogs` ([`crate::reload::LiveTable`] keeps them).
    pub fn new(results: Arc<Results>, backlogs: Backlogs) -> Self {
        let (shadower, rx) = Self::unstarted(results.clone(), INBOX);
        start_shadow_thread(rx, results, backlogs);
        shadower
    }

    /// A shadower and the receiving end of its inbox, with no thread reading it yet.
    fn unstarted(
        results: Arc<Results>,
        capacity: usize,
    ) -> (Self, std::sync::mpsc::Receiver<Message>) {
        let (inbox, rx) = std::sync::mpsc::sync_channel(capacity);
        (Self { inbox, results }, rx)
    }

    /// Reports a client-side event; into `backlog` when the inbox is full. Never waits.
    fn event(&self, route: &str, endpoint: &str, event: Event, backlog: &Backlog) {
        let sent = self.inbox.try_send(Message::Event {
            route: route.to_owned(),
            endpoint: endpoint.to_owned(),
            event,
        });
        if let Err(std::sync::mpsc::TrySendError::Full(_)) = sent {
            backlog.add(event);
        }
    }
}

/// The request as the candidate gets it.
struct Replica {
    method: Method,
    /// Normalized path and query.
    target: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Debug)]
enum Failure {
    Timeout,
    TooLarge,
    Error(String),
}

/// Bodies are *copied* as they pass, not kept by reference: a reference would pin the whole
/// read buffer it was cut from (kilobytes for a 70-byte answer) and stop Pingora from reusing it.
enum State {
    /// Keeping the request body.
    Request { body: BytesMut },
    /// The request body is complete; keeping the primary's answer.
    Answer {
        request_body: Bytes,
        status: u16,
        headers: HeaderMap,
        body: BytesMut,
    },
    /// Abandoned (counted) or handed over.
    Done,
}

/// A shadowed request's state in the client's request context.
pub struct Mirror {
    shadower: Arc<Shadower>,
    table: Arc<RouteTable>,
    route: usize,
    endpoint: String,
    method: Method,
    target: String,
    headers: HeaderMap,
    permit: Option<OwnedSemaphorePermit>,
    state: State,
}

impl Mirror {
    fn spec(&self) -> &ShadowSpec {
        self.table
            .route(self.route)
            .shadow
            .as_ref()
            .expect("a shadowed route")
    }

    fn abandon(&mut self, event: Event) {
        self.state = State::Done;
        self.permit = None;
        self.shadower.event(
            &self.table.route(self.route).id,
            &self.endpoint,
            event,
            self.backlog(),
        );
    }

    fn backlog(&self) -> &Backlog {
        &self
            .table
            .shadow_bound(self.route)
            .expect("a shadowed route")
            .backlog
    }

    /// Decides whether this request is shadowed (see the module docs, step 1). `served_by` is the
    /// pool the client's request goes to; `edge` gives the headers the primary gets on top of the
    /// client's (`X-Forwarded-*`, `X-Request-Id`, `Via`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn begin(
        shadower: &Arc<Shadower>,
        table: &Arc<RouteTable>,
        route: usize,
        served_by: &str,
        method: &Method,
        target: &str,
        client_headers: &HeaderMap,
        edge: &EdgeRequest<'_>,
    ) -> Option<Mirror> {
        let r = table.route(route);
        let spec = r.shadow.as_ref()?;
        let bound = table.shadow_bound(route)?;
        if served_by == spec.to {
            return None;
        }
        let path = target.split('?').next().unwrap_or(target);
        if is_write(method) && !spec.writes {
            let ep = endpoint::template(method.as_str(), path);
            shadower.event(&r.id, &ep, Event::WriteNotMirrored, &bound.backlog);
            return None;
        }
        if spec.basis_points < 10_000 && rand::random::<u32>() % 10_000 >= spec.basis_points {
            return None;
        }
        let ep = endpoint::template(method.as_str(), path);
        let declared = client_headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > spec.max_request_body) {
            shadower.event(&r.id, &ep, Event::TooLarge, &bound.backlog);
            return None;
        }
        let Ok(permit) = bound.slots.clone().try_acquire_owned() else {
            shadower.event(&r.id, &ep, Event::DroppedInFlight, &bound.backlog);
            return None;
        };
        // The edge's rules, as for the primary; the copy's body is framed anew, so the
        // framing headers go too.
        let nominated = Nominated::of(client_headers);
        let mut headers = HeaderMap::with_capacity(client_headers.len() + 6);
        for (name, value) in client_headers {
            if headers::request_header(name.as_str(), &nominated) == Disposition::Keep {
                headers.append(name.clone(), value.clone());
            }
        }
        for (name, value) in headers::request_additions(edge) {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        Some(Mirror {
            shadower: shadower.clone(),
            table: table.clone(),
            route,
            endpoint: ep,
            method: method.clone(),
            target: target.to_owned(),
            headers,
            permit: Some(permit),
            state: State::Request {
                body: BytesMut::with_capacity(declared.unwrap_or(0)),
            },
        })
    }

    /// The primary request is being retried on another backend: Pingora replays the body.
    pub fn retrying(&mut self) {
        if let State::Request { body } = &mut self.state {
            body.clear();
        }
    }

    /// A chunk of the client's request body (or its end).
    pub fn request_body(&mut self, chunk: Option<&[u8]>, end: bool) {
        let max = self.spec().max_request_body;
        let State::Request { body } = &mut self.state else {
            return;
        };
        if let Some(c) = chunk.filter(|c| !c.is_empty()) {
            if body.len() + c.len() > max {
                return self.abandon(Event::TooLarge);
            }
            body.extend_from_slice(c);
        }
        if end {
            let request_body = std::mem::take(body).freeze();
            self.state = State::Answer {
                request_body,
                status: 0,
                headers: HeaderMap::new(),
                body: BytesMut::new(),
            };
        }
    }

    /// The primary's response header, as the upstream sent it.
    pub fn response_header(&mut self, status: u16, h: &HeaderMap) {
        if let State::Answer {
            status: s, headers, ..
        } = &mut self.state
        {
            *s = status;
            headers.clone_from(h);
        }
    }

    /// A chunk of the primary's response body.
    pub fn response_body(&mut self, chunk: Option<&[u8]>) {
        let max = self.spec().max_response_body;
        if let State::Answer { body, .. } = &mut self.state
            && let Some(c) = chunk.filter(|c| !c.is_empty())
        {
            if body.len() + c.len() > max {
                return self.abandon(Event::TooLarge);
            }
            body.extend_from_slice(c);
        }
    }

    /// The client's request is over; `ok` when the primary's answer arrived whole. Hands the
    /// shadow over to the shadow thread.
    pub fn finish(mut self, ok: bool) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Answer {
                request_body,
                status,
                headers,
                body,
            } if ok && status > 0 => {
                let Some(permit) = self.permit.take() else {
                    return;
                };
                let job = Job {
                    table: self.table.clone(),
                    route: self.route,
                    endpoint: std::mem::take(&mut self.endpoint),
                    copy: Replica {
                        method: self.method.clone(),
                        target: std::mem::take(&mut self.target),
                        headers: std::mem::take(&mut self.headers),
                        body: request_body,
                    },
                    primary: Answer {
                        status,
                        headers,
                        body: body.freeze(),
                    },
                    _permit: permit,
                };
                let sent = self.shadower.inbox.try_send(Message::Job(Box::new(job)));
                if let Err(std::sync::mpsc::TrySendError::Full(dropped)) = sent {
                    // The shadow thread is that far behind: shed this one (its slot with it).
                    drop(dropped);
                    self.backlog().add(Event::DroppedInFlight);
                }
            }
            State::Done => {}
            // The primary failed or the client went away: nothing to compare with.
            _ => self.abandon(Event::PrimaryFailed),
        }
    }
}

fn concat(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap(),
        _ => {
            let mut b = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks {
                b.extend_from_slice(&c);
            }
            b.freeze()
        }
    }
}

/// Sends the copy to one backend of `pool` and reads the answer, within `timeout`.
async fn send(
    client: &reqwest::Client,
    pool: &Pool,
    copy: &Replica,
    marker: &'static str,
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, Failure> {
    let Some(backend) = pool.pick(&[]) else {
        return Err(Failure::Error(format!(
            "no available backend in {}",
            pool.name()
        )));
    };
    let mut headers = copy.headers.clone();
    headers.insert(MARKER, HeaderValue::from_static(marker));
    let url = format!("http://{}{}", backend.addr, copy.target);
    let exchange = async {
        let mut resp = client
            .request(copy.method.clone(), url)
            .headers(headers)
            .body(copy.body.clone())
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    // Out of rotation like any backend that refuses connections: the next
                    // shadows fail at once instead of trying again.
                    backend.mark_connect_failure(pool.spec.health.is_some());
                }
                Failure::Error(e.to_string())
            })?;
        let status = resp.status().as_u16();
        let headers = std::mem::take(resp.headers_mut());
        let mut chunks = Vec::new();
        let mut len = 0;
        while let Some(c) = resp
            .chunk()
            .await
            .map_err(|e| Failure::Error(e.to_string()))?
        {
            len += c.len();
            if len > max_body {
                return Err(Failure::TooLarge);
            }
            chunks.push(c);
        }
        Ok(Answer {
            status,
            headers,
            body: concat(chunks),
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Timeout),
    }
}

/// The shadow task: candidate and second primary at once, then the verdict.
async fn run(client: reqwest::Client, results: Arc<Results>, job: Job) {
    let Job {
        table,
        route,
        endpoint: ep,
        copy,
        primary,
        _permit,
    } = job;
    let r = table.route(route);
    let spec = r.shadow.as_ref().expect("a shadowed route");
    let candidate = send(
        &client,
        table.pool(&spec.to),
        &copy,
        "candidate",
        spec.timeout,
        spec.max_response_body,
    );
    let second = async {
        match &spec.second_primary {
            Some(name) => Some(
                send(
                    &client,
                    table.pool(name),
                    &copy,
                    "second-primary",
                    spec.timeout,
                    spec.max_response_body,
                )
                .await,
            ),
            None => None,
        }
    };
    let (candidate, second) = tokio::join!(candidate, second);
    let candidate = match candidate {
        Ok(a) => a,
        Err(Failure::Timeout) => return results.count(&r.id, &ep, Event::CandidateTimeout),
        Err(Failure::TooLarge) => return results.count(&r.id, &ep, Event::TooLarge),
        Err(Failure::Error(e)) => {
            tracing::debug!(route = %r.id, candidate = %spec.to, error = %e, "shadow request failed");
            return results.count(&r.id, &ep, Event::CandidateError);
        }
    };
    let diffs = answer::diff(&primary, &candidate, &spec.headers, &spec.rules);
    if results.rule_check_due(&r.id, spec.rules.len())
        && let Some(v) = answer::json_of(&primary.body)
    {
        let mut seen = vec![false; spec.rules.len()];
        spec.rules.mark_seen(&v, &mut seen);
        if let Some(c) = answer::json_of(&candidate.body) {
            spec.rules.mark_seen(&c, &mut seen);
        }
        results.rules_seen(&r.id, &spec.rules.names(), &seen);
    }
    // The second primary only teaches noise; when it failed, history still applies.
    let pair = match &second {
        Some(Ok(s)) => Some(answer::diff(&primary, s, &spec.headers, &spec.rules)),
        _ => None,
    };
    let learning = spec.second_primary.is_some();
    let verdict = results.compared(&r.id, &ep, diffs, learning, pair.as_deref());
    if verdict.findings.is_empty()
        || !results.wants_sample(&r.id, &verdict.endpoint, &verdict.findings)
    {
        return;
    }
    let sample = sample(
        &copy,
        &primary,
        &candidate,
        &verdict.findings,
        &verdict.noise,
        &ep,
    );
    let mut examples: Vec<(String, Example)> = Vec::new();
    for d in &verdict.findings {
        if examples.iter().any(|(t, _)| *t == d.template) {
            continue;
        }
        examples.push((d.template.clone(), example(&sample, d)));
    }
    results.mismatch(&r.id, &verdict.endpoint, examples, sample);
}

fn body_for_sample(a: &Answer) -> Value {
    match answer::json_of(&a.body) {
        Some(mut v) => {
            redact::redact_json(&mut v);
            let text = v.to_string();
            if text.len() > results::SAMPLE_BODY {
                Value::String(format!("{}… (cut)", truncate(&text, results::SAMPLE_BODY)))
            } else {
                v
            }
        }
        None => {
            let text = String::from_utf8_lossy(&a.body);
            Value::String(truncate(&text, results::SAMPLE_BODY).to_owned())
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn headers_for_sample(h: &HeaderMap) -> Vec<(String, String)> {
    redact::redact_headers(
        h.iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("(binary)"))),
    )
}

fn sample(
    copy: &Replica,
    primary: &Answer,
    candidate: &Answer,
    findings: &[Difference],
    noise: &[Difference],
    ep: &str,
) -> Sample {
    let secrets = redact::secrets_of(
        &copy.target,
        copy.headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
    );
    let answer = |a: &Answer| {
        let mut body = body_for_sample(a);
        redact::scrub(&mut body, &secrets);
        let mut headers = headers_for_sample(&a.headers);
        for (_, v) in &mut headers {
            redact::scrub_text(v, &secrets);
        }
        SampleAnswer {
            status: a.status,
            headers,
            body,
        }
    };
    let differences = findings
        .iter()
        .map(|d| (d, false))
        .chain(noise.iter().map(|d| (d, true)))
        .take(50)
        .map(|(d, noise)| SampleDifference {
            path: d.path.clone(),
            candidate_path: d.candidate_path.clone(),
            kind: results::describe_kind(d.kind),
            noise,
        })
        .collect();
    Sample {
        at: service_kit::clock::rfc3339(service_kit::clock::now_ms()),
        endpoint: ep.to_owned(),
        request: SampleRequest {
            method: copy.method.to_string(),
            target: redact::redact_target(&copy.target),
            headers: headers_for_sample(&copy.headers),
        },
        primary: answer(primary),
        candidate: answer(candidate),
        differences,
    }
}

/// The value at a difference's path in a (redacted) sample answer, shortened for a report.
fn value_at(a: &SampleAnswer, path: &str) -> String {
    let text = if path == "status" {
        a.status.to_string()
    } else if let Some(h) = path.strip_prefix("header:") {
        a.headers
            .iter()
            .find(|(k, _)| k == h)
            .map_or_else(|| "(absent)".to_owned(), |(_, v)| v.clone())
    } else if path == "body" {
        match &a.body {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    } else {
        let pointer = if path == "/" { "" } else { path };
        a.body
            .pointer(pointer)
            .map_or_else(|| "(absent)".to_owned(), Value::to_string)
    };
    let short = truncate(&text, 200);
    if short.len() < text.len() {
        format!("{short}…")
    } else {
        text
    }
}

fn example(s: &Sample, d: &Difference) -> Example {
    Example {
        request: format!("{} {}", s.request.method, s.request.target),
        path: d.path.clone(),
        candidate_path: d.candidate_path.clone(),
        kind: results::describe_kind(d.kind),
        primary: value_at(&s.primary, &d.path),
        candidate: value_at(&s.candidate, d.candidate_path.as_deref().unwrap_or(&d.path)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::metrics::Metrics;
    use crate::shadow::bounds::Bounds;
    use crate::shadow::compare::{PathPattern, Rules, compare};

    /// A shadow thread that does not get the CPU: what does not fit in its inbox waits in the
    /// route's backlog, and nothing is lost once it runs.
    #[test]
    fn events_beyond_a_full_inbox_wait_in_the_backlog_and_are_all_counted() {
        let results = Arc::new(Results::new(Arc::new(Metrics::new())));
        let bounds = Bounds::default();
        let bound = bounds.get("r", 1);
        bounds.retain(&["r"]);
        let (shadower, inbox) = Shadower::unstarted(results.clone(), 2);
        for _ in 0..5 {
            shadower.event("r", "GET /x", Event::DroppedInFlight, &bound.backlog);
        }
        assert!(count_backlogs(&bounds.backlogs(), &results));
        let totals = |results: &Results| results.snapshot()["r"].totals().dropped_in_flight;
        assert_eq!(totals(&results), 3, "three waited in the backlog");
        assert_eq!(
            results.snapshot()["r"].endpoints[results::OTHER]
                .counts
                .dropped_in_flight,
            3
        );
        for m in inbox.try_iter() {
            let Message::Event {
                route,
                endpoint,
                event,
            } = m
            else {
                panic!("only events were sent");
            };
            results.count(&route, &endpoint, event);
        }
        assert_eq!(
            totals(&results),
            5,
            "the two in the inbox, under their endpoint"
        );
        assert!(!count_backlogs(&bounds.backlogs(), &results), "taken once");
        assert_eq!(totals(&results), 5);
    }

    fn answer(body: Value) -> SampleAnswer {
        SampleAnswer {
            status: 200,
            headers: Vec::new(),
            body,
        }
    }

    #[test]
    fn an_example_reads_each_side_where_its_element_is() {
        // The candidate returns the same two hits in the other order, one price changed.
        let primary = json!({"hits": [{"id": 10, "price": 17671}, {"id": 30, "price": 17615}]});
        let candidate = json!({"hits": [{"id": 30, "price": 17616}, {"id": 10, "price": 17671}]});
        let rules = Rules {
            unordered: vec![PathPattern::parse("/hits").unwrap()],
            ..Rules::default()
        };
        let d = compare(&primary, &candidate, &rules);
        assert_eq!(d.len(), 1, "{d:?}");
        let s = Sample {
            at: String::new(),
            endpoint: "GET /api/search".into(),
            request: SampleRequest {
                method: "GET".into(),
                target: "/api/search?q=basket".into(),
                headers: Vec::new(),
            },
            primary: answer(primary),
            candidate: answer(candidate),
            differences: Vec::new(),
        };
        let ex = example(&s, &d[0]);
        assert_eq!(ex.path, "/hits/1/price");
        assert_eq!(ex.candidate_path.as_deref(), Some("/hits/0/price"));
        assert_eq!(
            (ex.primary.as_str(), ex.candidate.as_str()),
            ("17615", "17616")
        );
    }
}
