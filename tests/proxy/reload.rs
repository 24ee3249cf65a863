use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banyan_tests::origin::Origin;
use banyan_tests::proxy::{spawn_proxy, table};

fn routes_to(a: std::net::SocketAddr, b: std::net::SocketAddr, target: &str) -> String {
    table(
        &[("a", vec![a]), ("b", vec![b])],
        &format!("[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"{target}\"\n"),
    )
}

/// Rewrites the table 22 times (plain writes, rename-saves, one invalid version) while clients
/// keep sending: no request fails, each valid edit is followed within a second, and the invalid
/// one leaves the previous table serving with its error shown by the admin API.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_drops_nothing() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let proxy = Arc::new(spawn_proxy(&routes_to(a.addr, b.addr, "a")).await);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let load_sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (proxy, stop, failures, load_sent) = (
            proxy.clone(),
            stop.clone(),
            failures.clone(),
            load_sent.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                load_sent.fetch_add(1, Ordering::Relaxed);
                match proxy.client.get(proxy.url("/load")).send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("transport: {e}")),
                }
                sent += 1;
            }
            sent
        }));
    }

    let mut target = "a";
    let mut slowest = Duration::ZERO;
    for edit in 0..22 {
        let before = proxy.routes().await["version"].as_str().unwrap().to_owned();
        if edit == 11 {
            // An invalid version: refused, and traffic stays where it was.
            proxy.rename_save(&routes_to(a.addr, b.addr, "nowhere"));
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let r = proxy.routes().await;
                if r["reloads"]["last_refused"].is_object() {
                    let errors = r["reloads"]["last_refused"]["errors"].to_string();
                    assert!(
                        errors.contains("unknown upstream \\\"nowhere\\\""),
                        "{errors}"
                    );
                    assert_eq!(
                        r["version"],
                        before.as_str(),
                        "the previous table keeps serving"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the invalid file was not noticed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for _ in 0..20 {
                assert_eq!(proxy.backend_of("/x").await, target);
            }
            continue;
        }
        target = if target == "a" { "b" } else { "a" };
        let text = routes_to(a.addr, b.addr, target);
        let written = Instant::now();
        if edit % 2 == 0 {
            proxy.write_in_place(&text)
        } else {
            proxy.rename_save(&text)
        }
        loop {
            if proxy.backend_of("/x").await == target {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(5),
                "edit {edit} never took effect"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        slowest = slowest.max(written.elapsed());
        let _ = proxy
            .wait_new_version(&before, Duration::from_secs(1))
            .await;
    }
    // Keep the load going until it has sent at least 2,000 requests.
    let start = Instant::now();
    while load_sent.load(Ordering::Relaxed) < 2_000 && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for c in clients {
        sent += c.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(sent >= 2_000, "only {sent} requests");
    assert!(
        slowest <= Duration::from_secs(1),
        "an edit took {slowest:?} to apply"
    );
    let r = proxy.routes().await;
    assert_eq!(r["reloads"]["applied"], 21);
    assert_eq!(r["reloads"]["refused"], 1);
    assert!(
        r["reloads"]["last_refused"].is_null(),
        "a good file clears the refusal"
    );
    eprintln!("{sent} requests, 22 edits, slowest edit applied in {slowest:?}");
}

/// Moving a route away and back: each direction applies within a second, nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_applies_within_a_second() {
    let (a, b) = (Origin::start("legacy").await, Origin::start("new").await);
    let table_for = |t: &str| {
        table(
            &[("legacy", vec![a.addr]), ("new", vec![b.addr])],
            &format!(
                "[[route]]\nid = \"products\"\npath = \"/api/products\"\nupstream = \"{t}\"\n\n[[route]]\nid = \"rest\"\npath = \"/\"\nupstream = \"legacy\"\n"
            ),
        )
    };
    let proxy = spawn_proxy(&table_for("legacy")).await;
    for (to, save_by_rename) in [("new", true), ("legacy", false)] {
        let written = Instant::now();
        if save_by_rename {
            proxy.rename_save(&table_for(to))
        } else {
            proxy.write_in_place(&table_for(to))
        }
        loop {
            let (status, body) = proxy.get("/api/products/1").await;
            assert_eq!(status, 200, "{body}");
            if body["backend"] == to {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(1),
                "moving to {to} took longer than a second"
            );
        }
        assert_eq!(
            proxy.backend_of("/other").await,
            "legacy",
            "other routes untouched"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_now() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let proxy = spawn_proxy(&routes_to(a.addr, b.addr, "a")).await;
    let before = proxy.routes().await["version"].as_str().unwrap().to_owned();
    // Change the file without any event the watcher would see quickly: SIGHUP must apply it
    // (polling would too, within a second; SIGHUP is the operator's "now").
    proxy.write_in_place(&routes_to(a.addr, b.addr, "b"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.process.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let (_, took) = proxy
        .wait_new_version(&before, Duration::from_secs(2))
        .await
        .expect("reloaded");
    assert!(took < Duration::from_secs(1));
    assert_eq!(proxy.backend_of("/").await, "b");
}

/// Kubernetes mounts a ConfigMap as `routes.toml -> ..data/routes.toml`, `..data -> ..2026_x`,
/// and updates it by pointing `..data` at a new directory in one rename. The proxy follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_style_symlink_swaps_are_followed() {
    use std::os::unix::fs::symlink;
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let proxy = spawn_proxy(&routes_to(a.addr, b.addr, "a")).await;
    // Rebuild the proxy's config file as a ConfigMap-style mount in place.
    let dir = proxy.dir.path();
    let v1 = dir.join("..2026_01");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("routes.toml"), routes_to(a.addr, b.addr, "a")).unwrap();
    symlink("..2026_01", dir.join("..data")).unwrap();
    std::fs::remove_file(&proxy.config).unwrap();
    symlink("..data/routes.toml", &proxy.config).unwrap();
    assert_eq!(proxy.backend_of("/").await, "a");

    let before = proxy.routes().await["version"].as_str().unwrap().to_owned();
    let v2 = dir.join("..2026_02");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("routes.toml"), routes_to(a.addr, b.addr, "b")).unwrap();
    symlink("..2026_02", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let (_, took) = proxy
        .wait_new_version(&before, Duration::from_secs(2))
        .await
        .expect("the swap was followed");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(proxy.backend_of("/").await, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_proxy_cleanly() {
    let a = Origin::start("a").await;
    let mut proxy = spawn_proxy(&table(
        &[("a", vec![a.addr])],
        "[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"a\"\n",
    ))
    .await;
    assert_eq!(proxy.backend_of("/").await, "a");
    proxy.process.signal_term();
    let status = proxy.process.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
}
