//! How far the migration is: `GET /status` (what `banyan status` prints, and the one source of
//! the dashboard to come), `GET /history`, and the operator's actions on rollouts
//! (`POST /rollouts/{route}/{approve|pause|resume|rollback}`, which need the admin token).
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
use crate::rollout::control::{Action, Refused};
use crate::route_table::RouteTable;

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

/// The whole status as JSON.
pub(crate) fn status(s: &AdminState) -> Value {
    let (table, reloads) = s.live.current_with_status();
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
            let phase = match (rollout, &r.split) {
                (Some(ro), _) => ro.phase.clone(),
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
                "rollout": rollout,
            })
        })
        .collect();
    let count = routes.len();
    json!({
        "version": table.version,
        "loaded_at": service_kit::clock::rfc3339(table.loaded_at_ms),
        "legacy_upstreams": legacy,
        "extracted": {
            "requests": served,
            "of": total,
            "percent": if total == 0 { 0.0 } else { 100.0 * served as f64 / total as f64 },
        },
        "migrated": {"routes": migrated, "of": count},
        "rollouts": {
            "shared": s.live.rollouts().shared().is_some(),
            "decides": s.live.rollouts().decides(),
        },
        "routes": routes,
        "reloads": reloads,
    })
}

pub(crate) async fn get_status(State(s): State<AdminState>) -> Json<Value> {
    Json(status(&s))
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
