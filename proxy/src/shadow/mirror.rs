//! Mirroring: the copy of a sampled request that goes to the candidate, off the client's path.
//!
//! How a request is shadowed, phase by phase ([`crate::forward`] calls in):
//! 1. routing ([`Mirror::begin`]): the route has a shadow and the request is served by the old
//!    side. Writes stop here unless the route opted in (counted as `writes_not_mirrored`); then
//!    the sample is drawn; a declared body over the cap stops it (`too_large`); and a slot of the
//!    route's in-flight bound is *tried*, never waited for: when none is free the shadow is
//!    dropped and counted (`dropped_in_flight`). Nothing here can hold up the client.
//! 2. request body ([`Mirror::request_body`]): chunks are copied (reference-counted `Bytes`, no
//!    byte copy) while they stream to the primary; past the cap the shadow is abandoned. At the
//!    end of the body the shadow task is spawned: the candidate (and, for noise learning, the
//!    second primary) get the request at once, concurrently with the primary.
//! 3. the primary's answer ([`Mirror::response_header`], [`Mirror::response_body`]): copied up to
//!    the cap as it streams to the client, and handed to the task when the request ends
//!    ([`Mirror::finish`]).
//!
//! The task has its own timeout for the candidate, holds the in-flight slot until it is done, and
//! records the outcome in [`super::results`]. The client's response never waits for it: the
//! only work on the client's path is copying references to body chunks.
//!
//! The copy carries the client's headers (minus hop-by-hop ones), the same `X-Forwarded-*`,
//! `X-Request-Id` and `Via` the primary gets, and [`MARKER`], so the candidate knows it is
//! shadow traffic. A client cannot send the marker itself: the primary never receives it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::answer::{self, Answer};
use super::compare::Difference;
use super::endpoint;
use super::redact;
use super::results::{
    self, Event, Example, Results, Sample, SampleAnswer, SampleDifference, SampleRequest,
};
use crate::config::ShadowSpec;
use crate::route_table::RouteTable;
use crate::upstream::Pool;

/// Marks a request as shadow traffic. Its value says which copy: `candidate` or
/// `second-primary`.
pub const MARKER: &str = "x-banyan-shadow";

/// Headers that belong to one connection and are never copied.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
    MARKER,
];

pub fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Per-route in-flight bounds, by route id. They outlive table versions, so a reload that keeps
/// a route's bound keeps its count of shadows in flight; a changed bound starts a new one.
#[derive(Debug, Default)]
pub struct Limiters {
    map: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
}

impl Limiters {
    pub fn get(&self, route: &str, max: usize) -> Arc<Semaphore> {
        let mut map = self.map.lock().unwrap();
        match map.get(route) {
            Some((m, s)) if *m == max => s.clone(),
            _ => {
                let s = Arc::new(Semaphore::new(max));
                map.insert(route.to_owned(), (max, s.clone()));
                s
            }
        }
    }

    /// Forgets the bounds of routes no longer shadowed.
    pub fn retain(&self, routes: &[&str]) {
        self.map
            .lock()
            .unwrap()
            .retain(|r, _| routes.contains(&r.as_str()));
    }
}

/// The process-wide part of shadowing: the HTTP client candidates are called with, and the
/// results store.
pub struct Shadower {
    client: reqwest::Client,
    pub results: Arc<Results>,
}

impl Shadower {
    pub fn new(results: Arc<Results>) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .http1_only()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()
            .expect("building the shadow HTTP client");
        Self { client, results }
    }
}

/// The request as the candidate gets it.
struct Copy {
    method: Method,
    /// Normalized path and query.
    target: String,
    headers: HeaderMap,
    body: Bytes,
}

enum Primary {
    Answer(Answer),
    TooLarge,
    Failed,
}

#[derive(Debug)]
enum Failure {
    Timeout,
    TooLarge,
    Error(String),
}

enum State {
    /// Copying the request body.
    Collecting {
        permit: OwnedSemaphorePermit,
        chunks: Vec<Bytes>,
        len: usize,
    },
    /// The task runs; the primary's answer is being copied for it.
    Fired {
        tx: oneshot::Sender<Primary>,
        status: u16,
        headers: HeaderMap,
        chunks: Vec<Bytes>,
        len: usize,
        too_large: bool,
    },
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

    fn route_id(&self) -> &str {
        &self.table.route(self.route).id
    }

