use banyan_tests::{AppOptions, new_client, spawn_app, spawn_app_with};
use serde_json::{Value, json};

use crate::{expect_error, product_body};

#[tokio::test]
async fn listing_filters_sorts_and_pages_the_seeded_catalog() {
    let app = spawn_app_with(AppOptions::seeded(300)).await;
    let page: Value = app
        .get("/api/products?category=kitchen&sort=-price&per_page=7")
        .await
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(page["page"], 1);
    assert_eq!(page["per_page"], 7);
    assert!(
        page["total"].as_i64().unwrap() > 7,
        "seeded catalog has kitchen products"
    );
    assert_eq!(items.len(), 7);
    let prices: Vec<i64> = items
        .iter()
        .map(|p| p["price_cents"].as_i64().unwrap())
        .collect();
    assert!(
        prices.windows(2).all(|w| w[0] >= w[1]),
        "sorted by -price: {prices:?}"
    );
    assert!(items.iter().all(|p| p["category"] == "kitchen"));

    // Every field of the contract is there, with RFC 3339 timestamps.
    let p = &items[0];
    for field in [
        "id",
        "sku",
        "name",
        "description",
        "category",
        "price_cents",
        "currency",
        "stock",
        "sales",
        "created_at",
        "updated_at",
    ] {
        assert!(p.get(field).is_some(), "missing {field} in {p}");
    }
    assert!(p["created_at"].as_str().unwrap().ends_with('Z'));

    // Price window, ascending.
    let page: Value = app
        .get("/api/products?min_price=1000&max_price=5000&sort=price&per_page=100")
        .await
        .json()
        .await
        .unwrap();
    let prices: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["price_cents"].as_i64().unwrap())
        .collect();
    assert!(!prices.is_empty());
    assert!(prices.iter().all(|p| (1000..=5000).contains(p)));
    assert!(prices.windows(2).all(|w| w[0] <= w[1]));

    // Pages do not overlap and cover the total.
    let total = app
        .get("/api/products?per_page=100")
        .await
        .json::<Value>()
        .await
        .unwrap()["total"]
        .as_i64()
        .unwrap();
    assert_eq!(total, 300);
    let mut seen = std::collections::HashSet::new();
    for page in 1..=3 {
        let v: Value = app
            .get(&format!(
                "/api/products?sort=-sales&per_page=100&page={page}"
            ))
            .await
            .json()
            .await
            .unwrap();
        for p in v["items"].as_array().unwrap() {
            assert!(
                seen.insert(p["id"].as_i64().unwrap()),
                "id repeated across pages"
            );
        }
    }
    assert_eq!(seen.len(), 300);
    let beyond: Value = app.get("/api/products?page=99").await.json().await.unwrap();
    assert_eq!(beyond["items"].as_array().unwrap().len(), 0);
    assert_eq!(beyond["total"], 300);

    // Sorting by name and by newest.
    let v: Value = app
        .get("/api/products?sort=-created_at&per_page=5")
        .await
        .json()
        .await
        .unwrap();
    let created: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["created_at"].as_str().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!(app.get("/api/products?sort=name").await.status(), 200);
}

#[tokio::test]
async fn listing_rejects_bad_parameters_naming_each() {
    let app = spawn_app().await;
    let e = expect_error(app.get("/api/products?per_page=0").await, 422, "validation").await;
    assert_eq!(e["fields"]["per_page"], "must be between 1 and 100");
    let e = expect_error(
        app.get("/api/products?per_page=101&page=0&sort=cheapest")
            .await,
        422,
        "validation",
    )
    .await;
    assert!(e["fields"]["per_page"].is_string());
    assert!(e["fields"]["page"].is_string());
    assert!(e["fields"]["sort"].as_str().unwrap().contains("-price"));
    let e = expect_error(
        app.get("/api/products?page=abc&min_price=-5").await,
        422,
        "validation",
    )
    .await;
    assert_eq!(e["fields"]["page"], "must be an integer");
    assert!(e["fields"]["min_price"].is_string());
    // A range nothing is in: an empty page (the document cannot state a rule across two
    // parameters, so the server has none).
    let r = app.get("/api/products?min_price=500&max_price=100").await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["total"], 0);
    // A malformed query string is the client's mistake.
    expect_error(
        app.get("/api/products?category=%ZZ").await,
        400,
        "bad_request",
    )
    .await;
    expect_error(
        app.get("/api/products?page=1&page=2").await,
        400,
        "bad_request",
    )
    .await;
}

