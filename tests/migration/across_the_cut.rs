//! A client never sees the cut: a user's own write made on one side is there for that user's
//! next request on the other, with no pause between them, in both directions:
//! - writes on the services (auth, product writes), orders on the monolith: the services answer
//!   a write once it is in the monolith (before, an order placed at once failed with a 500 for
//!   a fresh user, 422 for a fresh product, and charged the old price);
//! - writes on the monolith, reads on the services (product reads, logins): the monolith's
//!   answer carries the change streams' position in a cookie, and a service answers the
//!   writer's next request once its copy has caught up with it.

use std::time::Duration;

use banyan_tests::proxy::spawn_proxy;
use banyan_tests::{
    AppOptions, TestApp, new_client, random_hex, spawn_app_with, spawn_synced_auth,
    spawn_synced_catalog,
};
use serde_json::{Value, json};

fn table(legacy: &str, auth: &str, catalog: &str) -> String {
    format!(
        "[proxy]\nreload_settle = \"50ms\"\n\n\
         [upstreams.legacy]\naddrs = [\"{legacy}\"]\n\n\
         [upstreams.auth]\naddrs = [\"{auth}\"]\n\n\
         [upstreams.catalog]\naddrs = [\"{catalog}\"]\n\n\
         [[route]]\nid = \"auth\"\npath = \"/api/auth\"\nupstream = \"auth\"\n\n\
         [[route]]\nid = \"products\"\npath = \"/api/products\"\nupstream = \"catalog\"\n\n\
         [[route]]\nid = \"everything-else\"\npath = \"/\"\nupstream = \"legacy\"\n"
    )
}

/// Product reads and logins on the services; product writes, registrations and orders on the
/// monolith (the usual order: reads move first).
fn reads_moved(legacy: &str, auth: &str, catalog: &str) -> String {
    format!(
        "[proxy]\nreload_settle = \"50ms\"\n\n\
         [upstreams.legacy]\naddrs = [\"{legacy}\"]\n\n\
         [upstreams.auth]\naddrs = [\"{auth}\"]\n\n\
         [upstreams.catalog]\naddrs = [\"{catalog}\"]\n\n\
         [[route]]\nid = \"register\"\npath = \"/api/auth/register\"\nupstream = \"legacy\"\n\n\
         [[route]]\nid = \"auth\"\npath = \"/api/auth\"\nupstream = \"auth\"\n\n\
         [[route]]\nid = \"products-read\"\npath = \"/api/products\"\nmethods = [\"GET\", \"HEAD\"]\nupstream = \"catalog\"\n\n\
         [[route]]\nid = \"everything-else\"\npath = \"/\"\nupstream = \"legacy\"\n"
    )
}

