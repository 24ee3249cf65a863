//! `/api/analytics/*`: the monolith against the analytics service, each on its own events; and
//! the service's promise that an accepted event survives load and restarts.
//!
//! What may differ, field by field: the summary's `since` (each process computes "now minus the
//! window" on its own clock, moments apart). Everything else must be equal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use banyan_tests::{ServiceProcess, new_client, spawn_analytics, spawn_app};
use serde_json::{Value, json};

use crate::{Target, Who, both, both_typed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_keeps_the_contract() {
    let app = spawn_app().await;
    let analytics = spawn_analytics(&app).await;
    let side = |name, base: &str| Target {
        name,
        base: base.to_owned(),
        admin: new_client(),
        customer: new_client(),
        anonymous: new_client(),
    };
    let t = [
        side("monolith", &app.address),
        side("analytics-service", &analytics.address),
    ];
    let an_hour_ago =
        service_kit::clock::rfc3339(service_kit::clock::now_ms() - 3_600_000 + 60_000);
    let events = [
        json!({"type": "view", "product_id": 7}),
        json!({"type": "view", "product_id": 7}),
        json!({"type": "add_to_cart", "product_id": 7}),
        json!({"type": "purchase", "product_id": 3}),
        json!({"type": "view", "product_id": 3, "at": an_hour_ago}),
        json!({"type": "view", "product_id": 9}),
    ];
    for e in &events {
        let o = both(
            &t,
            Who::Anonymous,
            "POST",
            "/api/analytics/events",
            Some(&e.to_string()),
            202,
        )
        .await;
        assert_eq!(o.body, json!({"status": "accepted"}));
    }
    for (body, status) in [
        (json!({"type": "click", "product_id": 1}), 422),
        (json!({"type": "view"}), 422),
        (json!({"type": "view", "product_id": 0}), 422),
        (json!({"type": "view", "product_id": "7"}), 422),
        (
            json!({"type": "view", "product_id": 1, "at": "yesterday"}),
            422,
        ),
        (
            json!({"type": "view", "product_id": 1, "at": "2999-01-01T00:00:00Z"}),
            422,
        ),
        (
            json!({"type": "view", "product_id": 1, "at": "2001-01-01T00:00:00Z"}),
            422,
        ),
        (json!({"type": "view", "product_id": 1, "user_id": 5}), 422),
    ] {
        both(
            &t,
            Who::Anonymous,
            "POST",
            "/api/analytics/events",
            Some(&body.to_string()),
            status,
        )
        .await;
    }
    both(
        &t,
        Who::Anonymous,
        "POST",
        "/api/analytics/events",
        Some("{oops"),
        400,
    )
    .await;
    both(
        &t,
        Who::Anonymous,
        "POST",
        "/api/analytics/events",
        Some("[]"),
        400,
    )
    .await;
    both_typed(
        &t,
        Who::Anonymous,
        "POST",
        "/api/analytics/events",
        Some("{}"),
        "text/plain",
        415,
    )
    .await;
    let huge = json!({"type": "view", "product_id": 1, "pad": "x".repeat(70_000)}).to_string();
    both(
        &t,
        Who::Anonymous,
        "POST",
        "/api/analytics/events",
        Some(&huge),
        413,
    )
    .await;

    for window in [
        "",
        "?window=1h",
        "?window=30m",
        "?window=2h",
        "?window=30d",
        "?window=90s",
    ] {
        let path = format!("/api/analytics/summary{window}");
        let mut a = t[0].call(Who::Anonymous, "GET", &path, None, "").await;
        let mut b = t[1].call(Who::Anonymous, "GET", &path, None, "").await;
        assert_eq!((a.status, b.status), (200, 200), "{path}");
        for o in [&mut a, &mut b] {
            let since = o.body.as_object_mut().unwrap().remove("since").unwrap();
            assert!(service_kit::clock::parse_rfc3339(since.as_str().unwrap()).is_some());
        }
        assert_eq!(a.body, b.body, "{path}");
    }
    let all: Value = reqwest::get(format!(
        "{}/api/analytics/summary?window=2h",
        analytics.address
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        all["counts"],
        json!({"view": 4, "add_to_cart": 1, "purchase": 1})
    );
    assert_eq!(
        all["top_products"][0],
        json!({"product_id": 7, "events": 3})
    );
    for (q, status) in [
        ("?window=0h", 422),
        ("?window=31d", 200),
        ("?window=1w", 422),
        ("?window=1h&window=2h", 400),
    ] {
        both(
            &t,
            Who::Anonymous,
            "GET",
            &format!("/api/analytics/summary{q}"),
            None,
            status,
        )
        .await;
    }
}

/// Sends `n` events from `workers` concurrent clients; returns how many were accepted (202).
/// Transport errors (the process being killed) are expected and not counted.
async fn load(base: &str, workers: u64, n: u64) -> u64 {
    let accepted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (base, accepted) = (base.to_owned(), accepted.clone());
        tasks.push(tokio::spawn(async move {
            let client = new_client();
            for i in 0..n / workers {
                let r = client
                    .post(format!("{base}/api/analytics/events"))
                    .json(&json!({"type": "view", "product_id": 1 + (w * 1000 + i) % 50}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 202 => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => assert_eq!(r.status(), 503, "only back-pressure may refuse"),
                    Err(_) => {}
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    accepted.load(Ordering::Relaxed)
}

async fn stored(s: &ServiceProcess) -> u64 {
    let v: Value = reqwest::get(format!("{}/api/analytics/summary?window=1h", s.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["counts"]["view"].as_u64().unwrap()
}

/// Waits until the load is well under way (`n` events stored).
async fn until_stored(s: &ServiceProcess, n: u64) {
    while stored(s).await < n {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Under load, a SIGTERM and then a SIGKILL in the middle of it lose no accepted event: every
/// 202 is in the database after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_events_survive_load_and_restarts() {
    let app = spawn_app().await;
    let mut s = spawn_analytics(&app).await;

    let base = s.address.clone();
    let run = tokio::spawn(async move { load(&base, 32, 3200).await });
    until_stored(&s, 200).await;
    s.signal_term();
    let first = run.await.unwrap();
    s.wait_exit(std::time::Duration::from_secs(30)).await;
    s.restart().await;
    let after_term = stored(&s).await;
    eprintln!("SIGTERM under load: {first} accepted, {after_term} stored");
    assert!(first > 0, "some events were accepted before the signal");
    assert!(
        after_term >= first,
        "an accepted event was lost: {first} accepted, {after_term} stored"
    );

    let base = s.address.clone();
    let run = tokio::spawn(async move { load(&base, 32, 3200).await });
    until_stored(&s, after_term + 200).await;
    s.kill();
    let second = run.await.unwrap();
    s.restart().await;
    let after_kill = stored(&s).await;
    eprintln!(
        "SIGKILL under load: {second} accepted, {} stored",
        after_kill - after_term
    );
    assert!(second > 0);
    assert!(
        after_kill - after_term >= second,
        "an accepted event was lost to SIGKILL"
    );
    assert!(after_kill <= 6400, "nothing invented");

    // And at full speed, with nobody interrupting: every event accepted and stored.
    let before = stored(&s).await;
    let third = load(&s.address, 32, 3200).await;
    assert_eq!(third, 3200);
    assert_eq!(stored(&s).await - before, 3200);
}