#[tokio::test]
async fn product_by_id_and_not_found() {
    let app = spawn_app_with(AppOptions::seeded(20)).await;
    let p: Value = app.get("/api/products/3").await.json().await.unwrap();
    assert_eq!(p["id"], 3);
    let e = expect_error(app.get("/api/products/999999").await, 404, "not_found").await;
    assert_eq!(e["message"], "product 999999 does not exist");
    expect_error(app.get("/api/products/abc").await, 404, "not_found").await;
    expect_error(app.get("/api/products/-1").await, 404, "not_found").await;
}

#[tokio::test]
async fn bestsellers_by_sales_with_limit_and_fresh_after_writes() {
    let app = spawn_app_with(AppOptions::seeded(200)).await;
    let list: Vec<Value> = app
        .get("/api/products/bestsellers?limit=5")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 5);
    let sales: Vec<i64> = list.iter().map(|p| p["sales"].as_i64().unwrap()).collect();
    assert!(sales.windows(2).all(|w| w[0] >= w[1]), "{sales:?}");
    let default: Vec<Value> = app
        .get("/api/products/bestsellers")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(default.len(), 10);
    expect_error(
        app.get("/api/products/bestsellers?limit=0").await,
        422,
        "validation",
    )
    .await;
    expect_error(
        app.get("/api/products/bestsellers?limit=101").await,
        422,
        "validation",
    )
    .await;

    // The list is cached, but an admin write drops the cache: a deleted top seller disappears.
    let admin = app.admin_client().await;
    let top = list[0]["id"].as_i64().unwrap();
    let r = admin
        .delete(app.url(&format!("/api/products/{top}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let after: Vec<Value> = app
        .get("/api/products/bestsellers?limit=5")
        .await
        .json()
        .await
        .unwrap();
    assert!(after.iter().all(|p| p["id"].as_i64() != Some(top)));
}

#[tokio::test]
async fn categories_count_products() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/api/categories")
            .await
            .json::<Value>()
            .await
            .unwrap(),
        json!([])
    );
    let admin = app.admin_client().await;
    for (i, cat) in ["kitchen", "kitchen", "books"].iter().enumerate() {
        let mut body = product_body(&format!("C-{i}"));
        body["category"] = json!(cat);
        app.create_product(&admin, body).await;
    }
    let cats: Value = app.get("/api/categories").await.json().await.unwrap();
    assert_eq!(
        cats,
        json!([{"name": "books", "product_count": 1}, {"name": "kitchen", "product_count": 2}])
    );
}

