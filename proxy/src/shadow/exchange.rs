//! The exchange with the candidate (and, for noise learning, a second primary): the copy sent
//! concurrently with the route's timeout, the answers compared, the outcome recorded.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};

use super::answer::{self, Answer};
use super::client::{self, Failed};
use super::lanes;
use super::results::{Event, Example, Results};
use crate::upstream::Pool;

use super::mirror::MARKER;
use super::sample::{example, sample};
use super::thread::Job;

/// The request as the candidate gets it.
pub(super) struct Replica {
    pub(super) method: Method,
    /// Normalized path and query.
    pub(super) target: String,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// Sends the copy to one backend of `pool` and reads the answer, within `timeout`.
async fn send(
    pool: &Pool,
    copy: &Replica,
    marker: &'static str,
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, Failed> {
    let Some(backend) = pool.pick(&[]) else {
        return Err(Failed::Connect);
    };
    let request = client::Request {
        method: &copy.method,
        target: &copy.target,
        headers: &copy.headers,
        marker: (MARKER, marker),
        body: &copy.body,
    };
    let limits = client::Limits {
        connect: CONNECT_TIMEOUT.min(timeout),
        read: timeout,
        idle: pool.spec.idle_timeout,
        max_body,
    };
    // Within `timeout`: the client holds every wait to the copy's deadline (no timer here).
    match lanes::exchange(backend.addr, &request, limits).await {
        Err(Failed::Connect) => {
            // Out of rotation like any backend that refuses connections: the next shadows
            // fail at once instead of trying again.
            backend.mark_connect_failure(pool.spec.health.is_some());
            Err(Failed::Connect)
        }
        r => r,
    }
}

/// How long a shadow waits for a connection to the candidate (within the route's timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The shadow task: candidate and second primary at once, then the verdict.
pub(super) async fn run(results: Arc<Results>, job: Job) {
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
        Err(Failed::Timeout) => return results.count(&r.id, &ep, Event::CandidateTimeout),
        Err(Failed::TooLarge) => return results.count(&r.id, &ep, Event::TooLarge),
        Err(e) => {
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
