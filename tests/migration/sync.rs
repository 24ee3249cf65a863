use std::time::Duration;

use banyan_tests::{AppOptions, TestApp, new_client, spawn_app_with, spawn_synced_catalog};
use serde_json::{Value, json};

async fn converges(catalog: &str, path: &str, check: impl Fn(u16, &Value) -> bool) -> Duration {
    banyan_tests::converges(&format!("{catalog}{path}"), check).await
}

async fn same_as_monolith(app: &TestApp, catalog: &str, id: i64) -> Duration {
    let expected: Value = app
        .get(&format!("/api/products/{id}"))
        .await
        .json()
        .await
        .unwrap();
    converges(catalog, &format!("/api/products/{id}"), |s, b| {
        s == 200 && *b == expected
    })
    .await
}

/// Products created, changed (by an admin and by an order taking stock) and deleted in the
/// monolith show up in the catalog service within 2 s, through its change outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monolith_changes_reach_the_catalog_within_two_seconds() {
    let app = spawn_app_with(AppOptions::seeded(500)).await;
    let catalog = spawn_synced_catalog(&app).await;
    let c = catalog.address.clone();
    // The seeded catalog arrives through the outbox too.
    let first = converges(&c, "/api/products?per_page=1", |s, b| {
        s == 200 && b["total"] == 500
    })
    .await;
    let admin = app.admin_client().await;
    let mut lags = vec![first];

    let created: Value = app.create_product(&admin, json!({"sku": "SYNC-1", "name": "Synced Kettle", "category": "kitchen", "price_cents": 3000, "stock": 5})).await;
    let id = created["id"].as_i64().unwrap();
    lags.push(same_as_monolith(&app, &c, id).await);

    let r = app
        .send_json(
            &admin,
            "PATCH",
            &format!("/api/products/{id}"),
            &json!({"price_cents": 2500, "name": "Synced Kettle II"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    lags.push(same_as_monolith(&app, &c, id).await);

    let customer = new_client();
    app.customer(&customer).await;
    let r = app
        .send_json(
            &customer,
            "POST",
            "/api/orders",
            &json!({"items": [{"product_id": id, "quantity": 2}]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    lags.push(
        converges(&c, &format!("/api/products/{id}"), |_, b| {
            b["stock"] == 3 && b["sales"] == 2
        })
        .await,
    );

    let r = admin
        .delete(app.url(&format!("/api/products/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    lags.push(converges(&c, &format!("/api/products/{id}"), |s, _| s == 404).await);

    // Listings and bestsellers follow too (the sync drops the catalog's caches).
    let a: Value = app
        .get("/api/products?sort=-sales&per_page=20")
        .await
        .json()
        .await
        .unwrap();
    converges(&c, "/api/products?sort=-sales&per_page=20", |_, b| *b == a).await;

    // The monolith trims what the catalog (its one registered consumer here) has applied.
    let monolith = service_kit::db::Database::connect(&app.storage.monolith_database_url(), 1)
        .await
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM product_changes")
            .fetch_one(&monolith.pool)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{left} outbox rows never trimmed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let position: i64 = sqlx::query_scalar(
        "SELECT position FROM sync_state WHERE name = 'consumer:product_changes:catalog'",
    )
    .fetch_one(&monolith.pool)
    .await
    .unwrap();
    assert!(
        position >= 504,
        "the catalog reported its position: {position}"
    );

    let worst = lags.iter().skip(1).max().unwrap();
    eprintln!("sync lags: initial {:?}, then {:?}", lags[0], &lags[1..]);
    assert!(
        *worst < Duration::from_secs(2),
        "a change took {worst:?} to reach the catalog"
    );
}

/// Products created, changed and deleted in the monolith are found (and no longer found) by the
/// search service within 2 s; a restart rebuilds the index from the service's own database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monolith_changes_reach_search_within_two_seconds() {
    let app = spawn_app_with(AppOptions::seeded(300)).await;
    let mut search = banyan_tests::spawn_synced_search(&app).await;
    let s = search.address.clone();
    let admin = app.admin_client().await;
    let found = |q: &str| format!("{s}/api/search?q={q}");
    let mut lags = Vec::new();

    let created: Value = app
        .create_product(&admin, json!({"sku": "FIND-1", "name": "Zeppelin Lantern", "category": "home", "price_cents": 4200, "stock": 1}))
        .await;
    let id = created["id"].as_i64().unwrap();
    lags.push(
        banyan_tests::converges(&found("zeppelin"), |_, b| {
            b["total"] == 1 && b["hits"][0]["id"] == id
        })
        .await,
    );
    let r = app
        .send_json(
            &admin,
            "PATCH",
            &format!("/api/products/{id}"),
            &json!({"name": "Quixotic Lantern", "price_cents": 4300}),
        )
        .await;
    assert_eq!(r.status(), 200);
    lags.push(
        banyan_tests::converges(&found("quixotic"), |_, b| {
            b["total"] == 1 && b["hits"][0]["price_cents"] == 4300
        })
        .await,
    );
    assert_eq!(
        reqwest::get(found("zeppelin"))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["total"],
        0,
        "the old name is gone from the index"
    );
    let r = admin
        .delete(app.url(&format!("/api/products/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    lags.push(banyan_tests::converges(&found("quixotic"), |_, b| b["total"] == 0).await);
    eprintln!("search lags: {lags:?}");
    let worst = lags.iter().max().unwrap();
    assert!(
        *worst < Duration::from_secs(2),
        "a change took {worst:?} to reach search"
    );

    // The seeded products are all there, and survive a restart (the index is rebuilt from the
    // service's own table before it serves).
    let total = |b: &Value| b["total"].as_i64().unwrap_or(-1);
    let first: Value = app.get("/api/products/1").await.json().await.unwrap();
    let word = first["name"]
        .as_str()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_lowercase();
    let all_kitchen = format!("/api/search?q={word}&limit=5");
    let before: Value = reqwest::get(format!("{s}{all_kitchen}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(total(&before) > 0, "{before}");
    search.restart().await;
    let after: Value = reqwest::get(format!("{}{all_kitchen}", search.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(total(&after), total(&before));
}

/// Events recorded by the monolith, before the analytics service starts and while it runs,
/// reach it (once each), so its summary covers the monolith's history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monolith_events_reach_analytics() {
    let app = banyan_tests::spawn_app().await;
    for p in [1, 1, 2] {
        let event = json!({"type": "view", "product_id": p});
        let r = app.post_json("/api/analytics/events", &event).await;
        assert_eq!(r.status(), 202);
    }
    let analytics = banyan_tests::spawn_synced_analytics(&app).await;
    for p in [2, 3] {
        let event = json!({"type": "view", "product_id": p});
        let r = app.post_json("/api/analytics/events", &event).await;
        assert_eq!(r.status(), 202);
    }
    let summary = format!("{}/api/analytics/summary?window=1h", analytics.address);
    let lag = banyan_tests::converges(&summary, |_, b| b["counts"]["view"] == 5).await;
    eprintln!("events copied within {lag:?}");
    let mut mine: Value = reqwest::get(&summary).await.unwrap().json().await.unwrap();
    let mut theirs: Value = app
        .get("/api/analytics/summary?window=1h")
        .await
        .json()
        .await
        .unwrap();
    mine.as_object_mut().unwrap().remove("since");
    theirs.as_object_mut().unwrap().remove("since");
    assert_eq!(mine, theirs);
}
