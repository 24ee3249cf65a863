//! Analytics: storefront events (view, add to cart, purchase) and a summary over a time window.
//!
//! Events are accepted from anonymous visitors too (202: recorded, nothing to return); when the
//! caller is logged in, the event is attributed to the user.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};
use service_kit::clock;
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

pub const EVENT_TYPES: &[&str] = &["view", "add_to_cart", "purchase"];
const MAX_WINDOW_MS: i64 = 30 * 24 * 3600 * 1000;
/// Clock skew tolerated on a client-supplied `at`.
const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;

async fn ingest(
    State(ctx): State<ApiContext>,
    MaybeUser(user): MaybeUser,
    body: JsonObject,
) -> Result<(StatusCode, Json<Value>)> {
    let mut f = body.fields();
    f.reject_unknown(&["type", "product_id", "at"], &[]);
    let kind = f.string("type", 1..=16);
    if let Some(k) = &kind
        && !EVENT_TYPES.contains(&k.as_str())
    {
        f.fail("type", format!("must be one of {}", EVENT_TYPES.join(", ")));
    }
    let product_id = f.int("product_id", 1..=i64::MAX);
    let now = clock::now_ms();
    let at = match f.opt_string("at", 1..=64) {
        None => Some(now),
        Some(s) => match clock::parse_rfc3339(&s) {
            Some(t) if t > now + MAX_FUTURE_MS => {
                f.fail("at", "must not be in the future");
                None
            }
            Some(t) if t < now - MAX_WINDOW_MS => {
                f.fail("at", "must be within the last 30 days");
                None
            }
            Some(t) => Some(t),
            None => {
                f.fail("at", "must be an RFC 3339 timestamp");
                None
            }
        },
    };
    f.finish()?;
    sqlx::query("INSERT INTO analytics_events (type, product_id, user_id, at) VALUES (?, ?, ?, ?)")
        .bind(kind.unwrap())
        .bind(product_id.unwrap())
        .bind(user.map(|u| u.user_id))
        .bind(at.unwrap())
        .execute(&ctx.db.pool)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"status": "accepted"}))))
}

/// Parses `30s`, `15m`, `1h`, `7d` into milliseconds.
pub fn parse_window(s: &str) -> Option<i64> {
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()]
        .parse()
        .ok()
        .filter(|n| *n > 0)?;
    let ms = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms).filter(|w| *w <= MAX_WINDOW_MS)
}

#[derive(Debug, Serialize)]
struct TopProduct {
    product_id: i64,
    events: i64,
}

async fn summary(State(ctx): State<ApiContext>, query: QueryParams) -> Result<Json<Value>> {
    let mut p = query.params();
    let window = p
        .opt_string("window", 16)
        .unwrap_or_else(|| "1h".to_owned());
    let window_ms = parse_window(&window);
    if window_ms.is_none() {
        p.fail(
            "window",
            "must be a duration such as 30s, 15m, 1h or 7d, at most 30d",
        );
    }
    p.finish()?;
    let since = clock::now_ms() - window_ms.unwrap();

    let rows =
        sqlx::query("SELECT type, COUNT(*) AS n FROM analytics_events WHERE at >= ? GROUP BY type")
            .bind(since)
            .fetch_all(&ctx.db.pool)
            .await?;
    let mut counts = serde_json::Map::new();
    for t in EVENT_TYPES {
        counts.insert((*t).to_owned(), json!(0));
    }
    for r in &rows {
        let t: String = r.try_get("type")?;
        let n: i64 = r.try_get("n")?;
        counts.insert(t, json!(n));
    }
    let top = sqlx::query(
        "SELECT product_id, COUNT(*) AS events FROM analytics_events WHERE at >= ? \
         GROUP BY product_id ORDER BY events DESC, product_id ASC LIMIT 10",
    )
    .bind(since)
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
    Ok(Json(json!({
        "window": window,
        "since": clock::rfc3339(since),
        "counts": counts,
        "top_products": top,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(parse_window("1h"), Some(3_600_000));
        assert_eq!(parse_window("30s"), Some(30_000));
        assert_eq!(parse_window("30d"), Some(MAX_WINDOW_MS));
        assert_eq!(parse_window("31d"), None);
        assert_eq!(parse_window("0h"), None);
        assert_eq!(parse_window("h"), None);
        assert_eq!(parse_window("5x"), None);
        assert_eq!(parse_window("-5m"), None);
        assert_eq!(parse_window("9999999999999999d"), None);
    }
}
