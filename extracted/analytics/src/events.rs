//! `POST /api/analytics/events` and `GET /api/analytics/summary`, with the monolith's rules
//! ([`service_kit::contract::analytics`]).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use service_kit::clock;
use service_kit::contract::analytics::{self as contract, Event, TopProduct};
use service_kit::db::Sql;
use service_kit::extract::{JsonObject, QueryParams};
use service_kit::session;
use sqlx::Row;

use crate::app::ApiContext;
use crate::error::Result;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/analytics/events", post(ingest))
        .route("/api/analytics/summary", get(summary))
}

async fn ingest(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<(StatusCode, Json<Value>)> {
    let event = Event::parse(&body, clock::now_ms())?;
    // Anonymous visitors are welcome; a logged-in caller's events are attributed to them.
    let user = match session::sid_from_headers(&headers) {
        Some(sid) => ctx.sessions.get(sid).await?.map(|s| s.user_id),
        None => None,
    };
    ctx.ingestor.submit(event, user).await?;
    Ok((StatusCode::ACCEPTED, Json(contract::accepted())))
}

async fn summary(State(ctx): State<ApiContext>, query: QueryParams) -> Result<Json<Value>> {
    let (window, window_ms) = contract::parse_window_param(query)?;
    let since = clock::now_ms() - window_ms;
    let mut q = Sql::new("SELECT type, COUNT(*) AS n FROM events WHERE at >= ");
    q.bind(since).push(" GROUP BY type");
    let counts = q
        .build()
        .fetch_all(&ctx.db.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("type")?, r.try_get("n")?)))
        .collect::<Result<Vec<_>>>()?;
    let mut q = Sql::new("SELECT product_id, COUNT(*) AS events FROM events WHERE at >= ");
    q.bind(since)
        .push(" GROUP BY product_id ORDER BY events DESC, product_id ASC LIMIT ")
        .bind(contract::TOP_PRODUCTS);
    let top = q
        .build()
        .fetch_all(&ctx.db.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(TopProduct {
                product_id: r.try_get("product_id")?,
                events: r.try_get("events")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(contract::summary(&window, since, &counts, &top)))
}
