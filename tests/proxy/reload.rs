use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banyan_tests::origin::Origin;
use banyan_tests::proxy::{spawn_proxy, table};
use sha2::Digest;

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

/// `table` with a longer settle delay than the harness's 50 ms.
fn settled(text: &str, settle: &str) -> String {
    text.replacen(
        "reload_settle = \"50ms\"",
        &format!("reload_settle = \"{settle}\""),
        1,
    )
}

/// Writes `head`, waits 100 ms, writes `tail`, as a slow writer does
/// (`{ head; sleep 0.1; tail; } > routes.toml`).
fn write_in_two_parts(path: &std::path::Path, head: &str, tail: &str) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(head.as_bytes()).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    f.write_all(tail.as_bytes()).unwrap();
}

/// Waits until the live table has a route with `id`; returns the reload counters then.
async fn wait_for_route(proxy: &banyan_tests::proxy::ProxyApp, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = proxy.routes().await;
        if r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|route| route["id"] == id)
        {
            return r["reloads"].clone();
        }
        assert!(Instant::now() < deadline, "route {id} never appeared: {r}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A file written in two parts 100 ms apart, whose first part is a valid table of its own, is
/// applied whole, once, and its first part never: 50 times. Nothing seen mid-write counts as a
/// refusal. (Before the settle delay was a debounce, a poll just before the write ended its
/// wait mid-write.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_two_parts_is_applied_whole() {
    two_part_writes(50, false).await;
}

/// The same through a symlink (a ConfigMap-style mount), 10 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_file_written_in_two_parts_is_applied_whole() {
    two_part_writes(10, true).await;
}

async fn two_part_writes(times: usize, through_symlink: bool) {
    use std::os::unix::fs::symlink;
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let head = |target: &str| settled(&routes_to(a.addr, b.addr, target), "200ms");
    let proxy = spawn_proxy(&head("a")).await;
    let real = proxy.dir.path().join("real.toml");
    let mut applied = 0;
    if through_symlink {
        std::fs::write(&real, head("b")).unwrap();
        let link = proxy.dir.path().join("routes.toml.link");
        symlink(&real, &link).unwrap();
        std::fs::rename(&link, &proxy.config).unwrap();
        applied = wait_applied_after(&proxy, applied).await;
    }
    let path = if through_symlink {
        &real
    } else {
        &proxy.config
    };
    for i in 0..times {
        let target = if i % 2 == 0 { "b" } else { "a" };
        let tail =
            format!("\n[[route]]\nid = \"part-{i}\"\npath = \"/part/{i}\"\nupstream = \"b\"\n");
        // At a random moment of the 500 ms poll: a look may come at any time, not only on the
        // write's own event.
        let phase = rand::random::<u64>() % 500;
        tokio::time::sleep(Duration::from_millis(phase)).await;
        write_in_two_parts(path, &head(target), &tail);
        let reloads = wait_for_route(&proxy, &format!("part-{i}")).await;
        applied += 1;
        assert_eq!(
            reloads["applied"], applied,
            "write {i}: the first part was applied on its own ({reloads})"
        );
        assert_eq!(reloads["refused"], 0, "write {i}: {reloads}");
        assert_eq!(proxy.backend_of("/x").await, target);
    }
}

/// Waits until `applied` has moved past `before`; returns the new count.
async fn wait_applied_after(proxy: &banyan_tests::proxy::ProxyApp, before: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = proxy.routes().await["reloads"]["applied"].as_u64().unwrap();
        if n > before {
            return n;
        }
        assert!(Instant::now() < deadline, "no reload applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Save a good file, save it with a typo (refused, shown), put the good file back: the refusal
/// is cleared, though the file equals the live table and nothing is rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putting_the_good_file_back_clears_the_refusal() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let good = routes_to(a.addr, b.addr, "a");
    let proxy = spawn_proxy(&good).await;
    let version = proxy.routes().await["version"].clone();
    proxy.rename_save(&good.replace("[[route]]", "[[route]"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        let r = proxy.routes().await;
        if r["reloads"]["last_refused"].is_object() {
            break r["reloads"]["last_refused"].clone();
        }
        assert!(Instant::now() < deadline, "the typo was not refused: {r}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let errors = refusal["errors"][0].as_str().unwrap();
    assert!(
        errors.starts_with(&format!("{}:", proxy.config.display())),
        "{errors}"
    );
    proxy.rename_save(&good);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = proxy.routes().await;
        if r["reloads"]["last_refused"].is_null() {
            assert_eq!(r["version"], version);
            assert_eq!(r["reloads"]["refused"], 1);
            assert_eq!(r["reloads"]["applied"], 0, "nothing to rebuild");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refusal stayed after the good file was put back: {r}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A file that keeps changing is not applied while it changes (each look sees a new file); on
/// SIGHUP it is applied at once, and once the writer stops, its last version settles and is
/// applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_keeps_changing_waits_for_sighup_or_for_the_writer_to_stop() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let proxy = Arc::new(spawn_proxy(&settled(&routes_to(a.addr, b.addr, "a"), "300ms")).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (written_tx, mut written) = tokio::sync::watch::channel(0u64);
    let writer = {
        let (config, stop) = (proxy.config.clone(), stop.clone());
        let text = settled(&routes_to(a.addr, b.addr, "b"), "300ms");
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // Each version differs from the last, and none stays for the settle delay.
                let tmp = config.with_extension("tmp");
                std::fs::write(&tmp, format!("{text}# write {n}\n")).unwrap();
                std::fs::rename(&tmp, &config).unwrap();
                written_tx.send_replace(n);
                std::thread::sleep(Duration::from_millis(40));
            }
            n
        })
    };
    // Five settle delays' worth of writes: never a quiet moment, never applied.
    written.wait_for(|n| *n >= 40).await.unwrap();
    let r = proxy.routes().await;
    assert_eq!(r["reloads"]["applied"], 0, "applied mid-change: {r}");
    assert_eq!(proxy.backend_of("/").await, "a");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.process.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let after_hup = wait_applied_after(&proxy, 0).await;
    assert_eq!(proxy.backend_of("/").await, "b");

    stop.store(true, Ordering::Relaxed);
    let last = writer.join().unwrap();
    // The writer's last version settles and is applied.
    let text = std::fs::read(&proxy.config).unwrap();
    assert!(text.ends_with(format!("# write {last}\n").as_bytes()));
    let final_version: String = sha2::Sha256::digest(&text)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = proxy.routes().await;
        if r["version"] == final_version.as_str() {
            assert!(r["reloads"]["applied"].as_u64().unwrap() >= after_hup);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the final file never settled: {r}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.routes().await["reloads"]["refused"], 0);
}
