use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banyan_tests::proxy::spawn_proxy;
use banyan_tests::{AppOptions, spawn_app_with, spawn_synced_catalog};
use serde_json::Value;

fn table(legacy: &str, catalog: &str, step: &str) -> String {
    let products = match step {
        "legacy" => "upstream = \"legacy\"".to_owned(),
        "canary" => "upstream = \"legacy\"\nsplit = { to = \"catalog\", percent = 10 }".to_owned(),
        "catalog" => "upstream = \"catalog\"".to_owned(),
        other => panic!("{other}"),
    };
    format!(
        "[proxy]\nreload_settle = \"50ms\"\n\n[upstreams.legacy]\naddrs = [\"{legacy}\"]\nhealth = {{ path = \"/health\", interval = \"1s\" }}\n\n\
         [upstreams.catalog]\naddrs = [\"{catalog}\"]\nhealth = {{ path = \"/health\", interval = \"1s\" }}\n\n\
         [[route]]\nid = \"products-read\"\npath = \"/api/products\"\nmethods = [\"GET\", \"HEAD\"]\n{products}\n\n\
         [[route]]\nid = \"categories\"\npath = \"/api/categories\"\n{}\n\n\
         [[route]]\nid = \"everything-else\"\npath = \"/\"\nupstream = \"legacy\"\n",
        if step == "catalog" {
            "upstream = \"catalog\""
        } else {
            "upstream = \"legacy\""
        }
    )
}

