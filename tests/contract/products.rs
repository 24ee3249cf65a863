//! `/api/products*` and `/api/categories`: the monolith against the catalog service.

use banyan_tests::{new_client, spawn_app, spawn_catalog};
use serde_json::json;

use crate::{Target, Who, both, both_typed};

async fn targets(
    app: &banyan_tests::TestApp,
    catalog: &banyan_tests::ServiceProcess,
) -> [Target; 2] {
    // One login per kind of caller, made through the monolith; the cookie is valid on both,
    // because both resolve it against the same session store.
    let admin = app.admin_client().await;
    let customer = new_client();
    app.customer(&customer).await;
    let anonymous = new_client();
    [
        Target {
            name: "monolith",
            base: app.address.clone(),
            admin: admin.clone(),
            customer: customer.clone(),
            anonymous: anonymous.clone(),
        },
        Target {
            name: "catalog-service",
            base: catalog.address.clone(),
            admin,
            customer,
            anonymous,
        },
    ]
}

fn product(sku: &str, category: &str, price: i64, name: &str) -> String {
    json!({"sku": sku, "name": name, "description": format!("About {name}"), "category": category, "price_cents": price, "stock": 10}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_and_categories_keep_the_contract() {
    let app = spawn_app().await;
    let catalog = spawn_catalog(&app).await;
    let t = targets(&app, &catalog).await;
    eprintln!("storage: {}", app.storage.describe());

    // Empty catalog.
    both(&t, Who::Anonymous, "GET", "/api/products", None, 200).await;
    both(&t, Who::Anonymous, "GET", "/api/categories", None, 200).await;
    both(
        &t,
        Who::Anonymous,
        "GET",
        "/api/products/bestsellers",
        None,
        200,
    )
    .await;

    // Writes need an admin.
    let body = product("K-1", "kitchen", 2599, "Copper Kettle");
    both(
        &t,
        Who::Anonymous,
        "POST",
        "/api/products",
        Some(&body),
        401,
    )
    .await;
    both(&t, Who::Customer, "POST", "/api/products", Some(&body), 403).await;
    both(&t, Who::Customer, "DELETE", "/api/products/1", None, 403).await;

    // The same catalog on both, created in the same order.
    let items = [
        ("K-1", "kitchen", 2599, "Copper Kettle"),
        ("K-2", "kitchen", 1999, "cast iron skillet"),
        ("B-1", "books", 1299, "A Field Guide"),
        ("B-2", "books", 899, "Poetry"),
        ("G-1", "garden", 4599, "Watering Can"),
    ];
    for (sku, cat, price, name) in items {
        let created = both(
            &t,
            Who::Admin,
            "POST",
            "/api/products",
            Some(&product(sku, cat, price, name)),
            201,
        )
        .await;
        assert!(created.location.unwrap().starts_with("/api/products/"));
    }

    // Reads: listing with every filter and sort, pages, lookups, categories, bestsellers.
    for q in [
        "",
        "?per_page=2",
        "?per_page=2&page=2",
        "?page=9",
        "?category=books",
        "?min_price=1000&max_price=3000",
        "?sort=price",
        "?sort=-price",
        "?sort=name",
        "?sort=-created_at",
        "?sort=-sales",
        "?category=kitchen&sort=-price",
    ] {
        both(
            &t,
            Who::Anonymous,
            "GET",
            &format!("/api/products{q}"),
            None,
            200,
        )
        .await;
    }
    both(&t, Who::Anonymous, "GET", "/api/categories", None, 200).await;
    both(
        &t,
        Who::Anonymous,
        "GET",
        "/api/products/bestsellers?limit=3",
        None,
        200,
    )
    .await;
    both(&t, Who::Anonymous, "GET", "/api/products/1", None, 200).await;

    // Bad reads.
    for (path, status) in [
        ("/api/products/999999", 404),
        ("/api/products/abc", 404),
        ("/api/products/-1", 404),
        ("/api/products?per_page=0", 422),
        ("/api/products?per_page=101&page=0&sort=cheapest", 422),
        ("/api/products?page=abc", 422),
        ("/api/products?min_price=9&max_price=1", 200),
        ("/api/products?category=%ZZ", 400),
        ("/api/products?page=1&page=2", 400),
        ("/api/products/bestsellers?limit=0", 422),
        ("/api/nothing", 404),
    ] {
        both(&t, Who::Anonymous, "GET", path, None, status).await;
    }

    // Bad writes: every error body identical.
    both(
        &t,
        Who::Admin,
        "POST",
        "/api/products",
        Some("{\"sku\": "),
        400,
    )
    .await;
    both(&t, Who::Admin, "POST", "/api/products", Some("[1]"), 400).await;
    both_typed(
        &t,
        Who::Admin,
        "POST",
        "/api/products",
        Some("{}"),
        "text/plain",
        415,
    )
    .await;
    let big = json!({"sku": "BIG", "description": "x".repeat(100_000)}).to_string();
    both(&t, Who::Admin, "POST", "/api/products", Some(&big), 413).await;
    let bad = json!({"sku": "bad sku!", "name": "", "price_cents": -1, "stock": "lots", "currency": "usd", "colour": "red"}).to_string();
    both(&t, Who::Admin, "POST", "/api/products", Some(&bad), 422).await;
    both(
        &t,
        Who::Admin,
        "POST",
        "/api/products",
        Some(&product("K-1", "kitchen", 1, "Dup")),
        409,
    )
    .await;
    both(
        &t,
        Who::Admin,
        "PATCH",
        "/api/products/2",
        Some(&json!({"sku": "K-1"}).to_string()),
        409,
    )
    .await;
    both(
        &t,
        Who::Admin,
        "PATCH",
        "/api/products/2",
        Some(&json!({"name": null, "stock": 1.5}).to_string()),
        422,
    )
    .await;

    // Updates and deletes.
    both(
        &t,
        Who::Admin,
        "PATCH",
        "/api/products/1",
        Some(&json!({"price_cents": 2499, "stock": 3}).to_string()),
        200,
    )
    .await;
    both(
        &t,
        Who::Admin,
        "PUT",
        "/api/products/2",
        Some(&product("K-2", "kitchen", 2099, "Cast Iron Skillet")),
        200,
    )
    .await;
    both(
        &t,
        Who::Admin,
        "PUT",
        "/api/products/999",
        Some(&product("K-9", "kitchen", 1, "Nothing")),
        404,
    )
    .await;
    both(&t, Who::Anonymous, "GET", "/api/products/1", None, 200).await;
    both(
        &t,
        Who::Anonymous,
        "GET",
        "/api/products?sort=name",
        None,
        200,
    )
    .await;
    both(&t, Who::Admin, "DELETE", "/api/products/3", None, 204).await;
    both(&t, Who::Admin, "DELETE", "/api/products/3", None, 404).await;
    both(&t, Who::Anonymous, "GET", "/api/products/3", None, 404).await;
    both(&t, Who::Anonymous, "GET", "/api/categories", None, 200).await;
    both(
        &t,
        Who::Anonymous,
        "GET",
        "/api/products/bestsellers",
        None,
        200,
    )
    .await;
}

/// The catalog service's caches never serve a value older than its own last write: read
/// (cached), write, read again, many times over, through every cached endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_reads_after_its_writes_are_never_stale() {
    let app = spawn_app().await;
    let catalog = spawn_catalog(&app).await;
    let admin = app.admin_client().await;
    let url = |p: &str| format!("{}{p}", catalog.address);
    let r = admin.post(url("/api/products")).json(&json!({"sku": "C-1", "name": "Cached", "category": "kitchen", "price_cents": 100, "stock": 5})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    for price in 101..131 {
        // Warm every cache.
        admin
            .get(url(&format!("/api/products/{id}")))
            .send()
            .await
            .unwrap();
        admin
            .get(url("/api/products?category=kitchen"))
            .send()
            .await
            .unwrap();
        admin
            .get(url("/api/products/bestsellers"))
            .send()
            .await
            .unwrap();
        let r = admin
            .patch(url(&format!("/api/products/{id}")))
            .json(&json!({"price_cents": price}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let one: serde_json::Value = admin
            .get(url(&format!("/api/products/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(one["price_cents"], price, "product by id is stale");
        let page: serde_json::Value = admin
            .get(url("/api/products?category=kitchen"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["items"][0]["price_cents"], price, "listing is stale");
        let best: serde_json::Value = admin
            .get(url("/api/products/bestsellers"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(best[0]["price_cents"], price, "bestsellers are stale");
    }
}

/// The catalog service serves the paths it owns in its OpenAPI document, and its health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_health_and_openapi() {
    let app = spawn_app().await;
    let catalog = spawn_catalog(&app).await;
    let health: serde_json::Value = reqwest::get(format!("{}/health", catalog.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        health,
        json!({"status": "ok", "checks": {"database": "ok", "sessions": "ok"}})
    );
    let doc: serde_json::Value = reqwest::get(format!("{}/openapi.json", catalog.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert!(paths.iter().any(|p| *p == "/api/products/{id}"));
    assert!(
        paths
            .iter()
            .all(|p| !p.starts_with("/api/orders") && !p.starts_with("/api/auth")),
        "{paths:?}"
    );
}

/// The catalog service writes to its own database: PostgreSQL when the environment names one
/// (checked by reading the rows back from that database), SQLite under the data directory
/// otherwise; never to the monolith's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_rows_are_in_the_configured_database() {
    let app = spawn_app().await;
    let catalog = spawn_catalog(&app).await;
    let admin = app.admin_client().await;
    let r = admin
        .post(format!("{}/api/products", catalog.address))
        .json(&json!({"sku": "OWN-1", "name": "Own", "category": "kitchen", "price_cents": 1, "stock": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    match &app.storage.postgres {
        Some(pg) => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE sku = 'OWN-1'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(n, 1);
        }
        None => assert!(app.storage.data_dir.path().join("catalog.db").exists()),
    }
    // The monolith's catalog did not get the row.
    let mono: serde_json::Value = app.get("/api/products").await.json().await.unwrap();
    assert_eq!(mono["total"], 0);
}