    /// Decides whether this request is shadowed (see the module docs, step 1). `served_by` is the
    /// pool the client's request goes to; `edge` the headers the primary gets on top of the
    /// client's (`X-Forwarded-*`, `X-Request-Id`, `Via`).
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        shadower: &Arc<Shadower>,
        table: &Arc<RouteTable>,
        route: usize,
        served_by: &str,
        method: &Method,
        target: &str,
        client_headers: &HeaderMap,
        edge: &[(HeaderName, HeaderValue)],
    ) -> Option<Mirror> {
        let r = table.route(route);
        let spec = r.shadow.as_ref()?;
        if served_by == spec.to {
            return None;
        }
        let path = target.split('?').next().unwrap_or(target);
        if is_write(method) && !spec.writes {
            let ep = endpoint::template(method.as_str(), path);
            shadower.results.count(&r.id, &ep, Event::WriteNotMirrored);
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
            shadower.results.count(&r.id, &ep, Event::TooLarge);
            return None;
        }
        let Ok(permit) = table.shadow_limit(route)?.try_acquire_owned() else {
            shadower.results.count(&r.id, &ep, Event::DroppedInFlight);
            return None;
        };
        let mut headers = client_headers.clone();
        let named_in_connection: Vec<HeaderName> = headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for h in HOP_BY_HOP {
            headers.remove(*h);
        }
        for h in named_in_connection {
            headers.remove(h);
        }
        for h in ["x-forwarded-for", "x-forwarded-host"] {
            headers.remove(h);
        }
        for (k, v) in edge {
            headers.insert(k.clone(), v.clone());
        }
        Some(Mirror {
            shadower: shadower.clone(),
            table: table.clone(),
            route,
            endpoint: ep,
            method: method.clone(),
            target: target.to_owned(),
            headers,
            state: State::Collecting {
                permit,
                chunks: Vec::new(),
                len: 0,
            },
        })
    }

    /// The primary request is being retried on another backend: Pingora replays the body.
    pub fn retrying(&mut self) {
        if let State::Collecting { chunks, len, .. } = &mut self.state {
            chunks.clear();
            *len = 0;
        }
    }

    /// A chunk of the client's request body (or its end).
    pub fn request_body(&mut self, chunk: Option<&Bytes>, end: bool) {
        let max = self.spec().max_request_body;
        let State::Collecting { chunks, len, .. } = &mut self.state else {
            return;
        };
        if let Some(c) = chunk.filter(|c| !c.is_empty()) {
            *len += c.len();
            if *len > max {
                self.shadower.results.count(
                    &self.table.route(self.route).id,
                    &self.endpoint,
                    Event::TooLarge,
                );
                self.state = State::Done;
                return;
            }
            chunks.push(c.clone());
        }
        if end {
            self.fire();
        }
    }

    fn fire(&mut self) {
        let State::Collecting { permit, chunks, .. } =
            std::mem::replace(&mut self.state, State::Done)
        else {
            return;
        };
        let copy = Copy {
            method: self.method.clone(),
            target: self.target.clone(),
            headers: std::mem::take(&mut self.headers),
            body: concat(chunks),
        };
        let (tx, rx) = oneshot::channel();
        tokio::spawn(run(
            self.shadower.clone(),
            self.table.clone(),
            self.route,
            self.endpoint.clone(),
            copy,
            rx,
            permit,
        ));
        self.state = State::Fired {
            tx,
            status: 0,
            headers: HeaderMap::new(),
            chunks: Vec::new(),
            len: 0,
            too_large: false,
        };
    }

    /// The primary's response header, as the upstream sent it.
    pub fn response_header(&mut self, status: u16, h: &HeaderMap) {
        if let State::Fired {
            status: s, headers, ..
        } = &mut self.state
        {
            *s = status;
            headers.clone_from(h);
        }
    }

    /// A chunk of the primary's response body.
    pub fn response_body(&mut self, chunk: Option<&Bytes>) {
        let max = self.spec().max_response_body;
        if let State::Fired {
            chunks,
            len,
            too_large,
            ..
        } = &mut self.state
            && let Some(c) = chunk.filter(|c| !c.is_empty())
            && !*too_large
        {
            *len += c.len();
            if *len > max {
                *too_large = true;
                chunks.clear();
            } else {
                chunks.push(c.clone());
            }
        }
    }

    /// The client's request is over; `ok` when the primary's answer arrived whole.
    pub fn finish(mut self, ok: bool) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Fired {
                tx,
                status,
                headers,
                chunks,
                too_large,
                ..
            } => {
                let primary = if !ok || status == 0 {
                    Primary::Failed
                } else if too_large {
                    Primary::TooLarge
                } else {
                    Primary::Answer(Answer {
                        status,
                        headers,
                        body: concat(chunks),
                    })
                };
                let _ = tx.send(primary);
            }
            State::Collecting { .. } => {
                // The primary failed before its request body was through: nothing was mirrored.
                self.shadower
                    .results
                    .count(self.route_id(), &self.endpoint, Event::PrimaryFailed);
            }
            State::Done => {}
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
    copy: &Copy,
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
            .map_err(|e| Failure::Error(e.to_string()))?;
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

/// The shadow task: candidate (and second primary), then the primary's answer, then the verdict.
async fn run(
    shadower: Arc<Shadower>,
    table: Arc<RouteTable>,
    route: usize,
    ep: String,
    copy: Copy,
    primary: oneshot::Receiver<Primary>,
    _permit: OwnedSemaphorePermit,
) {
    let r = table.route(route);
    let spec = r.shadow.as_ref().expect("a shadowed route");
    let results = &shadower.results;
    let candidate = send(
        &shadower.client,
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
                    &shadower.client,
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
    let primary = match primary.await {
        Ok(Primary::Answer(a)) => a,
        Ok(Primary::TooLarge) => return results.count(&r.id, &ep, Event::TooLarge),
        Ok(Primary::Failed) | Err(_) => return results.count(&r.id, &ep, Event::PrimaryFailed),
    };
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
    // The second primary only teaches noise; when it failed, history still applies.
    let pair = match &second {
        Some(Ok(s)) => Some(answer::diff(&primary, s, &spec.headers, &spec.rules)),
        _ => None,
    };
    let learning = spec.second_primary.is_some();
    let verdict = results.compared(&r.id, &ep, diffs, learning, pair.as_deref());
    if verdict.findings.is_empty() {
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
    copy: &Copy,
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
        kind: results::describe_kind(d.kind),
        primary: value_at(&s.primary, &d.path),
        candidate: value_at(&s.candidate, &d.path),
    }
}