/// The migration of product reads, through the proxy, under load: legacy -> 10 % canary ->
/// fully on the catalog service -> rolled back, twice over. No request fails and every answer
/// is exactly what the monolith itself answers: clients cannot tell a step happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_product_reads_to_the_catalog_and_back_fails_nothing() {
    let app = spawn_app_with(AppOptions::seeded(300)).await;
    let catalog = spawn_synced_catalog(&app).await;
    let client = reqwest::Client::new();
    // Wait until the catalog holds the whole catalog.
    loop {
        let v: Value = client
            .get(format!("{}/api/products?per_page=1", catalog.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["total"] == 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (legacy, cat) = (
        app.address.trim_start_matches("http://").to_owned(),
        catalog.address.trim_start_matches("http://").to_owned(),
    );
    let proxy = Arc::new(spawn_proxy(&table(&legacy, &cat, "legacy")).await);

    // What the monolith answers directly: the reference for every response through the proxy.
    let paths = [
        "/api/products?sort=-price&per_page=10",
        "/api/products/7",
        "/api/products/bestsellers?limit=5",
        "/api/categories",
        "/api/products?category=books&page=2",
    ];
    let mut reference = Vec::new();
    for p in paths {
        reference.push(app.get(p).await.json::<Value>().await.unwrap());
    }
    let reference = Arc::new(reference);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (proxy, stop, sent, problems, reference) = (
            proxy.clone(),
            stop.clone(),
            sent.clone(),
            problems.clone(),
            reference.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let k = i % paths.len();
                i += 1;
                sent.fetch_add(1, Ordering::Relaxed);
                match proxy.client.get(proxy.url(paths[k])).send().await {
                    Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                        Ok(body) if body == reference[k] => {}
                        Ok(body) => problems
                            .lock()
                            .unwrap()
                            .push(format!("{}: different answer {body}", paths[k])),
                        Err(e) => problems
                            .lock()
                            .unwrap()
                            .push(format!("{}: body {e}", paths[k])),
                    },
                    Ok(r) => problems.lock().unwrap().push(format!(
                        "{}: status {}",
                        paths[k],
                        r.status()
                    )),
                    Err(e) => problems
                        .lock()
                        .unwrap()
                        .push(format!("{}: transport {e}", paths[k])),
                }
            }
        }));
    }

    let mut served_by_catalog = 0;
    for round in 0..2 {
        for step in ["canary", "catalog", "legacy"] {
            let before = proxy.routes().await["version"].as_str().unwrap().to_owned();
            proxy.rename_save(&table(&legacy, &cat, step));
            proxy
                .wait_new_version(&before, Duration::from_secs(2))
                .await
                .unwrap_or_else(|| panic!("round {round}: {step} not applied"));
            let hits_before = catalog.log().matches("path=/api/products").count();
            tokio::time::sleep(Duration::from_millis(300)).await; // let traffic run on this step
            let hits = catalog.log().matches("path=/api/products").count() - hits_before;
            if step == "catalog" {
                assert!(
                    hits > 0,
                    "round {round}: the catalog served nothing at 100 %"
                );
                served_by_catalog += hits;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let problems = problems.lock().unwrap().clone();
    let total = sent.load(Ordering::Relaxed);
    assert!(
        problems.is_empty(),
        "{} of {total} requests noticed the migration: {:?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
    eprintln!(
        "{total} requests across 6 migration steps; {served_by_catalog} product reads served by the catalog at 100 %; 0 failures, 0 different answers"
    );
}

fn write_table(legacy: &str, catalog: &str, writes: &str) -> String {
    format!(
        "[proxy]\nreload_settle = \"50ms\"\n\n[upstreams.legacy]\naddrs = [\"{legacy}\"]\nhealth = {{ path = \"/health\", interval = \"1s\" }}\n\n\
         [upstreams.catalog]\naddrs = [\"{catalog}\"]\nhealth = {{ path = \"/health\", interval = \"1s\" }}\n\n\
         [[route]]\nid = \"products-read\"\npath = \"/api/products\"\nmethods = [\"GET\", \"HEAD\"]\nupstream = \"catalog\"\n\n\
         [[route]]\nid = \"products-write\"\npath = \"/api/products\"\nmethods = [\"POST\", \"PUT\", \"PATCH\", \"DELETE\"]\nupstream = \"{writes}\"\n\n\
         [[route]]\nid = \"everything-else\"\npath = \"/\"\nupstream = \"legacy\"\n"
    )
}

/// The handoff through the proxy, under load: admins keep changing prices while the write route
/// moves to the catalog service and back, twice. No write fails, and afterwards the monolith and
/// the catalog agree on every product, each holding the last price written to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_product_writes_to_the_catalog_and_back_fails_nothing() {
    let app = spawn_app_with(AppOptions::seeded(40)).await;
    let catalog = spawn_synced_catalog(&app).await;
    banyan_tests::converges(
        &format!("{}/api/products?per_page=1", catalog.address),
        |_, b| b["total"] == 40,
    )
    .await;
    let (legacy, cat) = (
        app.address.trim_start_matches("http://").to_owned(),
        catalog.address.trim_start_matches("http://").to_owned(),
    );
    let proxy = Arc::new(spawn_proxy(&write_table(&legacy, &cat, "legacy")).await);
    let admin = banyan_tests::new_client();
    let r = admin
        .post(proxy.url("/api/auth/login"))
        .json(&serde_json::json!({"email": app.admin_email, "password": app.admin_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..4_i64 {
        let (proxy, stop, sent, problems, admin) = (
            proxy.clone(),
            stop.clone(),
            sent.clone(),
            problems.clone(),
            admin.clone(),
        );
        // Each writer owns ten products, so the last price of each is known.
        writers.push(tokio::spawn(async move {
            let mut last = std::collections::BTreeMap::new();
            let mut n = 0_i64;
            while !stop.load(Ordering::Relaxed) {
                let id = 1 + w * 10 + n % 10;
                let price = 10_000 + n;
                n += 1;
                sent.fetch_add(1, Ordering::Relaxed);
                let r = admin
                    .patch(proxy.url(&format!("/api/products/{id}")))
                    .json(&serde_json::json!({"price_cents": price}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        last.insert(id, price);
                    }
                    Ok(r) => problems
                        .lock()
                        .unwrap()
                        .push(format!("{id}: status {}", r.status())),
                    Err(e) => problems
                        .lock()
                        .unwrap()
                        .push(format!("{id}: transport {e}")),
                }
            }
            last
        }));
    }
    for round in 0..2 {
        for step in ["catalog", "legacy"] {
            let before = proxy.routes().await["version"].as_str().unwrap().to_owned();
            proxy.rename_save(&write_table(&legacy, &cat, step));
            proxy
                .wait_new_version(&before, Duration::from_secs(2))
                .await
                .unwrap_or_else(|| panic!("round {round}: writes to {step} not applied"));
            tokio::time::sleep(Duration::from_millis(400)).await; // let writes run on this step
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut last = std::collections::BTreeMap::new();
    for w in writers {
        last.extend(w.await.unwrap());
    }
    let problems = problems.lock().unwrap().clone();
    let total = sent.load(Ordering::Relaxed);
    assert!(
        problems.is_empty(),
        "{} of {total} writes failed: {:?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
    for (id, price) in &last {
        for side in [&app.address, &catalog.address] {
            banyan_tests::converges(&format!("{side}/api/products/{id}"), |_, b| {
                b["price_cents"] == *price
            })
            .await;
        }
    }
    eprintln!(
        "{total} writes across 4 handoff steps, 0 failures; {} products agree on both sides",
        last.len()
    );
}
