use std::time::Duration;

use banyan_tests::process::{ServiceProcess, run_raw};
use banyan_tests::{TestStorage, spawn_app};
use serde_json::Value;

use crate::expect_error;

#[tokio::test]
async fn health_reports_its_dependencies() {
    let app = spawn_app().await;
    let r = app.get("/health").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["checks"]["database"], "ok");
    assert_eq!(v["checks"]["sessions"], "ok");
    eprintln!("storage under test: {}", app.storage.describe());
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_returned() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = app.get("/health").await;
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32);
    // An id with characters that do not belong in a log line is replaced.
    let r = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "a b\"c")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "a b\"c");
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_error_format() {
    let app = spawn_app().await;
    expect_error(app.get("/api/nothing-here").await, 404, "not_found").await;
    let r = app
        .client
        .delete(app.url("/api/categories"))
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn openapi_lists_every_route_and_every_route_exists() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = service_kit::openapi::operations(service_kit::openapi::MONOLITH_PATHS);
    assert!(ops.len() >= 20);
    for (method, template) in ops {
        let path = template.replace("{id}", "1");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = app.client.request(m, app.url(&path)).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        // A documented route may refuse us (401, 404 for id 1, 415 without a body, ...), but it
        // must exist: not the router's "no such endpoint" and never a 405.
        assert_ne!(
            status, 405,
            "{method} {template} is documented but not routed"
        );
        assert!(
            !body.contains("no such endpoint"),
            "{method} {template} is documented but not routed"
        );
    }
}

/// SIGTERM stops accepting and lets a request that is already inside a handler finish. The
/// request uses `Expect: 100-continue`: the server sends `100 Continue` only once the handler
/// starts reading the body, so when we see it the request is provably in flight.
#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_cleanly() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut app = spawn_app().await;
    let body = r#"{"email": "late@example.com", "password": "password123", "name": "Late"}"#;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/auth/register HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "no 100 Continue"
    );

    app.process.signal_term();
    // New connections are refused (or closed) once the listener is gone; poll until then.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&addr).await.is_ok()
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    conn.write_all(body.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "in-flight request did not finish: {response}"
    );

    let status = app.process.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(app.process.log().contains("stopped"));
}

#[tokio::test]
async fn bad_configuration_fails_fast_with_a_clear_message() {
    let storage = TestStorage::create().await;
    let mut env = storage.env();
    env.push(("DATABASE_URL".into(), "oracle://somewhere/db".into()));
    let (status, _, stderr) = run_raw(
        "legacy-monolith",
        &["serve", "--listen", "127.0.0.1:0"],
        &env,
    );
    assert!(!status.success());
    assert!(
        stderr.contains("unsupported database URL scheme"),
        "{stderr}"
    );

    let mut env = storage.env();
    env.push(("BANYAN_ADMIN_EMAIL".into(), "admin@example.com".into()));
    let (status, _, stderr) = run_raw(
        "legacy-monolith",
        &["serve", "--listen", "127.0.0.1:0"],
        &env,
    );
    assert!(!status.success());
    assert!(stderr.contains("must be set together"), "{stderr}");

    let mut env = storage.env();
    env.push(("BANYAN_ADMIN_EMAIL".into(), "admin@example.com".into()));
    env.push(("BANYAN_ADMIN_PASSWORD".into(), "short".into()));
    let (status, _, stderr) = run_raw(
        "legacy-monolith",
        &["serve", "--listen", "127.0.0.1:0"],
        &env,
    );
    assert!(!status.success());
    assert!(stderr.contains("12 to 128"), "{stderr}");
    assert!(
        !stderr.contains("short\n"),
        "the password itself is not echoed"
    );
}

