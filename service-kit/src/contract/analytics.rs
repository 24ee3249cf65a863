//! Analytics: `POST /api/analytics/events` and `GET /api/analytics/summary`.
//!
//! What a valid event and a valid window are, and the summary's shape, shared by the monolith
//! and the analytics service. `since` in the summary is "now minus the window" on the answering
//! process's clock, so it may differ between them by the time between the two requests.

use serde::Serialize;
use serde_json::{Value, json};

use crate::clock;
use crate::error::ErrorResponse;
use crate::extract::{JsonObject, QueryParams};

pub const EVENT_TYPES: &[&str] = &["view", "add_to_cart", "purchase"];
/// The longest summary window, and the oldest event accepted.
pub const MAX_WINDOW_MS: i64 = 30 * 24 * 3600 * 1000;
/// Clock skew tolerated on a client-supplied `at`.
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;
/// How many products the summary ranks.
pub const TOP_PRODUCTS: i64 = 10;

/// A valid event (`at` defaults to now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: String,
    pub product_id: i64,
    pub at: i64,
}

impl Event {
    pub fn parse(body: &JsonObject, now: i64) -> Result<Self, ErrorResponse> {
        let mut f = body.fields();
        f.reject_unknown(&["type", "product_id", "at"], &[]);
        let kind = f.string("type", 1..=16);
        if let Some(k) = &kind
            && !EVENT_TYPES.contains(&k.as_str())
        {
            f.fail("type", format!("must be one of {}", EVENT_TYPES.join(", ")));
        }
        let product_id = f.int("product_id", 1..=i64::MAX);
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
        Ok(Self {
            kind: kind.unwrap_or_default(),
            product_id: product_id.unwrap_or_default(),
            at: at.unwrap_or(now),
        })
    }
}

/// The body of a 202.
pub fn accepted() -> Value {
    json!({"status": "accepted"})
}

/// A valid summary request: the window (as written, or `30d` when it asked for more) and in
/// milliseconds. Windows longer than 30 days are cut to 30 days: events are not kept longer.
pub fn parse_window_param(query: QueryParams) -> Result<(String, i64), ErrorResponse> {
    let mut p = query.params();
    let window = p
        .opt_string("window", 16)
        .unwrap_or_else(|| "1h".to_owned());
    let ms = parse_window(&window);
    if ms.is_none() {
        p.fail(
            "window",
            "must be a duration such as 30s, 15m, 1h or 7d (a number and s, m, h or d)",
        );
    }
    p.finish()?;
    let ms = ms.unwrap_or_default();
    if ms >= MAX_WINDOW_MS {
        return Ok(("30d".to_owned(), MAX_WINDOW_MS));
    }
    Ok((window, ms))
}

/// Parses `30s`, `15m`, `1h`, `7d` (digits, no sign, then a unit) into milliseconds, at most
/// [`MAX_WINDOW_MS`].
pub fn parse_window(s: &str) -> Option<i64> {
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    // Digits only, so a failed parse is a number too large for i64: more than 30 days anyway.
    Some(
        digits
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(ms))
            .map_or(MAX_WINDOW_MS, |w| w.min(MAX_WINDOW_MS)),
    )
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TopProduct {
    pub product_id: i64,
    pub events: i64,
}

/// The summary body: every event type counted (0 when absent), the top products by events
/// (ties by product id).
pub fn summary(window: &str, since: i64, counts: &[(String, i64)], top: &[TopProduct]) -> Value {
    let mut by_type = serde_json::Map::new();
    for t in EVENT_TYPES {
        by_type.insert((*t).to_owned(), json!(0));
    }
    for (t, n) in counts {
        by_type.insert(t.clone(), json!(n));
    }
    json!({
        "window": window,
        "since": clock::rfc3339(since),
        "counts": by_type,
        "top_products": top,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(parse_window("1h"), Some(3_600_000));
        assert_eq!(parse_window("30s"), Some(30_000));
        assert_eq!(parse_window("30d"), Some(MAX_WINDOW_MS));
        assert_eq!(parse_window("31d"), Some(MAX_WINDOW_MS), "cut to 30 days");
        assert_eq!(parse_window("0h"), None);
        assert_eq!(parse_window("h"), None);
        assert_eq!(parse_window("5x"), None);
        assert_eq!(parse_window("-5m"), None);
        assert_eq!(parse_window("+5m"), None);
        assert_eq!(parse_window("05m"), None);
        assert_eq!(parse_window("9999999999999999999999d"), Some(MAX_WINDOW_MS));
        assert_eq!(parse_window("1é"), None);
    }
}
