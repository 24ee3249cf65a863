//! `/api/auth/*`: the monolith against the auth service, each on its own users, and the
//! identity both share through the session store.

use banyan_tests::{
    ServiceProcess, TestApp, new_client, spawn_app, spawn_auth, spawn_catalog, spawn_synced_auth,
};
use serde_json::{Value, json};

use crate::{Target, Who, both, both_typed};

/// Fresh anonymous clients for each side: logins set cookies, and each side must get its own.
fn targets(app: &TestApp, auth: &ServiceProcess) -> [Target; 2] {
    let side = |name, base: &str| {
        let c = new_client();
        Target {
            name,
            base: base.to_owned(),
            admin: c.clone(),
            customer: c.clone(),
            anonymous: c,
        }
    };
    [
        side("monolith", &app.address),
        side("auth-service", &auth.address),
    ]
}

/// The session cookie's attributes, without its (random) value.
async fn login_cookie(t: &Target, body: &str) -> String {
    let r = t
        .anonymous
        .post(format!("{}/api/auth/login", t.base))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{} login", t.name);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let (first, rest) = cookie.split_once(';').unwrap();
    let (name, value) = first.split_once('=').unwrap();
    assert_eq!(value.len(), 43, "{}: 256 random bits", t.name);
    format!("{name}=<sid>;{rest}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_keeps_the_contract() {
    let app = spawn_app().await;
    let auth = spawn_auth(&app).await;
    let t = targets(&app, &auth);
    eprintln!("storage: {}", app.storage.describe());
    let reg = |email: &str| {
        json!({"email": email, "password": "correct horse", "name": "Ada"}).to_string()
    };

    let user = both(
        &t,
        Who::Anonymous,
        "POST",
        "/api/auth/register",
        Some(&reg("Ada@Example.com")),
        201,
    )
    .await;
    assert_eq!(user.body["email"], "ada@example.com");
    assert_eq!(user.body["role"], "customer");
    assert!(user.body.get("password_hash").is_none());
    for (body, status) in [
        (reg("ada@example.com"), 409),
        (reg("ADA@example.com"), 409),
        (reg("not-an-email"), 422),
        (json!({"email": "b@example.com", "password": "short", "name": ""}).to_string(), 422),
        (json!({}).to_string(), 422),
        (json!({"email": "c@example.com", "password": "correct horse", "name": "C", "role": "admin"}).to_string(), 422),
        (json!({"email": 5, "password": ["x"], "name": null}).to_string(), 422),
        ("{not json".to_owned(), 400),
        ("[1, 2]".to_owned(), 400),
    ] {
        both(&t, Who::Anonymous, "POST", "/api/auth/register", Some(&body), status).await;
    }
    both_typed(
        &t,
        Who::Anonymous,
        "POST",
        "/api/auth/register",
        Some(&reg("d@example.com")),
        "text/plain",
        415,
    )
    .await;
    let huge =
        json!({"email": "e@example.com", "password": "correct horse", "name": "x".repeat(70_000)})
            .to_string();
    both(
        &t,
        Who::Anonymous,
        "POST",
        "/api/auth/register",
        Some(&huge),
        413,
    )
    .await;

    // Logins: one message for an unknown email and a wrong password.
    for (body, status) in [
        (
            json!({"email": "ada@example.com", "password": "wrong horse"}).to_string(),
            401,
        ),
        (
            json!({"email": "nobody@example.com", "password": "correct horse"}).to_string(),
            401,
        ),
        (json!({"email": "ada@example.com"}).to_string(), 422),
        (json!({"email": "", "password": ""}).to_string(), 422),
    ] {
        both(
            &t,
            Who::Anonymous,
            "POST",
            "/api/auth/login",
            Some(&body),
            status,
        )
        .await;
    }
    both(&t, Who::Anonymous, "GET", "/api/auth/me", None, 401).await;
    let good = json!({"email": "ADA@example.com", "password": "correct horse"}).to_string();
    let (a, b) = (
        login_cookie(&t[0], &good).await,
        login_cookie(&t[1], &good).await,
    );
    assert_eq!(a, b, "the same cookie attributes");
    let me = both(&t, Who::Anonymous, "GET", "/api/auth/me", None, 200).await;
    assert_eq!(me.body["email"], "ada@example.com");
    both(&t, Who::Anonymous, "POST", "/api/auth/logout", None, 204).await;
    both(&t, Who::Anonymous, "GET", "/api/auth/me", None, 401).await;
    both(&t, Who::Anonymous, "POST", "/api/auth/logout", None, 204).await;
    both(&t, Who::Anonymous, "GET", "/api/auth/nothing", None, 404).await;
    both(&t, Who::Anonymous, "DELETE", "/api/auth/me", None, 405).await;
}

async fn me(base: &str, client: &reqwest::Client) -> (u16, Value) {
    let r = client
        .get(format!("{base}/api/auth/me"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// One identity across processes: a login made through the monolith is recognised by the auth
/// and catalog services, and a user registered and logged in through the auth service is
/// recognised by the monolith, where they can place an order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_made_anywhere_is_recognised_everywhere() {
    let app = spawn_app().await;
    let auth = spawn_synced_auth(&app).await;
    let catalog = spawn_catalog(&app).await;

    // Through the monolith.
    let via_monolith = new_client();
    let user = app.customer(&via_monolith).await;
    let start = std::time::Instant::now();
    loop {
        let (status, body) = me(&auth.address, &via_monolith).await;
        if status == 200 {
            assert_eq!(body, user, "the same user, id for id");
            break;
        }
        assert!(
            start.elapsed().as_secs() < 10,
            "auth never recognised the monolith's login: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    eprintln!(
        "monolith login recognised by auth after {:?}",
        start.elapsed()
    );
    // The catalog knows who it is: a customer is forbidden (403), not anonymous (401).
    let r = via_monolith
        .post(format!("{}/api/products", catalog.address))
        .json(&json!({"sku": "X"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let admin = app.admin_client().await;
    let (status, body) = me(&auth.address, &admin).await;
    assert_eq!((status, body["role"].as_str()), (200, Some("admin")));

    // Through the auth service.
    let via_auth = new_client();
    let r = via_auth
        .post(format!("{}/api/auth/register", auth.address))
        .json(&json!({"email": "grace@example.com", "password": "correct horse", "name": "Grace"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let grace: Value = r.json().await.unwrap();
    assert!(
        grace["id"].as_i64().unwrap() > user["id"].as_i64().unwrap(),
        "no id reused"
    );
    let r = via_auth
        .post(format!("{}/api/auth/login", auth.address))
        .json(&json!({"email": "grace@example.com", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let start = std::time::Instant::now();
    loop {
        let (status, body) = me(&app.address, &via_auth).await;
        if status == 200 {
            assert_eq!(body, grace, "the monolith has the same user");
            break;
        }
        assert!(
            start.elapsed().as_secs() < 10,
            "the monolith never recognised the auth service's login: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    eprintln!(
        "auth-service registration recognised by the monolith after {:?}",
        start.elapsed()
    );
    // Her session places an order in the monolith.
    let product = app
        .create_product(&admin, json!({"sku": "ID-1", "name": "Lamp", "category": "home", "price_cents": 100, "stock": 2}))
        .await;
    let r = via_auth
        .post(app.url("/api/orders"))
        .json(&json!({"items": [{"product_id": product["id"], "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // And she can log in through the monolith with the password she chose at the auth service.
    let again = new_client();
    let r = again
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": "grace@example.com", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Logging out through either ends the session everywhere.
    let r = via_auth
        .post(app.url("/api/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(me(&auth.address, &via_auth).await.0, 401);
}
