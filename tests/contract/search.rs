//! `/api/search`: the monolith (SQL `LIKE`) against the search service (tantivy), over the same
//! products (the service follows the monolith's database).
//!
//! What may differ, field by field, and why:
//! - `hits[*].score`: each engine scores its own way (word counts against BM25);
//! - the order of `hits`: it follows the scores, so hits are compared as a set (by `id`);
//! - everything else must be equal: `query`, `total`, and each hit's `id`, `name`,
//!   `category` and `price_cents`. The products below use whole words, where both engines agree
//!   on what matches; a word found only inside a longer word (`LIKE '%ket%'`) is exactly the
//!   kind of difference shadow comparison reports.

use banyan_tests::{converges, new_client, spawn_app, spawn_synced_search};
use serde_json::{Value, json};

use crate::{Target, Who, both};

fn hit_set(body: &Value) -> Vec<Value> {
    let mut hits: Vec<Value> = body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            assert!(h["score"].as_f64().unwrap() > 0.0, "a score: {h}");
            json!({"id": h["id"], "name": h["name"], "category": h["category"], "price_cents": h["price_cents"]})
        })
        .collect();
    hits.sort_by_key(|h| h["id"].as_i64());
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_keeps_the_contract() {
    let app = spawn_app().await;
    let search = spawn_synced_search(&app).await;
    let admin = app.admin_client().await;
    let products = [
        (
            "S-1",
            "Copper Kettle",
            "Boils water fast on any stove",
            "kitchen",
            2599,
        ),
        (
            "S-2",
            "Tea Cup",
            "Porcelain cup for green tea",
            "kitchen",
            899,
        ),
        (
            "S-3",
            "Garden Hose",
            "Twenty metres of green hose",
            "garden",
            1999,
        ),
        (
            "S-4",
            "Water Can",
            "Galvanised steel can for the garden",
            "garden",
            1599,
        ),
        (
            "S-5",
            "Field Guide",
            "Birds of the garden, with colour plates",
            "books",
            1299,
        ),
    ];
    for (sku, name, description, category, price) in products {
        app.create_product(&admin, json!({"sku": sku, "name": name, "description": description, "category": category, "price_cents": price, "stock": 3}))
            .await;
    }
    converges(&format!("{}/api/search?q=guide", search.address), |s, b| {
        s == 200 && b["total"] == 1
    })
    .await;
    let t = [
        Target {
            name: "monolith",
            base: app.address.clone(),
            admin: new_client(),
            customer: new_client(),
            anonymous: new_client(),
        },
        Target {
            name: "search-service",
            base: search.address.clone(),
            admin: new_client(),
            customer: new_client(),
            anonymous: new_client(),
        },
    ];

    for q in [
        "q=kettle",
        "q=green",
        "q=garden",
        "q=garden&category=garden",
        "q=garden&category=books",
        "q=green%20tea%20water",
        "q=GARDEN%20garden!",
        "q=garden&limit=1",
        "q=nothing-matches-this",
        "q=cup&category=nope",
    ] {
        let path = format!("/api/search?{q}");
        let a = t[0].call(Who::Anonymous, "GET", &path, None, "").await;
        let b = t[1].call(Who::Anonymous, "GET", &path, None, "").await;
        assert_eq!(
            (a.status, b.status),
            (200, 200),
            "{path}: {:?} {:?}",
            a.body,
            b.body
        );
        assert_eq!(a.body["query"], b.body["query"], "{path}");
        assert_eq!(
            a.body["total"], b.body["total"],
            "{path}: {} vs {}",
            a.body, b.body
        );
        assert_eq!(hit_set(&a.body), hit_set(&b.body), "{path}");
        if path.contains("limit=1") {
            assert_eq!(a.body["hits"].as_array().unwrap().len(), 1);
        }
    }
    // A name match outranks a description match on both.
    let path = "/api/search?q=kettle%20water";
    for side in &t {
        let o = side.call(Who::Anonymous, "GET", path, None, "").await;
        assert_eq!(o.body["total"], 2, "{}: {}", side.name, o.body);
        assert_eq!(
            o.body["hits"][0]["name"], "Copper Kettle",
            "{}: {}",
            side.name, o.body
        );
    }
    // Bad requests answer alike.
    for (q, status) in [
        ("", 422),
        ("q=", 422),
        ("q=%25%25%20__", 200),
        ("q=tea&limit=0", 422),
        ("q=tea&limit=101", 422),
        ("q=tea&limit=ten", 422),
        ("q=tea&q=cup", 400),
        ("q=%ZZ", 400),
    ] {
        both(
            &t,
            Who::Anonymous,
            "GET",
            &format!("/api/search?{q}"),
            None,
            status,
        )
        .await;
    }
    let long = format!("/api/search?q={}", "a".repeat(201));
    both(&t, Who::Anonymous, "GET", &long, None, 422).await;
    both(&t, Who::Anonymous, "POST", "/api/search?q=tea", None, 405).await;
}
