use banyan_tests::{AppOptions, spawn_app, spawn_app_with};
use serde_json::{Value, json};

use crate::{expect_error, product_body};

#[tokio::test]
async fn search_ranks_name_matches_first() {
    let app = spawn_app().await;
    let admin = app.admin_client().await;
    let mk = |sku: &str, name: &str, description: &str, category: &str| {
        let mut b = product_body(sku);
        b["name"] = json!(name);
        b["description"] = json!(description);
        b["category"] = json!(category);
        b
    };
    app.create_product(&admin, mk("S-1", "Copper Kettle", "For tea", "kitchen"))
        .await;
    app.create_product(
        &admin,
        mk("S-2", "Teapot", "Pairs with a copper kettle", "kitchen"),
    )
    .await;
    app.create_product(&admin, mk("S-3", "Garden Hose", "Green and long", "garden"))
        .await;
    app.create_product(&admin, mk("S-4", "Copper Wire", "Conductive", "office"))
        .await;

    let v: Value = app
        .get("/api/search?q=copper%20kettle")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["query"], "copper kettle");
    assert_eq!(v["total"], 3);
    let hits = v["hits"].as_array().unwrap();
    let names: Vec<&str> = hits.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names[0], "Copper Kettle", "{names:?}");
    assert!(!names.contains(&"Garden Hose"));
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    let first = &hits[0];
    for field in ["id", "name", "category", "price_cents", "score"] {
        assert!(first.get(field).is_some(), "{field} missing");
    }

    // Category filter and limit.
    let v: Value = app
        .get("/api/search?q=copper&category=office")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["total"], 1);
    assert_eq!(v["hits"][0]["name"], "Copper Wire");
    let v: Value = app
        .get("/api/search?q=copper&limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["hits"].as_array().unwrap().len(), 1);
    assert_eq!(v["total"], 3);

    // Case-insensitive; no match is an empty result, not an error.
    let v: Value = app.get("/api/search?q=GARDEN").await.json().await.unwrap();
    assert_eq!(v["total"], 1);
    let v: Value = app
        .get("/api/search?q=zeppelin")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"query": "zeppelin", "total": 0, "hits": []}));
}

#[tokio::test]
async fn search_input_is_data_not_syntax() {
    let app = spawn_app_with(AppOptions::seeded(50)).await;
    // LIKE wildcards and SQL in the query match literally (nothing here), never everything.
    for q in ["%25", "_", "%27%20OR%201%3D1%20--", "100%25%20_off"] {
        let v: Value = app
            .get(&format!("/api/search?q={q}"))
            .await
            .json()
            .await
            .unwrap_or(json!(null));
        assert_ne!(v["total"], 50, "q={q} matched everything: {v}");
    }
    // No word at all: nothing to look for, so nothing is found (not an error: the document
    // cannot say "at least one letter" in a way every regex engine reads alike).
    let v: Value = app.get("/api/search?q=%25%25").await.json().await.unwrap();
    assert_eq!(v, json!({"query": "%%", "total": 0, "hits": []}));
}

#[tokio::test]
async fn search_parameter_errors() {
    let app = spawn_app().await;
    let e = expect_error(app.get("/api/search").await, 422, "validation").await;
    assert_eq!(e["fields"]["q"], "is required");
    expect_error(app.get("/api/search?q=x&limit=0").await, 422, "validation").await;
    expect_error(
        app.get("/api/search?q=x&limit=many").await,
        422,
        "validation",
    )
    .await;
    let long = "a".repeat(201);
    expect_error(
        app.get(&format!("/api/search?q={long}")).await,
        422,
        "validation",
    )
    .await;
    expect_error(app.get("/api/search?q=a&q=b").await, 400, "bad_request").await;
}
