//! How far the migration is: `GET /status` (what `banyan status` prints, and the one source of
//! the dashboard, [`super::dashboard`]), `GET /history`, and the operator's actions on rollouts
//! (`POST /rollouts/{route}/{approve|pause|resume|rollback}`, which need the admin token).
//!
//! `GET /status` holds, besides each route's phase and counters since start: each side's
//! traffic over the last minute (requests/s, error rate, p50, p99: [`super::trend`]), the
//! extracted share of the last five minutes, each shadowed route's comparison counts and most
//! differing fields with a redacted example, who takes each route's writes, the reloads and
//! the last applied tables. `?series=true` adds each route's minutes of the last hour (the
//! dashboard's charts), which is larger and asked for less often.
//!
//! Which upstreams are the monolith is read off the table, since the file has no word for it:
//! the upstreams routes fall back to, the old side of every split, shadow and rollout, and the
//! upstream of the catch-all route `/`. Every other upstream a route sends to is an extracted
//! service. A table that names none of these (nothing has started moving) shows every route as
//! legacy: the status never claims a migration it cannot see.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AdminState;
use super::trend::Reading;
use crate::rollout::control::{Action, Refused};
use crate::rollout::store::Entry;
use crate::route_table::RouteTable;
use crate::shadow::results::Snapshot;

/// How many of the latest applied tables the status lists.
const TABLES_LISTED: usize = 10;
/// How much of the history the status reads for its list of applied tables: the newest
/// entries, by count in Redis, by size on disk.
const RECENT_ENTRIES: isize = 500;
const RECENT_BYTES: u64 = 256 * 1024;
/// How many differing fields a shadowed route lists.
const FIELDS_LISTED: usize = 5;

/// The monolith's upstreams, as the module docs read them off the table.
fn legacy_upstreams(table: &RouteTable) -> BTreeSet<&str> {
    let mut legacy = BTreeSet::new();
    for r in &table.config.routes {
        if let Some(f) = &r.fallback {
            legacy.insert(f.as_str());
        }
        if r.split.is_some() || r.shadow.is_some() || r.rollout.is_some() || r.path == "/" {
            legacy.insert(r.upstream.as_str());
        }
    }
    legacy
}

/// What a shadowed route's comparisons came to: the counts, and the fields that differed most
/// with their latest example (redacted when it was recorded, [`crate::shadow::redact`]).
fn shadow_summary(snapshot: &Snapshot, route: &str) -> Option<Value> {
    let stats = snapshot.get(route)?;
    let totals = stats.totals();
    let mut fields: Vec<Value> = Vec::new();
    for (endpoint, e) in &stats.endpoints {
        for (field, f) in &e.fields {
            if f.mismatches + f.noise > 0 {
                fields.push(json!({
                    "endpoint": endpoint,
                    "field": field,
                    "mismatches": f.mismatches,
                    "noise": f.noise,
                    "example": f.example,
                }));
            }
        }
    }
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    fields.sort_by(|a, b| {
        (n(b, "mismatches"), n(b, "noise")).cmp(&(n(a, "mismatches"), n(a, "noise")))
    });
    fields.truncate(FIELDS_LISTED);
    Some(json!({
        "compared": totals.compared,
        "matched": totals.matched,
        "mismatched": totals.mismatched,
        "noise_only": totals.noise_only,
        "not_compared": totals.dropped_in_flight + totals.too_large + totals.candidate_errors
            + totals.candidate_timeouts + totals.primary_failed,
        "mismatch_percent": if totals.compared == 0 { None } else {
            Some(100.0 * totals.mismatched as f64 / totals.compared as f64)
        },
        "top_fields": fields,
    }))
}

/// Each backend's sync lag per stream, as its health checks last reported it.
fn sync_lags(metrics: &crate::metrics::Metrics) -> Vec<Value> {
    let mut out = Vec::new();
    for family in metrics.gather() {
        if family.name() != "banyan_upstream_sync_lag_seconds" {
            continue;
        }
        for m in family.get_metric() {
            let label = |n: &str| crate::metrics::label(m, n);
            out.push(json!({
                "upstream": label("upstream"),
                "backend": label("backend"),
                "stream": label("stream"),
                "lag_seconds": m.get_gauge().get_value(),
            }));
        }
    }
    out
}

/// What goes into the status besides the live table and the counters.
pub(crate) struct Extras<'a> {
    pub(crate) shadow: &'a Snapshot,
    pub(crate) history: &'a [Entry],
    pub(crate) series: bool,
}

