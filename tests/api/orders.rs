use banyan_tests::new_client;
use banyan_tests::spawn_app;
use serde_json::{Value, json};

use crate::{expect_error, product_body};

#[tokio::test]
async fn placing_an_order_takes_stock_and_counts_sales() {
    let app = spawn_app().await;
    let admin = app.admin_client().await;
    let a = app.create_product(&admin, product_body("O-A")).await;
    let mut bb = product_body("O-B");
    bb["price_cents"] = json!(1000);
    let b = app.create_product(&admin, bb).await;
    let customer = new_client();
    let user = app.customer(&customer).await;

    let order_body = json!({"items": [
        {"product_id": a["id"], "quantity": 2},
        {"product_id": b["id"], "quantity": 1},
        {"product_id": a["id"], "quantity": 1}
    ]});
    let r = app
        .send_json(&customer, "POST", "/api/orders", &order_body)
        .await;
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = r.json().await.unwrap();
    assert_eq!(location, format!("/api/orders/{}", order["id"]));
    assert_eq!(order["user_id"], user["id"]);
    assert_eq!(order["total_cents"], 3 * 2599 + 1000);
    assert_eq!(order["currency"], "USD");
    assert_eq!(
        order["items"].as_array().unwrap().len(),
        2,
        "duplicate lines are merged"
    );

    let a_after: Value = app
        .get(&format!("/api/products/{}", a["id"]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a_after["stock"], 7);
    assert_eq!(a_after["sales"], 3);

    assert_eq!(
        app.get_as(&customer, &location)
            .await
            .json::<Value>()
            .await
            .unwrap(),
        order
    );
    let mine: Value = app
        .get_as(&customer, "/api/orders")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["total"], 1);
    assert_eq!(mine["items"][0], order);

    // Someone else's order is not found; their list is empty.
    let other = new_client();
    app.customer(&other).await;
    expect_error(app.get_as(&other, &location).await, 404, "not_found").await;
    let theirs: Value = app
        .get_as(&other, "/api/orders")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["total"], 0);
}

#[tokio::test]
async fn order_failures_change_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_client().await;
    let a = app.create_product(&admin, product_body("F-A")).await;
    let customer = new_client();
    app.customer(&customer).await;
    let path = format!("/api/products/{}", a["id"]);

    expect_error(
        app.send_json(
            &new_client(),
            "POST",
            "/api/orders",
            &json!({"items": [{"product_id": a["id"], "quantity": 1}]}),
        )
        .await,
        401,
        "unauthorized",
    )
    .await;
    expect_error(
        app.get_as(&new_client(), "/api/orders").await,
        401,
        "unauthorized",
    )
    .await;

    // Short stock: 409, and the other line of the same order is not taken either.
    let mut bb = product_body("F-B");
    bb["stock"] = json!(100);
    let b = app.create_product(&admin, bb).await;
    let r = app
        .send_json(&customer, "POST", "/api/orders", &json!({"items": [{"product_id": b["id"], "quantity": 5}, {"product_id": a["id"], "quantity": 11}]}))
        .await;
    let e = expect_error(r, 409, "conflict").await;
    assert!(e["message"].as_str().unwrap().contains("only 10 in stock"));
    let b_after: Value = app
        .get(&format!("/api/products/{}", b["id"]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(b_after["stock"], 100);
    assert_eq!(b_after["sales"], 0);

    // Invalid lines are named.
    let r = app
        .send_json(&customer, "POST", "/api/orders", &json!({"items": [{"product_id": 0, "quantity": 1}, {"product_id": a["id"], "quantity": 0}, "x"]}))
        .await;
    let e = expect_error(r, 422, "validation").await;
    assert!(e["fields"]["items[0].product_id"].is_string(), "{e}");
    assert!(e["fields"]["items[1].quantity"].is_string(), "{e}");
    assert!(e["fields"]["items[2]"].is_string(), "{e}");
    expect_error(
        app.send_json(&customer, "POST", "/api/orders", &json!({"items": []}))
            .await,
        422,
        "validation",
    )
    .await;
    expect_error(
        app.send_json(&customer, "POST", "/api/orders", &json!({}))
            .await,
        422,
        "validation",
    )
    .await;
    let r = app
        .send_json(
            &customer,
            "POST",
            "/api/orders",
            &json!({"items": [{"product_id": 987654, "quantity": 1}]}),
        )
        .await;
    // Well formed, but naming a product the catalog does not hold (now): a conflict with the
    // catalog's state, like short stock.
    let e = expect_error(r, 409, "conflict").await;
    assert!(e["message"].as_str().unwrap().contains("987654"), "{e}");
    expect_error(
        app.get_as(&customer, "/api/orders/abc").await,
        404,
        "not_found",
    )
    .await;
    expect_error(
        app.get_as(&customer, "/api/orders?per_page=500").await,
        422,
        "validation",
    )
    .await;

    let a_after: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(
        (a_after["stock"].as_i64(), a_after["sales"].as_i64()),
        (Some(10), Some(0))
    );
    let mine: Value = app
        .get_as(&customer, "/api/orders")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["total"], 0);
}

/// Many customers race for the last unit: exactly one wins, the rest get 409, stock never goes
/// negative and sales count exactly the units sold. Repeated to give the race room to happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_orders_for_the_last_unit() {
    let app = spawn_app().await;
    let admin = app.admin_client().await;
    const RACERS: usize = 8;
    let mut customers = Vec::new();
    for _ in 0..RACERS {
        let c = new_client();
        app.customer(&c).await;
        customers.push(c);
    }
    for round in 0..5 {
        let mut body = product_body(&format!("LAST-{round}"));
        body["stock"] = json!(1);
        let p = app.create_product(&admin, body).await;
        let order = json!({"items": [{"product_id": p["id"], "quantity": 1}]});
        let results = futures::future::join_all(
            customers
                .iter()
                .map(|c| app.send_json(c, "POST", "/api/orders", &order)),
        )
        .await;
        let mut statuses: Vec<u16> = results.iter().map(|r| r.status().as_u16()).collect();
        statuses.sort();
        let mut expected = vec![201];
        expected.extend(std::iter::repeat_n(409, RACERS - 1));
        assert_eq!(statuses, expected, "round {round}");
        let after: Value = app
            .get(&format!("/api/products/{}", p["id"]))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(after["stock"], 0);
        assert_eq!(after["sales"], 1);
    }
}
