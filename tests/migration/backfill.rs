use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use banyan_tests::process::{binary, run_to_completion};
use banyan_tests::{AppOptions, TestApp, spawn_app_with, spawn_catalog};
use serde_json::Value;

fn backfill_args(app: &TestApp, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "backfill".to_owned(),
        "--from".to_owned(),
        app.storage.monolith_database_url(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn backfill(app: &TestApp, extra: &[&str]) -> String {
    let args = backfill_args(app, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_to_completion("catalog-service", &args, &app.storage.service_env())
}

/// The monolith and the catalog service agree on the whole catalog, row for row (the backfill
/// copies ids and timestamps, so everything must be equal).
async fn assert_same_catalog(app: &TestApp, catalog: &str, expected_total: i64) {
    let client = reqwest::Client::new();
    for q in [
        "?per_page=100",
        "?per_page=100&page=57&sort=-price",
        "?category=books&sort=name&per_page=100",
        "?sort=-sales&per_page=50",
    ] {
        let a: Value = app
            .get(&format!("/api/products{q}"))
            .await
            .json()
            .await
            .unwrap();
        let b: Value = client
            .get(format!("{catalog}/api/products{q}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !q.contains("category") {
            assert_eq!(a["total"], expected_total);
        }
        assert_eq!(a, b, "listing {q} differs");
    }
    let a: Value = app.get("/api/categories").await.json().await.unwrap();
    let b: Value = client
        .get(format!("{catalog}/api/categories"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a, b);
    for id in [1, 777, expected_total / 2, expected_total] {
        let a: Value = app
            .get(&format!("/api/products/{id}"))
            .await
            .json()
            .await
            .unwrap();
        let b: Value = client
            .get(format!("{catalog}/api/products/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(a, b, "product {id} differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfilling_100k_products_then_again_changes_nothing() {
    let app = spawn_app_with(AppOptions::seeded(100_000)).await;
    let out = backfill(&app, &[]);
    assert!(
        out.contains("backfill: done, 100000 scanned, 100000 written"),
        "{out}"
    );
    assert!(
        out.contains("backfill: 50000/100000 products (50.0%)"),
        "progress is reported: {out}"
    );

    let again = backfill(&app, &[]);
    assert!(
        again.contains("written 0") || again.contains(", 0 written"),
        "{again}"
    );
    let rescan = backfill(&app, &["--restart"]);
    assert!(
        rescan.contains("backfill: done, 100000 scanned, 0 written"),
        "{rescan}"
    );

    let catalog = spawn_catalog(&app).await;
    assert_same_catalog(&app, &catalog.address, 100_000).await;

    // A change in the monolith after the backfill is picked up by a rescan, and only it.
    let admin = app.admin_client().await;
    let r = app
        .send_json(
            &admin,
            "PATCH",
            "/api/products/777",
            &serde_json::json!({"price_cents": 1}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let rescan = backfill(&app, &["--restart"]);
    assert!(rescan.contains("100000 scanned, 1 written"), "{rescan}");
    // New products made by the catalog service do not collide with the monolith's ids.
    let r = admin
        .post(format!("{}/api/products", catalog.address))
        .json(&serde_json::json!({"sku": "NEW-1", "name": "New", "category": "books", "price_cents": 1, "stock": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    assert!(
        id > 100_000,
        "new id {id} collides with the monolith's range"
    );
}

/// Killed in the middle (SIGKILL, mid-batch), then run again: it resumes after the last
/// committed batch and the result is exactly the monolith's catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backfill_resumes_and_completes() {
    let app = spawn_app_with(AppOptions::seeded(20_000)).await;
    let args = backfill_args(&app, &["--batch", "100"]);
    let mut child = Command::new(binary("catalog-service"))
        .args(&args)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .envs(app.storage.service_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = 0u64;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("backfill: ")
            && let Some((done, _)) = rest.split_once('/')
        {
            seen = done.parse().unwrap();
            if seen >= 6_000 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!((6_000..20_000).contains(&seen), "killed at {seen}");

    let out = backfill(&app, &["--batch", "100"]);
    assert!(out.contains("backfill: done, 20000 scanned"), "{out}");
    let written: u64 = out
        .rsplit(", ")
        .next()
        .and_then(|s| s.trim().strip_suffix(" written"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no written count in {out}"));
    assert!(
        written <= 20_000 - seen + 100,
        "resumed from the start? wrote {written} after {seen}"
    );
    let catalog = spawn_catalog(&app).await;
    assert_same_catalog(&app, &catalog.address, 20_000).await;
}