fn percent(part: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * part as f64 / of as f64
    }
}

/// The whole status as JSON.
pub(crate) fn status(s: &AdminState, extras: &Extras<'_>) -> Value {
    let (table, reloads) = s.live.current_with_status();
    let now = Reading::take(&s.metrics, service_kit::clock::now_ms());
    let minute = s.trend.windows(&now, std::time::Duration::from_secs(60));
    let rollouts = s.live.rollouts().status();
    let counters = s.metrics.requests_by_route();
    let legacy = legacy_upstreams(&table);
    let extracted = |u: &str| !legacy.is_empty() && !legacy.contains(u);
    let (mut served, mut total, mut migrated) = (0u64, 0u64, 0usize);
    let routes: Vec<Value> = table
        .config
        .routes
        .iter()
        .enumerate()
        .map(|(index, r)| {
            let counts = counters.get(&r.id).cloned().unwrap_or_default();
            let requests: u64 = counts.sides.values().map(|side| side.get("total").copied().unwrap_or(0)).sum();
            let by_extracted: u64 = counts
                .sides
                .iter()
                .filter(|(u, _)| extracted(u))
                .map(|(_, side)| side.get("total").copied().unwrap_or(0))
                .sum();
            served += by_extracted;
            total += requests;
            let bp = table.split_basis_points(index);
            let rollout = rollouts.get(&r.id);
            // A rollout in the table that the controller has not taken up yet: it looks at the
            // table every 100 ms (250 ms when shared, after reading Redis), so right after a start
            // or a reload there is a moment when only the file knows it. Shown as starting, not
            // as no rollout, so `banyan status --wait` and scripts polling `/status` wait for it
            // instead of failing.
            let starting = (rollout.is_none())
                .then_some(r.rollout.as_ref())
                .flatten()
                .map(|spec| {
                    json!({
                        "to": spec.to,
                        // What `banyan plan` tells a restart by: the same plan saved again is
                        // not one, whether or not the controller has looked yet.
                        "fingerprint": r.split.as_ref().map(|sp| spec.fingerprint(&sp.sticky)),
                        "phase": "starting",
                        "state": {"phase": "starting"},
                        "percent": f64::from(bp) / 100.0,
                        "steps": spec.steps,
                        "gates": [],
                    })
                });
            let phase = match (rollout, &r.split) {
                (Some(ro), _) => ro.phase.clone(),
                (None, _) if starting.is_some() => "starting".to_owned(),
                (None, Some(_)) if bp >= 10_000 => "migrated".to_owned(),
                (None, Some(_)) if bp > 0 => format!("canary {} %", f64::from(bp) / 100.0),
                _ if r.shadow.is_some() => "shadow".to_owned(),
                _ if extracted(&r.upstream) => "migrated".to_owned(),
                _ => "legacy".to_owned(),
            };
            if phase == "migrated" {
                migrated += 1;
            }
            let breakers: Vec<Value> = table
                .breakers_of(index)
                .iter()
                .map(|b| json!({"upstream": b.upstream(), "state": b.snapshot().phase.label()}))
                .collect();
            // Clients of the route are being served by its fallback while a breaker is not
            // closed.
            let fallback_active = r.fallback.is_some()
                && breakers.iter().any(|b| b["state"] != "closed");
            let traffic: Vec<Value> = minute
                .iter()
                .filter(|((route, _), _)| route == &r.id)
                .map(|((_, upstream), w)| {
                    let mut v = json!(w);
                    v["upstream"] = json!(upstream);
                    v["extracted"] = json!(extracted(upstream));
                    v
                })
                .collect();
            let new_side = r
                .rollout
                .as_ref()
                .map(|ro| ro.to.as_str())
                .or(r.split.as_ref().map(|sp| sp.to.as_str()));
            // Who takes the route's writes: its upstream, the new side once it has all the
            // traffic, both while a split divides it.
            let owners: Vec<&str> = match new_side {
                Some(to) if bp >= 10_000 => vec![to],
                Some(to) if bp > 0 => vec![r.upstream.as_str(), to],
                _ => vec![r.upstream.as_str()],
            };
            let writes_to =
                crate::config::rollout::takes_writes(r.methods.as_deref()).then_some(owners);
            json!({
                "id": r.id,
                "path": r.path,
                "methods": r.methods.as_ref().map(|ms| ms.iter().map(ToString::to_string).collect::<Vec<_>>()),
                "upstream": r.upstream,
                "to": r.split.as_ref().map(|sp| sp.to.clone()),
                "percent": f64::from(bp) / 100.0,
                "phase": phase,
                "requests": requests,
                "by_extracted": by_extracted,
                "sides": counts.sides,
                "breakers": breakers,
                "fallback": r.fallback,
                "fallback_active": fallback_active,
                "last_minute": traffic,
                "writes_to": writes_to,
                "shadow": r.shadow.as_ref().map(|sh| {
                    let mut v = shadow_summary(extras.shadow, &r.id).unwrap_or_else(|| json!({}));
                    v["to"] = json!(sh.to);
                    v["percent"] = json!(f64::from(sh.basis_points) / 100.0);
                    v
                }),
                "rollout": rollout.map(|ro| json!(ro)).or(starting),
            })
        })
        .collect();
    let count = routes.len();
    let (served_5m, total_5m) = s
        .trend
        .share(&now, std::time::Duration::from_secs(300), |u| extracted(u));
    let tables: Vec<Value> = extras
        .history
        .iter()
        .rev()
        .filter_map(|e| match &e.event {
            crate::rollout::progress::Event::TableApplied { version } => Some(json!({
                "version": version,
                "time": service_kit::clock::rfc3339(e.at_ms as i64),
            })),
            _ => None,
        })
        .take(TABLES_LISTED)
        .collect();
    let mut out = json!({
        "version": table.version,
        "loaded_at": service_kit::clock::rfc3339(table.loaded_at_ms),
        "legacy_upstreams": legacy,
        "extracted": {
            "requests": served,
            "of": total,
            "percent": percent(served, total),
            "last_5m": {
                "requests": served_5m,
                "of": total_5m,
                "percent": percent(served_5m, total_5m),
            },
        },
        "migrated": {"routes": migrated, "of": count},
        "rollouts": {
            "shared": s.live.rollouts().shared().is_some(),
            "decides": s.live.rollouts().decides(),
        },
        "routes": routes,
        "reloads": reloads,
        "tables": tables,
        "data": sync_lags(&s.metrics),
    });
    if extras.series {
        out["series"] = json!(s.trend.series(&now, |u| extracted(u)));
    }
    out
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct StatusQuery {
    #[serde(default)]
    series: bool,
}

pub(crate) async fn get_status(
    State(s): State<AdminState>,
    Query(q): Query<StatusQuery>,
) -> Json<Value> {
    // The status never fails for want of Redis: local figures then.
    let shadow = match super::shadow_snapshot(&s, false).await {
        Ok((_, snap)) => snap,
        Err(_) => s.results.snapshot(),
    };
    // Only the newest entries: the status is read every second by each open dashboard.
    let rollouts = s.live.rollouts();
    let history = match rollouts.shared() {
        Some(shared) => shared
            .recent_history(RECENT_ENTRIES)
            .await
            .unwrap_or_default(),
        None => rollouts.recent_history(RECENT_BYTES),
    };
    Json(status(
        &s,
        &Extras {
            shadow: &shadow,
            history: &history,
            series: q.series,
        },
    ))
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct HistoryQuery {
    route: Option<String>,
}

pub(crate) async fn get_history(
    State(s): State<AdminState>,
    Query(q): Query<HistoryQuery>,
) -> axum::response::Response {
    let rollouts = s.live.rollouts();
    let (mut entries, skipped) = match rollouts.shared() {
        Some(shared) => match shared.history().await {
            Ok(h) => h,
            Err(e) => {
                return unavailable(format!(
                    "cannot read the shared rollout history from Redis: {e}"
                ));
            }
        },
        None => rollouts.history(),
    };
    if let Some(route) = &q.route {
        entries.retain(|e| &e.route == route);
    }
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let mut v = serde_json::to_value(&e).unwrap_or(Value::Null);
            v["time"] = json!(service_kit::clock::rfc3339(e.at_ms as i64));
            v
        })
        .collect();
    Json(json!({"entries": entries, "unreadable_lines": skipped})).into_response()
}

