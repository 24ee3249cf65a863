use std::time::Duration;

use banyan_tests::{AppOptions, converges, new_client, spawn_app_with, spawn_synced_catalog};
use serde_json::{Value, json};

/// With product writes routed to the catalog service, its changes flow back to the monolith:
/// an order placed there sees the new price and the stock an admin set, orders' stock changes
/// still reach the catalog, and products created and deleted in the catalog appear and vanish
/// in the monolith, all within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_writes_reach_the_monolith_and_its_orders() {
    let app = spawn_app_with(AppOptions::seeded(50)).await;
    let catalog = spawn_synced_catalog(&app).await;
    let c = catalog.address.clone();
    converges(&format!("{c}/api/products?per_page=1"), |s, b| {
        s == 200 && b["total"] == 50
    })
    .await;
    let admin = app.admin_client().await;
    let mut lags = Vec::new();

    // An admin changes price and stock through the catalog (the write route has moved).
    let id = 7;
    let r = admin
        .patch(format!("{c}/api/products/{id}"))
        .json(&json!({"price_cents": 12_345, "stock": 7, "name": "Handed-off Kettle"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    lags.push(
        converges(&app.url(&format!("/api/products/{id}")), |_, b| {
            b["price_cents"] == 12_345 && b["stock"] == 7 && b["name"] == "Handed-off Kettle"
        })
        .await,
    );

    let before: Value = app
        .get(&format!("/api/products/{id}"))
        .await
        .json()
        .await
        .unwrap();
    // An order in the monolith pays the new price and takes the new stock...
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
    let order: Value = r.json().await.unwrap();
    assert_eq!(order["total_cents"], 24_690, "{order}");
    let short = app
        .send_json(
            &customer,
            "POST",
            "/api/orders",
            &json!({"items": [{"product_id": id, "quantity": 6}]}),
        )
        .await;
    assert_eq!(short.status(), 409, "only 5 left");
    // ...and what the order did to stock and sales reaches the catalog, its fields intact.
    lags.push(
        converges(&format!("{c}/api/products/{id}"), |_, b| {
            b["stock"] == 5
                && b["sales"] == before["sales"].as_i64().unwrap() + 2
                && b["price_cents"] == 12_345
                && b["name"] == "Handed-off Kettle"
        })
        .await,
    );

    // A write here racing an order there: neither undoes the other.
    let r = admin
        .patch(format!("{c}/api/products/{id}"))
        .json(&json!({"description": "raced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .send_json(
            &customer,
            "POST",
            "/api/orders",
            &json!({"items": [{"product_id": id, "quantity": 1}]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    for side in [app.address.clone(), c.clone()] {
        converges(&format!("{side}/api/products/{id}"), |_, b| {
            b["description"] == "raced" && b["stock"] == 4
        })
        .await;
    }

    // Created in the catalog: the monolith gets it under the same id and can sell it.
    let r = admin
        .post(format!("{c}/api/products"))
        .json(&json!({"sku": "HANDOFF-1", "name": "Catalog-born Lamp", "category": "home", "price_cents": 999, "stock": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let new_id = created["id"].as_i64().unwrap();
    assert!(new_id > 50, "no monolith id reused: {new_id}");
    lags.push(
        converges(&app.url(&format!("/api/products/{new_id}")), |s, b| {
            s == 200 && b["sku"] == "HANDOFF-1" && b["stock"] == 3
        })
        .await,
    );
    let r = app
        .send_json(
            &customer,
            "POST",
            "/api/orders",
            &json!({"items": [{"product_id": new_id, "quantity": 3}]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    converges(&format!("{c}/api/products/{new_id}"), |_, b| {
        b["stock"] == 0 && b["sales"] == 3
    })
    .await;

    // Deleted in the catalog: gone from the monolith too.
    let r = admin
        .delete(format!("{c}/api/products/{new_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    lags.push(
        converges(&app.url(&format!("/api/products/{new_id}")), |s, _| {
            s == 404
        })
        .await,
    );

    // Both sides end identical, product for product.
    let all = "/api/products?per_page=100&sort=price";
    let mono: Value = app.get(all).await.json().await.unwrap();
    converges(&format!("{c}{all}"), |_, b| *b == mono).await;

    eprintln!("handoff lags: {lags:?}");
    let worst = lags.iter().max().unwrap();
    assert!(*worst < Duration::from_secs(2), "a change took {worst:?}");
}