#[tokio::test]
async fn seeding_is_deterministic_and_idempotent() {
    let a = TestStorage::create().await;
    let b = TestStorage::create().await;
    for s in [&a, &b] {
        let out = banyan_tests::process::run_to_completion(
            "legacy-monolith",
            &["seed", "--products", "120"],
            &s.env(),
        );
        assert!(out.contains("seeded 120 products"), "{out}");
    }
    let again = banyan_tests::process::run_to_completion(
        "legacy-monolith",
        &["seed", "--products", "120"],
        &a.env(),
    );
    assert!(again.contains("seeded 0 products"), "{again}");
    let mut listings = Vec::new();
    for s in [&a, &b] {
        let p = ServiceProcess::start(
            "legacy-monolith",
            &["serve", "--listen", "127.0.0.1:0"],
            &s.env(),
        )
        .await;
        let v: Value = reqwest::get(format!(
            "{}/api/products?per_page=100&sort=-sales",
            p.address
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(v["total"], 120);
        let strip = |v: &Value| -> Vec<Value> {
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    p.as_object_mut().unwrap().remove("id");
                    p
                })
                .collect()
        };
        listings.push(strip(&v));
    }
    assert_eq!(listings[0], listings[1]);
}

/// When the environment names real servers, the monolith really uses them: its tables are in
/// this test's MariaDB database and its sessions under this test's Redis prefix.
#[tokio::test]
async fn storage_is_the_one_the_environment_names() {
    use sqlx::Connection;
    let app = spawn_app().await;
    app.customer(&app.client.clone()).await;
    eprintln!("storage under test: {}", app.storage.describe());
    match &app.storage.mysql {
        Some(db) => {
            let mut conn = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
            let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(users, 2, "admin + the customer, written to MariaDB");
        }
        None => assert!(app.storage.data_dir.path().join("monolith.db").exists()),
    }
    if let Some(pg) = &app.storage.postgres {
        assert!(
            pg.url.starts_with("postgres"),
            "postgres storage is created when named"
        );
    }
    match &app.storage.redis {
        Some(redis) => assert!(redis.keys().iter().any(|k| k.contains("session:"))),
        None => assert!(app.storage.data_dir.path().join("sessions.db").exists()),
    }
}

/// Redis goes away: health says so (503), requests that need a session get 503 in the error
/// format instead of hanging or a 500, requests that do not need one still work; Redis comes
/// back: everything recovers without a restart, and the session made before the cut is valid.
#[tokio::test]
#[ignore = "needs a real Redis: set BANYAN_TEST_REDIS_URL and run with --include-ignored (CI does)"]
async fn redis_outage_answers_503_and_recovers() {
    let url = std::env::var("BANYAN_TEST_REDIS_URL")
        .expect("BANYAN_TEST_REDIS_URL must be set for this test");
    let target = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let mut relay = banyan_tests::relay::Relay::start(&target).await;
    let app = banyan_tests::spawn_app_with(banyan_tests::AppOptions {
        redis_via: Some(relay.addr),
        seed_products: Some(5),
    })
    .await;
    app.storage
        .redis
        .as_ref()
        .expect("redis storage under test");
    let client = app.admin_client().await;
    assert_eq!(app.get_as(&client, "/api/auth/me").await.status(), 200);

    let t0 = std::time::Instant::now();
    relay.cut();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let started = std::time::Instant::now();
        let r = app.get("/health").await;
        // A dead dependency makes answers fail fast, not hang (the deadline is 1.5 s).
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "health hung for {:?}",
            started.elapsed()
        );
        if r.status() == 503 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["checks"]["sessions"], "unavailable");
            assert_eq!(v["checks"]["database"], "ok");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never noticed the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expect_error(
        app.get_as(&client, "/api/auth/me").await,
        503,
        "unavailable",
    )
    .await;
    let r = app
        .send_json(
            &client,
            "POST",
            "/api/auth/login",
            &serde_json::json!({"email": app.admin_email, "password": app.admin_password}),
        )
        .await;
    expect_error(r, 503, "unavailable").await;
    // Reads that need no session are unaffected.
    assert_eq!(app.get("/api/products/1").await.status(), 200);

    eprintln!("outage seen and checked after {:?}", t0.elapsed());
    relay.restore().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.get("/health").await.status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "did not recover after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("recovered after {:?}", t0.elapsed());
    assert_eq!(app.get_as(&client, "/api/auth/me").await.status(), 200);
}