fn unavailable(message: String) -> axum::response::Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": {"code": "unavailable", "message": message}})),
    )
        .into_response()
}

pub(crate) async fn post_action(
    State(s): State<AdminState>,
    Path((route, action)): Path<(String, String)>,
) -> axum::response::Response {
    let Some(act) = Action::parse(&action) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": format!("no rollout action {action:?}: approve, pause, resume or rollback")}})),
        )
            .into_response();
    };
    let rollouts = s.live.rollouts();
    let (phase, changes) = match rollouts.act(&route, act) {
        Ok(done) => done,
        Err(e @ Refused::NoRollout(_)) => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"code": "not_found", "message": e.to_string()}})),
            )
                .into_response();
        }
        Err(e @ Refused::NotNow { .. }) => {
            return (
                StatusCode::CONFLICT,
                Json(json!({"error": {"code": "conflict", "message": e.to_string()}})),
            )
                .into_response();
        }
    };
    match rollouts.shared() {
        None => rollouts.keep(changes),
        Some(shared) => match shared.keep(changes, rollouts).await {
            Ok(lost) if lost.is_empty() => {}
            Ok(_) => {
                return (
                    StatusCode::CONFLICT,
                    Json(json!({"error": {"code": "conflict", "message": "the rollout changed meanwhile (another proxy decided); look at banyan status and try again"}})),
                )
                    .into_response();
            }
            Err(e) => return unavailable(format!("cannot write the rollout to Redis: {e}")),
        },
    }
    Json(json!({"route": route, "action": action, "phase": phase})).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::lifecycle::{Lifecycle, Timing};
    use crate::metrics::Metrics;
    use crate::reload::LiveTable;
    use crate::shadow::results::Results;

    const TABLE: &str = r#"