fn addr(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// Waits until `url` answers with `total == n` (the service has copied the seeded catalog).
async fn wait_total(url: &str, n: u64) {
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = client
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        if v["total"] == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} never reached {n}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send(client: &reqwest::Client, method: &str, url: String, body: Value) -> (u16, Value) {
    let r = client
        .request(method.parse().unwrap(), url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn order(client: &reqwest::Client, base: &str, product: i64) -> (u16, Value) {
    send(
        client,
        "POST",
        format!("{base}/api/orders"),
        json!({"items": [{"product_id": product, "quantity": 1}]}),
    )
    .await
}

/// The monolith, synced auth and catalog services, and the proxy on a table made by `table`
/// from their addresses; the admin logged in through the proxy.
struct Cut {
    _app: TestApp,
    _auth: banyan_tests::ServiceProcess,
    _catalog: banyan_tests::ServiceProcess,
    proxy: banyan_tests::proxy::ProxyApp,
    admin: reqwest::Client,
}

impl Cut {
    async fn start(table: fn(&str, &str, &str) -> String) -> Cut {
        let app: TestApp = spawn_app_with(AppOptions::seeded(50)).await;
        let auth = spawn_synced_auth(&app).await;
        let catalog = spawn_synced_catalog(&app).await;
        wait_total(&format!("{}/api/products?per_page=1", catalog.address), 50).await;
        let proxy = spawn_proxy(&table(
            addr(&app.address),
            addr(&auth.address),
            addr(&catalog.address),
        ))
        .await;
        // The admin account was created in the monolith at start: wait until the auth service
        // has it.
        let admin = new_client();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, _) = send(
                &admin,
                "POST",
                format!("{}/api/auth/login", proxy.address),
                json!({"email": app.admin_email, "password": app.admin_password}),
            )
            .await;
            if status == 200 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the admin never reached the auth service"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Cut {
            _app: app,
            _auth: auth,
            _catalog: catalog,
            proxy,
            admin,
        }
    }
}

async fn login(client: &reqwest::Client, base: &str, email: &str, password: &str) {
    let (status, body) = send(
        client,
        "POST",
        format!("{base}/api/auth/login"),
        json!({"email": email, "password": password}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_users_own_writes_are_there_on_the_other_side_at_once() {
    let cut = Cut::start(table).await;
    let (base, admin) = (cut.proxy.address.clone(), &cut.admin);

    // Register, log in and order at once, 100 times (each a new user).
    let mut failures = Vec::new();
    for i in 0..100 {
        let client = new_client();
        let email = format!("cut-{i}-{}@test.example", random_hex(3));
        let (status, body) = send(
            &client,
            "POST",
            format!("{base}/api/auth/register"),
            json!({"email": email, "password": "correct horse", "name": "Cut"}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        login(&client, &base, &email, "correct horse").await;
        let (status, body) = order(&client, &base, 1 + (i % 50)).await;
        if status != 201 {
            failures.push(format!("register-login-order {i}: {status} {body}"));
        }
    }

    // One customer for the product cases.
    let customer = new_client();
    let email = format!("buyer-{}@test.example", random_hex(3));
    let (status, _) = send(
        &customer,
        "POST",
        format!("{base}/api/auth/register"),
        json!({"email": email, "password": "correct horse", "name": "Buyer"}),
    )
    .await;
    assert_eq!(status, 201);
    login(&customer, &base, &email, "correct horse").await;

    // Create a product through the catalog and order it at once, 100 times.
    for i in 0..100 {
        let (status, created) = send(admin, "POST", format!("{base}/api/products"), json!({
            "sku": format!("CUT-{i}-{}", random_hex(3)), "name": "Cut Kettle", "category": "kitchen",
            "price_cents": 1000 + i, "stock": 3
        })).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_i64().unwrap();
        let (status, body) = order(&customer, &base, id).await;
        if status != 201 || body["total_cents"] != 1000 + i {
            failures.push(format!("create-then-order {i}: {status} {body}"));
        }
    }

    // Change a price through the catalog and order at once: the order charges the new price.
    for i in 0..100 {
        let id = 1 + (i % 50);
        let price = 5000 + i;
        let (status, body) = send(
            admin,
            "PATCH",
            format!("{base}/api/products/{id}"),
            json!({"price_cents": price, "stock": 100}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = order(&customer, &base, id).await;
        if status != 201 || body["total_cents"] != price {
            failures.push(format!("patch-then-order {i}: {status} {body}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 300 saw the cut: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// A user the monolith does not know yet (here: registered on an auth service that does not
/// write back at all) ordering there gets 503 with `Retry-After`, not a 500: a dependency that
/// is behind is not a server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_for_a_user_not_here_yet_is_a_503_to_retry() {
    let app = spawn_app_with(AppOptions::seeded(5)).await;
    let auth = banyan_tests::spawn_auth(&app).await;
    let client = new_client();
    // The service's fresh database numbers users from 1, as the monolith (whose only user is
    // its admin) does: the fifth one is a user the monolith has never seen.
    let mut email = String::new();
    for _ in 0..5 {
        email = format!("elsewhere-{}@test.example", random_hex(3));
        let (status, body) = send(
            &client,
            "POST",
            format!("{}/api/auth/register", auth.address),
            json!({"email": email, "password": "correct horse", "name": "Elsewhere"}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    login(&client, &auth.address, &email, "correct horse").await;
    let r = client
        .post(format!("{}/api/orders", app.address))
        .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
}

/// Writes on the monolith, the writer's next read on a service: 100 create-then-read, 100
/// patch-then-read, 100 order-then-read (stock) and 100 register-then-login, each answered as
/// the monolith alone would.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_on_a_service_see_the_users_own_monolith_writes_at_once() {
    let cut = Cut::start(reads_moved).await;
    let (base, admin) = (cut.proxy.address.clone(), &cut.admin);
    let get = |client: &reqwest::Client, url: String| {
        let client = client.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let mut failures = Vec::new();
    for i in 0..100 {
        let (status, created) = send(admin, "POST", format!("{base}/api/products"), json!({
            "sku": format!("BACK-{i}-{}", random_hex(3)), "name": "Back Kettle", "category": "kitchen",
            "price_cents": 2000 + i, "stock": 7
        })).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_i64().unwrap();
        let (status, body) = get(admin, format!("{base}/api/products/{id}")).await;
        if status != 200 || body["price_cents"] != 2000 + i {
            failures.push(format!("create-then-read {i}: {status} {body}"));
        }
    }
    for i in 0..100 {
        let id = 1 + (i % 50);
        let (status, body) = send(
            admin,
            "PATCH",
            format!("{base}/api/products/{id}"),
            json!({"price_cents": 9000 + i, "stock": 500}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = get(admin, format!("{base}/api/products/{id}")).await;
        if status != 200 || body["price_cents"] != 9000 + i {
            failures.push(format!("patch-then-read {i}: {status} {body}"));
        }
    }
    let customer = new_client();
    let email = format!("reader-{}@test.example", random_hex(3));
    let (status, _) = send(
        &customer,
        "POST",
        format!("{base}/api/auth/register"),
        json!({"email": email, "password": "correct horse", "name": "Reader"}),
    )
    .await;
    assert_eq!(status, 201);
    login(&customer, &base, &email, "correct horse").await;
    for i in 0..100 {
        let id = 1 + (i % 50);
        let (_, before) = get(&customer, format!("{base}/api/products/{id}")).await;
        let (status, body) = order(&customer, &base, id).await;
        assert_eq!(status, 201, "{body}");
        let (status, after) = get(&customer, format!("{base}/api/products/{id}")).await;
        if status != 200 || after["stock"].as_i64() != before["stock"].as_i64().map(|s| s - 1) {
            failures.push(format!(
                "order-then-read {i}: {status} stock {} then {}",
                before["stock"], after["stock"]
            ));
        }
    }
    for i in 0..100 {
        let client = new_client();
        let email = format!("later-{i}-{}@test.example", random_hex(3));
        let (status, body) = send(
            &client,
            "POST",
            format!("{base}/api/auth/register"),
            json!({"email": email, "password": "correct horse", "name": "Later"}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = send(
            &client,
            "POST",
            format!("{base}/api/auth/login"),
            json!({"email": email, "password": "correct horse"}),
        )
        .await;
        if status != 200 {
            failures.push(format!("register-then-login {i}: {status} {body}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 400 saw the cut: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}
