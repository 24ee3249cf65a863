use banyan_tests::spawn_app;
use serde_json::{Value, json};

use crate::expect_error;

#[tokio::test]
async fn events_are_counted_in_the_summary() {
    let app = spawn_app().await;
    let events = [
        ("view", 1),
        ("view", 1),
        ("view", 2),
        ("add_to_cart", 2),
        ("purchase", 2),
        ("view", 3),
    ];
    for (kind, product) in events {
        let r = app
            .post_json(
                "/api/analytics/events",
                &json!({"type": kind, "product_id": product}),
            )
            .await;
        assert_eq!(r.status(), 202);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"status": "accepted"})
        );
    }
    // An event two hours ago is outside the default one-hour window but inside 1d.
    let two_hours_ago = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        service_kit::clock::rfc3339(now - 2 * 3600 * 1000)
    };
    let r = app
        .post_json(
            "/api/analytics/events",
            &json!({"type": "purchase", "product_id": 9, "at": two_hours_ago}),
        )
        .await;
    assert_eq!(r.status(), 202);

    let s: Value = app
        .get("/api/analytics/summary")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["window"], "1h");
    assert_eq!(
        s["counts"],
        json!({"view": 4, "add_to_cart": 1, "purchase": 1})
    );
    assert_eq!(
        s["top_products"],
        json!([{"product_id": 2, "events": 3}, {"product_id": 1, "events": 2}, {"product_id": 3, "events": 1}])
    );
    assert!(s["since"].as_str().unwrap().ends_with('Z'));

    let s: Value = app
        .get("/api/analytics/summary?window=1d")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["counts"]["purchase"], 2);
    let s: Value = app
        .get("/api/analytics/summary?window=30m")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["counts"]["view"], 4);
}

#[tokio::test]
async fn bad_events_and_windows_are_refused_and_not_recorded() {
    let app = spawn_app().await;
    let e = expect_error(
        app.post_json(
            "/api/analytics/events",
            &json!({"type": "click", "product_id": 0, "extra": 1}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    for f in ["type", "product_id", "extra"] {
        assert!(e["fields"][f].is_string(), "{f}: {e}");
    }
    let e = expect_error(
        app.post_json(
            "/api/analytics/events",
            &json!({"type": "view", "product_id": 1, "at": "yesterday"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert!(e["fields"]["at"].is_string());
    let e = expect_error(
        app.post_json(
            "/api/analytics/events",
            &json!({"type": "view", "product_id": 1, "at": "2999-01-01T00:00:00Z"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(e["fields"]["at"], "must not be in the future");
    let r = app
        .client
        .post(app.url("/api/analytics/events"))
        .header("content-type", "application/json")
        .body("[")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "bad_request").await;
    for w in ["0h", "1w", "abc", "-1h", "+1h"] {
        let e = expect_error(
            app.get(&format!("/api/analytics/summary?window={w}")).await,
            422,
            "validation",
        )
        .await;
        assert!(e["fields"]["window"].is_string(), "window={w}");
    }
    // Longer than the 30 days events are kept: cut to 30 days, and said so.
    let s: Value = app
        .get("/api/analytics/summary?window=90d")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["window"], "30d");
    let s: Value = app
        .get("/api/analytics/summary?window=30d")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        s["counts"],
        json!({"view": 0, "add_to_cart": 0, "purchase": 0})
    );
}