#[tokio::test]
async fn admin_creates_replaces_patches_and_deletes() {
    let app = spawn_app().await;
    let admin = app.admin_client().await;
    let r = app
        .send_json(&admin, "POST", "/api/products", &product_body("KT-1"))
        .await;
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_i64().unwrap();
    assert_eq!(location, format!("/api/products/{id}"));
    assert_eq!(created["sales"], 0);
    assert_eq!(created["name"], "Test Kettle KT-1");
    assert_eq!(
        app.get(&location).await.json::<Value>().await.unwrap(),
        created
    );

    // PUT replaces every writable field; echoing read-only fields back is allowed.
    let mut full = created.clone();
    full["name"] = json!("Renamed Kettle");
    full["price_cents"] = json!(1999);
    full["description"] = json!("Still boils water");
    let r = app.send_json(&admin, "PUT", &location, &full).await;
    assert_eq!(r.status(), 200);
    let replaced: Value = r.json().await.unwrap();
    assert_eq!(replaced["name"], "Renamed Kettle");
    assert_eq!(replaced["price_cents"], 1999);
    assert_eq!(replaced["created_at"], created["created_at"]);

    // PATCH changes only what it names.
    let r = app
        .send_json(&admin, "PATCH", &location, &json!({"stock": 3}))
        .await;
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().await.unwrap();
    assert_eq!(patched["stock"], 3);
    assert_eq!(patched["name"], "Renamed Kettle");

    let r = admin.delete(app.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    expect_error(app.get(&location).await, 404, "not_found").await;
    expect_error(
        admin.delete(app.url(&location)).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_error(
        app.send_json(&admin, "PATCH", &location, &json!({"stock": 1}))
            .await,
        404,
        "not_found",
    )
    .await;
    expect_error(
        app.send_json(&admin, "PUT", &location, &product_body("KT-9"))
            .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn product_writes_need_an_admin() {
    let app = spawn_app_with(AppOptions::seeded(5)).await;
    let anonymous = new_client();
    let customer = new_client();
    app.customer(&customer).await;
    for client in [&anonymous, &customer] {
        let expected = if std::ptr::eq(client, &anonymous) {
            (401, "unauthorized")
        } else {
            (403, "forbidden")
        };
        let r = app
            .send_json(client, "POST", "/api/products", &product_body("NOPE-1"))
            .await;
        expect_error(r, expected.0, expected.1).await;
        let r = app
            .send_json(client, "PUT", "/api/products/1", &product_body("NOPE-1"))
            .await;
        expect_error(r, expected.0, expected.1).await;
        let r = app
            .send_json(client, "PATCH", "/api/products/1", &json!({"stock": 0}))
            .await;
        expect_error(r, expected.0, expected.1).await;
        let r = client
            .delete(app.url("/api/products/1"))
            .send()
            .await
            .unwrap();
        expect_error(r, expected.0, expected.1).await;
    }
    // Nothing changed.
    let p: Value = app.get("/api/products/1").await.json().await.unwrap();
    assert_ne!(p["stock"], 0);
}

#[tokio::test]
async fn product_writes_reject_bad_bodies() {
    let app = spawn_app().await;
    let admin = app.admin_client().await;
    // Malformed JSON: 400.
    let r = admin
        .post(app.url("/api/products"))
        .header("content-type", "application/json")
        .body("{\"sku\": ")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "bad_request").await;
    // Not an object: 400.
    let r = app
        .send_json(&admin, "POST", "/api/products", &json!([1, 2]))
        .await;
    expect_error(r, 400, "bad_request").await;
    // Wrong content type: 415.
    let r = admin
        .post(app.url("/api/products"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(r, 415, "unsupported_media_type").await;
    // Oversized: 413.
    let mut big = product_body("BIG-1");
    big["description"] = json!("x".repeat(200_000));
    let r = app.send_json(&admin, "POST", "/api/products", &big).await;
    expect_error(r, 413, "payload_too_large").await;
    // Every bad field named at once: 422.
    let r = app
        .send_json(&admin, "POST", "/api/products", &json!({"sku": "bad sku!", "name": "", "price_cents": -1, "stock": "lots", "currency": "usd", "colour": "red"}))
        .await;
    let e = expect_error(r, 422, "validation").await;
    for field in [
        "sku",
        "name",
        "price_cents",
        "stock",
        "currency",
        "colour",
        "category",
    ] {
        assert!(e["fields"][field].is_string(), "{field} not named in {e}");
    }
    // PATCH with a null or a wrong type.
    let p = app.create_product(&admin, product_body("OK-1")).await;
    let path = format!("/api/products/{}", p["id"]);
    let e = expect_error(
        app.send_json(&admin, "PATCH", &path, &json!({"name": null, "stock": 1.5}))
            .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(e["fields"]["name"], "must not be null");
    assert_eq!(e["fields"]["stock"], "must be an integer");
    // Duplicate sku: 409, on create and on update.
    expect_error(
        app.send_json(&admin, "POST", "/api/products", &product_body("OK-1"))
            .await,
        409,
        "conflict",
    )
    .await;
    let other = app.create_product(&admin, product_body("OK-2")).await;
    let r = app
        .send_json(
            &admin,
            "PATCH",
            &format!("/api/products/{}", other["id"]),
            &json!({"sku": "OK-1"}),
        )
        .await;
    expect_error(r, 409, "conflict").await;
    // Nothing was lost or half-written.
    let after: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(after, p);
}