[upstreams.legacy]
addrs = ["127.0.0.1:9"]

[upstreams.catalog]
addrs = ["127.0.0.1:9"]

[[route]]
id = "products"
path = "/api/products"
methods = ["GET", "HEAD"]
upstream = "legacy"
rollout = { to = "catalog", steps = [5, 50, 100], interval = "1h", sticky = "cookie:sid" }

[[route]]
id = "rest"
path = "/"
upstream = "legacy"
"#;

    fn products(status: &Value) -> Value {
        status["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "products")
            .cloned()
            .unwrap()
    }

    /// Between a start (or a reload) and the controller's first look at the table, the file's
    /// rollout is shown as starting with its steps, so `banyan status --wait` and scripts that
    /// poll `/status` wait for it instead of reading "no rollout"; after that look, the
    /// controller's own state replaces it.
    #[test]
    fn a_rollout_the_controller_has_not_taken_up_yet_shows_as_starting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, TABLE).unwrap();
        let metrics = Arc::new(Metrics::new());
        let live = Arc::new(LiveTable::open(&path, metrics.clone()).unwrap());
        let results = Arc::new(Results::new(metrics.clone()));
        let state = AdminState {
            admin: "127.0.0.1:0".parse().unwrap(),
            lifecycle: Arc::new(Lifecycle::new(Timing::default())),
            live: live.clone(),
            metrics,
            results: results.clone(),
            shared: Arc::new(std::sync::OnceLock::new()),
            trend: Arc::new(super::super::trend::Trend::default()),
        };
        let read = || {
            products(&status(
                &state,
                &Extras {
                    shadow: &results.snapshot(),
                    history: &[],
                    series: false,
                },
            ))
        };

        let before = read();
        assert_eq!(before["phase"], "starting", "{before:#}");
        let rollout = &before["rollout"];
        assert_eq!(rollout["to"], "catalog", "{before:#}");
        let fingerprint = rollout["fingerprint"].clone();
        assert!(fingerprint.is_string(), "{before:#}");
        assert_eq!(rollout["phase"], "starting");
        assert_eq!(rollout["state"]["phase"], "starting");
        assert_eq!(rollout["steps"], json!([5.0, 50.0, 100.0]));
        // What the table already serves: a new rollout starts at its first step.
        assert_eq!(rollout["percent"], json!(5.0));
        assert!(rollout.get("step_since").is_none(), "{before:#}");

        live.rollouts()
            .tick_local(&live.current(), &results, crate::rollout::control::now_ms());
        let after = read();
        let rollout = &after["rollout"];
        assert_ne!(after["phase"], "starting", "{after:#}");
        assert_ne!(rollout["phase"], "starting", "{after:#}");
        assert!(rollout["step_since"].is_string(), "{after:#}");
        assert_eq!(rollout["steps"], json!([5.0, 50.0, 100.0]));
        assert_eq!(rollout["fingerprint"], fingerprint, "{after:#}");
    }
}
