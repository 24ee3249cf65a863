//! End-to-end tests of the legacy monolith: the real binary, on port 0, on the storage the
//! environment names (embedded by default; MariaDB + Redis in CI). See `banyan_tests` for the
//! harness.

mod analytics;
mod auth;
mod compose;
mod lifecycle;
mod orders;
mod products;
mod search;

use reqwest::Response;
use serde_json::Value;

/// Asserts the status and the catalog error format, returns the error object.
pub async fn expect_error(r: Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "unexpected status");
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some("application/json"));
    let body: Value = r.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    body["error"].clone()
}

pub fn product_body(sku: &str) -> Value {
    serde_json::json!({
        "sku": sku,
        "name": format!("Test Kettle {sku}"),
        "description": "Boils water quickly",
        "category": "kitchen",
        "price_cents": 2599,
        "currency": "USD",
        "stock": 10
    })
}
