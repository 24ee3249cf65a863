//! Analytics: storefront events (view, add to cart, purchase) and a summary over a time window.
//!
//! Events are accepted from anonymous visitors too (202: recorded, nothing to return); when the
//! caller is logged in, the event is attributed to the user. The rules are shared with the
//! analytics service ([`service_kit::contract::analytics`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use service_kit::clock;
use service_kit::contract::analytics::{self as contract, Event, TopProduct};
use service_kit::extract::{JsonObject, QueryParams};
use sqlx::Row;

use crate::app::ApiContext;
use crate::auth::MaybeUser;
use crate::error::Result;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/analytics/events", post(ingest))
        .route("/api/analytics/summary", get(summary))
}

async fn ingest(
    State(ctx): State<ApiContext>,
    MaybeUser(user): MaybeUser,
    body: JsonObject,
) -> Result<(StatusCode, Json<Value>)> {
    let event = Event::parse(&body, clock::now_ms())?;
    sqlx::query("INSERT INTO analytics_events (type, product_id, user_id, at) VALUES (?, ?, ?, ?)")
        .bind(event.kind)
        .bind(event.product_id)
        .bind(user.map(|u| u.user_id))
        .bind(event.at)
        .execute(&ctx.db.pool)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(contract::accepted())))
}

async fn summary(State(ctx): State<ApiContext>, query: QueryParams) -> Result<Json<Value>> {
    let (window, window_ms) = contract::parse_window_param(query)?;
    let since = clock::now_ms() - window_ms;
    let counts =
        sqlx::query("SELECT type, COUNT(*) AS n FROM analytics_events WHERE at >= ? GROUP BY type")
            .bind(since)
            .fetch_all(&ctx.db.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("type")?, r.try_get("n")?)))
            .collect::<Result<Vec<_>>>()?;
    let top = sqlx::query(
        "SELECT product_id, COUNT(*) AS events FROM analytics_events WHERE at >= ? \
         GROUP BY product_id ORDER BY events DESC, product_id ASC LIMIT ?",
    )
    .bind(since)
    .bind(contract::TOP_PRODUCTS)
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
