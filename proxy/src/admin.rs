//! The admin API: what an operator asks a running proxy. Listens on loopback by default
//! (`[proxy] admin`), because it reveals the topology and is not meant for clients.
//!
//! - `GET /routes`: the live table (version, when it was loaded, routes, upstreams and the health
//!   of each backend), reload counts and the last refused reload with its errors, and per-route
//!   request counters.
//! - `GET /metrics`: Prometheus text.
//! - `GET /healthz`: 200 while the process serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::metrics::Metrics;
use crate::reload::LiveTable;

#[derive(Clone)]
pub struct AdminState {
    pub live: Arc<LiveTable>,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/routes", get(routes))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state);
    service_kit::server::with_common_layers(api)
}

async fn routes(State(s): State<AdminState>) -> Json<Value> {
    let table = s.live.current();
    let counters = s.metrics.requests_by_route();
    let routes: Vec<Value> = table
        .config
        .routes
        .iter()
        .map(|r| {
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
                "requests": counters.get(&r.id).cloned().unwrap_or_default(),
            })
        })
        .collect();
    let upstreams: BTreeMap<&str, Value> = table
        .pools
        .iter()
        .map(|(name, pool)| {
            let backends: Vec<Value> = pool
                .backends
                .iter()
                .map(|b| json!({"addr": b.addr.to_string(), "healthy": b.is_healthy(), "in_rotation": b.is_available()}))
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
        "reloads": s.live.status(),
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

async fn healthz(State(s): State<AdminState>) -> Json<Value> {
    Json(json!({"status": "ok", "version": s.live.current().version}))
}
