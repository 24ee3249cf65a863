//! The admin API: what an operator asks a running proxy. Listens on loopback by default
//! (`[proxy] admin`), because it reveals the topology and is not meant for clients.
//!
//! - `GET /routes`: the live table (version, when it was loaded, routes, upstreams and the health
//!   of each backend), reload counts and the last refused reload with its errors, and per-route
//!   request counters.
//! - `GET /metrics`: Prometheus text.
//! - `GET /healthz`: 200 while the process serves, 503 from the moment a stop or an upgrade
//!   begins (so a load balancer or a Kubernetes Service stops sending; see
//!   [`crate::lifecycle`]).
//! - `GET /shadow`: shadow results per route, endpoint and field (JSON; `?route=` to pick one,
//!   `?samples=true` to include the stored samples, `?local=true` for this instance only when
//!   results are shared through Redis). `GET /shadow/report`: the same as text, as
//!   `banyan shadow report` prints it. `DELETE /shadow`: forget all results (shared ones too),
//!   for instance after changing a route's comparison rules.
//!
//! - `GET /status`, `GET /history`, `POST /rollouts/{route}/{action}`: how far the migration is,
//!   and the rollouts ([`status`]).
//!
//! - `GET /`: the migration dashboard ([`dashboard`]), a page over `GET /status`.
//!
//! Who may ask: [`guard`] (Host check, token for actions). How it is served: [`serve`] (on a
//! Pingora listener, so upgrades carry its socket).

mod dashboard;
pub(crate) mod guard;
pub(crate) mod serve;
pub(crate) mod status;
pub(crate) mod trend;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::reload::LiveTable;
use crate::shadow::report;
use crate::shadow::results::{self, Results, Snapshot};
use crate::shadow::share::Shared;

#[derive(Clone)]
pub(crate) struct AdminState {
    /// The address the admin API listens on (off loopback, reads need the token too).
    pub admin: std::net::SocketAddr,
    pub lifecycle: Arc<Lifecycle>,
    pub live: Arc<LiveTable>,
    pub metrics: Arc<Metrics>,
    pub results: Arc<Results>,
    /// Set once the Redis that results are shared through is connected.
    pub shared: Arc<std::sync::OnceLock<Shared>>,
    /// Readings of the traffic counters, for the status's windows ([`trend`]).
    pub trend: Arc<trend::Trend>,
}

pub(crate) fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/", get(dashboard::page))
        .route("/routes", get(routes))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/shadow", get(shadow).delete(shadow_reset))
        .route("/shadow/report", get(shadow_report))
        .route("/status", get(status::get_status))
        .route("/history", get(status::get_history))
        .route(
            "/rollouts/{route}/{action}",
            axum::routing::post(status::post_action),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check,
        ))
        .with_state(state);
    service_kit::server::with_common_layers(api)
}

async fn routes(State(s): State<AdminState>) -> Json<Value> {
    let (table, reloads) = s.live.current_with_status();
    let counters = s.metrics.requests_by_route();
    let routes: Vec<Value> = table
        .config
        .routes
        .iter()
        .enumerate()
        .map(|(index, r)| {
            let mut route = crate::config::describe::route(r);
            if r.split.is_some() {
                // A rollout's (or a frozen route's) share is live, not the file's.
                route["split"]["percent"] =
                    json!(f64::from(table.split_basis_points(index)) / 100.0);
            }
            let breakers: BTreeMap<&str, Value> = table
                .breakers_of(index)
                .iter()
                .map(|b| {
                    let snap = b.snapshot();
                    let since_ms = snap
                        .since
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    (
                        b.upstream(),
                        json!({
                            "state": snap.phase.label(),
                            "since": service_kit::clock::rfc3339(since_ms),
                            "window": {"requests": snap.requests, "failures": snap.failures},
                        }),
                    )
                })
                .collect();
            route["breakers"] = json!(breakers);
            let counts = counters.get(&r.id).cloned().unwrap_or_default();
            route["requests"] = json!(counts.classes);
            route["sides"] = json!(counts.sides);
            route
        })
        .collect();
    let upstreams: BTreeMap<&str, Value> = table
        .pools
        .iter()
        .map(|(name, pool)| {
            let backends: Vec<Value> = pool
                .backends
                .iter()
                .map(|b| json!({"addr": b.addr.to_string(), "healthy": b.is_healthy(), "ejected": b.is_ejected(), "in_rotation": b.is_available()}))
                .collect();
            let health = pool.spec.health.as_ref().map(|h| json!({"path": h.path, "interval_ms": h.interval.as_millis() as u64}));
            (name.as_str(), json!({"backends": backends, "health": health}))
        })
        .collect();
    Json(json!({
        "file": s.live.path().display().to_string(),
        "version": table.version,
        "loaded_at": service_kit::clock::rfc3339(table.loaded_at_ms),
        "routes": routes,
        "upstreams": upstreams,
        "reloads": reloads,
    }))
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(),
    )
}

async fn healthz(State(s): State<AdminState>) -> axum::response::Response {
    let version = s.live.current().version.clone();
    if s.lifecycle.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "version": version})),
        )
            .into_response();
    }
    Json(json!({"status": "ok", "version": version})).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct ShadowQuery {
    route: Option<String>,
    #[serde(default)]
    samples: bool,
    #[serde(default)]
    local: bool,
}

/// The results to show: shared ones (every instance, plus what this one has not flushed yet)
/// when Redis is configured and reachable, else this instance's.
async fn shadow_snapshot(s: &AdminState, local: bool) -> Result<(&'static str, Snapshot), String> {
    match s.shared.get() {
        Some(shared) if !local => {
            let mut snap = shared
                .read()
                .await
                .map_err(|e| format!("cannot read shared shadow results from Redis: {e}"))?;
            results::merge(&mut snap, s.results.pending());
            Ok(("redis", snap))
        }
        _ => Ok(("local", s.results.snapshot())),
    }
}

async fn shadow(
    State(s): State<AdminState>,
    Query(q): Query<ShadowQuery>,
) -> axum::response::Response {
    let (source, mut snap) = match shadow_snapshot(&s, q.local).await {
        Ok(x) => x,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": {"code": "unavailable", "message": e}})),
            )
                .into_response();
        }
    };
    if let Some(r) = &q.route {
        snap.retain(|id, _| id == r);
    }
    if !q.samples {
        for r in snap.values_mut() {
            r.samples.clear();
        }
    }
    Json(json!({"source": source, "routes": snap})).into_response()
}

async fn shadow_report(
    State(s): State<AdminState>,
    Query(q): Query<ShadowQuery>,
) -> axum::response::Response {
    match shadow_snapshot(&s, q.local).await {
        Ok((_, snap)) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            report::render(&snap, q.route.as_deref()),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

async fn shadow_reset(State(s): State<AdminState>) -> axum::response::Response {
    s.results.reset();
    if let Some(shared) = s.shared.get()
        && let Err(e) = shared.reset().await
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"code": "unavailable", "message": format!("local results reset; shared ones not: {e}")}})),
        )
            .into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}
