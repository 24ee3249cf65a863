//! A route as JSON: what the admin API's `/routes` shows of each route, and what `banyan check`
//! and `banyan routes` print from, so the file, the live table and the command line describe a
//! route in one way.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::model::RouteSpec;

pub(crate) fn route(r: &RouteSpec) -> Value {
    json!({
        "id": r.id,
        "path": r.path,
        "methods": r.methods.as_ref().map(|ms| ms.iter().map(ToString::to_string).collect::<Vec<_>>()),
        "headers": r.headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
        "upstream": r.upstream,
        "split": r.split.as_ref().map(|sp| json!({
            "to": sp.to,
            "percent": f64::from(sp.basis_points) / 100.0,
            "sticky": sp.sticky.to_string(),
        })),
        "shadow": r.shadow.as_ref().map(|sh| json!({
            "to": sh.to,
            "percent": f64::from(sh.basis_points) / 100.0,
            "writes": sh.writes,
            "second_primary": sh.second_primary,
            "timeout_ms": sh.timeout.as_millis() as u64,
            "max_in_flight": sh.max_in_flight,
        })),
        "rollout": r.rollout.as_ref().map(|ro| json!({
            "to": ro.to,
            "steps": ro.steps,
            "interval_ms": ro.interval.as_millis() as u64,
            "min_requests": ro.gates.min_requests,
            "max_error_delta": ro.gates.max_error_delta,
            "max_p99_ratio": ro.gates.max_p99_ratio,
            "max_mismatch_percent": ro.gates.max_mismatch_percent,
            "min_compared": ro.gates.min_compared,
            "approve_at": ro.approve_at,
            "failures": ro.failures,
            "after": ro.after,
            "fingerprint": r.split.as_ref().map(|sp| ro.fingerprint(&sp.sticky)),
        })),
        "fallback": r.fallback,
        "fallback_writes": r.fallback_writes,
        "breaker": r.breaker.enabled.then(|| json!({
            "window_ms": r.breaker.window.as_millis() as u64,
            "min_requests": r.breaker.min_requests,
            "error_percent": r.breaker.error_percent,
            "reset_ms": r.breaker.reset.as_millis() as u64,
            "probes": r.breaker.probes,
            "statuses": r.breaker.statuses,
        })),
    })
}
