//! Shadow traffic through the real proxy: copies reach the candidate marked and off the client's
//! path, writes only where a route opted in, bounds and caps hold, a slow or failing candidate
//! changes nothing for clients, results reach the admin API, Prometheus and the CLI, reloads of
//! shadow settings under load drop nothing, and several proxies add results up in Redis.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use banyan_tests::process::run_to_completion;
use banyan_tests::proxy::{ProxyApp, spawn_proxy, spawn_proxy_with, table};
use banyan_tests::recorder::{Behaviour, Recorder};
use serde_json::Value;

/// Upstreams `primary` and `candidate`, and `routes` (TOML).
fn routes(primary: SocketAddr, candidate: SocketAddr, routes: &str) -> String {
    table(
        &[("primary", vec![primary]), ("candidate", vec![candidate])],
        routes,
    )
}

fn shadow_route(id: &str, path: &str, shadow: &str) -> String {
    format!(
        "[[route]]\nid = \"{id}\"\npath = \"{path}\"\nupstream = \"primary\"\n\n[route.shadow]\nto = \"candidate\"\n{shadow}\n\n"
    )
}

fn get(t: &BTreeMap<String, u64>, k: &str) -> u64 {
    t.get(k).copied().unwrap_or(0)
}

/// Every GET is copied to the candidate with the marker, the primary's request id and
/// `X-Forwarded-For`; answers that agree are counted as matched; the client cannot make the
/// primary believe it is shadow traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_mirrored_marked_and_compared() {
    let primary = Recorder::start("same", Behaviour::Answer).await;
    let candidate = Recorder::start("same", Behaviour::Answer).await;
    let proxy = spawn_proxy(&routes(
        primary.addr,
        candidate.addr,
        &shadow_route("reads", "/r", "percent = 100"),
    ))
    .await;
    for i in 0..20 {
        let r = proxy
            .client
            .get(proxy.url(&format!("/r/{i}?q=x{i}")))
            .header("x-banyan-shadow", "candidate")
            .header("x-test", format!("h{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["flavour"], "same");
    }
    let t = proxy
        .wait_shadow("reads", |t| get(t, "compared") == 20)
        .await;
    assert_eq!(get(&t, "matched"), 20, "{t:?}");
    assert_eq!(get(&t, "mismatched"), 0, "{t:?}");

    let (p, c) = (primary.seen(), candidate.seen());
    assert_eq!((p.len(), c.len()), (20, 20));
    assert!(
        p.iter().all(|s| s.marker.is_none()),
        "the client's marker must not reach the primary"
    );
    for s in &c {
        assert_eq!(s.marker.as_deref(), Some("candidate"));
        assert_eq!(s.method, "GET");
        assert_eq!(s.forwarded_for.as_deref(), Some("127.0.0.1"));
        let twin = p
            .iter()
            .find(|q| q.request_id == s.request_id)
            .expect("the candidate's copy carries the primary's request id");
        assert_eq!(twin.target, s.target);
        assert_eq!(twin.header, s.header, "client headers are copied");
    }
    // Endpoint templates keep ids out of the names.
    let snap = proxy.shadow().await;
    let eps: Vec<&String> = snap["routes"]["reads"]["endpoints"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(eps, ["GET /r/{id}"]);
    let metrics = proxy.admin_text("/metrics").await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("banyan_shadow_requests_total") && l.contains("outcome=\"matched\"")
        })
        .unwrap_or_else(|| panic!("no shadow metric:\n{metrics}"));
    assert!(
        line.contains("route=\"reads\"")
            && line.contains("endpoint=\"GET /r/{id}\"")
            && line.ends_with(" 20"),
        "{line}"
    );
}

/// POST, PUT, PATCH and DELETE never reach the candidate of a route that has not opted in, and
/// do on one that has, body and all; bodies over the cap are not mirrored, declared or chunked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_candidate_only_where_the_route_opted_in() {
    let primary = Recorder::start("same", Behaviour::Answer).await;
    let candidate = Recorder::start("same", Behaviour::Answer).await;
    let proxy = spawn_proxy(&routes(
        primary.addr,
        candidate.addr,
        &format!(
            "{}{}",
            shadow_route("reads-only", "/r", "percent = 100"),
            shadow_route(
                "writes",
                "/w",
                "percent = 100\nwrites = true\nmax_request_body = \"1KiB\""
            )
        ),
    ))
    .await;
    let c = &proxy.client;
    for m in ["POST", "PUT", "PATCH", "DELETE", "POST"] {
        let r = c
            .request(m.parse().unwrap(), proxy.url("/r/1"))
            .body("{\"name\":\"x\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(c.get(proxy.url("/r/1")).send().await.unwrap().status(), 200);
    for i in 0..5 {
        let r = c
            .post(proxy.url("/w"))
            .body(format!("{{\"n\":{i}}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Over the 1 KiB cap: declared (content-length) and streamed (chunked).
    let big = "x".repeat(2048);
    assert_eq!(
        c.post(proxy.url("/w"))
            .body(big.clone())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let stream = futures::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 600]))),
    );
    let r = c
        .post(proxy.url("/w"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["body_len"], 2400,
        "the primary still got the whole body"
    );

    let w = proxy
        .wait_shadow("writes", |t| {
            get(t, "compared") == 5 && get(t, "too_large") == 2
        })
        .await;
    assert_eq!(get(&w, "matched"), 5, "{w:?}");
    let r = proxy
        .wait_shadow("reads-only", |t| get(t, "compared") == 1)
        .await;
    assert_eq!(get(&r, "writes_not_mirrored"), 5, "{r:?}");

    let seen = candidate.seen();
    let on_r: Vec<&str> = seen
        .iter()
        .filter(|s| s.target.starts_with("/r"))
        .map(|s| s.method.as_str())
        .collect();
    assert_eq!(
        on_r,
        ["GET"],
        "only the GET of the route without opt-in was mirrored"
    );
    let mut posted: Vec<String> = seen
        .iter()
        .filter(|s| s.target == "/w")
        .map(|s| {
            assert_eq!(s.method, "POST");
            assert_eq!(s.marker.as_deref(), Some("candidate"));
            String::from_utf8(s.body.clone()).unwrap()
        })
        .collect();
    posted.sort();
    let expected: Vec<String> = (0..5).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert_eq!(
        posted, expected,
        "each opted-in write, with its body, exactly once"
    );
    assert_eq!(
        primary.seen().len(),
        13,
        "the primary got every request once"
    );
}

/// A candidate that does not answer: clients get every answer (the test never releases the
/// candidate before they all arrived, so nothing can have waited for it), only `max_in_flight`
/// copies are outstanding and the rest are dropped and counted. Then a candidate slower than the
/// shadow timeout, and one that cannot be reached, are counted as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_slow_or_dead_candidate_changes_nothing_for_clients() {
    let primary = Recorder::start("same", Behaviour::Answer).await;
    let held = Recorder::start("same", Behaviour::Hold).await;
    let slow = Recorder::start("same", Behaviour::Delay(Duration::from_secs(2))).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = spawn_proxy(&table(
        &[
            ("primary", vec![primary.addr]),
            ("held", vec![held.addr]),
            ("slow", vec![slow.addr]),
            ("dead", vec![dead]),
        ],
        "[[route]]\nid = \"held\"\npath = \"/held\"\nupstream = \"primary\"\nshadow = { to = \"held\", percent = 100, max_in_flight = 4, timeout = \"60s\" }\n\n\
         [[route]]\nid = \"slow\"\npath = \"/slow\"\nupstream = \"primary\"\nshadow = { to = \"slow\", percent = 100, timeout = \"300ms\" }\n\n\
         [[route]]\nid = \"dead\"\npath = \"/dead\"\nupstream = \"primary\"\nshadow = { to = \"dead\", percent = 100 }\n",
    ))
    .await;
    let direct = reqwest::Client::new();
    for i in 0..40 {
        let path = format!("/held?i={i}");
        let via_proxy: Value = proxy
            .client
            .get(proxy.url(&path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let straight: Value = direct
            .get(format!("http://{}{path}", primary.addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(via_proxy, straight, "the client's answer is the primary's");
    }
    let t = proxy
        .wait_shadow("held", |t| get(t, "dropped_in_flight") == 36)
        .await;
    assert_eq!(get(&t, "compared"), 0, "{t:?}");
    // The four admitted copies leave from the idle-priority shadow thread, so they can arrive
    // after the drops were counted: wait for them, then check no fifth one came.
    held.wait_count(4).await;
    assert_eq!(
        held.count(),
        4,
        "only max_in_flight copies reached the held candidate"
    );
    held.release();
    proxy.wait_shadow("held", |t| get(t, "matched") == 4).await;

    for i in 0..10 {
        let r = proxy
            .client
            .get(proxy.url(&format!("/slow?i={i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = proxy
            .client
            .get(proxy.url(&format!("/dead?i={i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["target"], format!("/dead?i={i}"));
    }
    let s = proxy
        .wait_shadow("slow", |t| get(t, "candidate_timeouts") == 10)
        .await;
    assert_eq!(get(&s, "compared"), 0, "{s:?}");
    let d = proxy
        .wait_shadow("dead", |t| get(t, "candidate_errors") == 10)
        .await;
    assert_eq!(get(&d, "compared"), 0, "{d:?}");
}

/// A candidate that answers differently: the differing field and the status are reported with
/// their paths, an example and a redacted sample, in the admin API and in `banyan shadow report`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differences_are_reported_with_paths_examples_and_redacted_samples() {
    let primary = Recorder::start("old", Behaviour::Answer).await;
    let candidate = Recorder::start("new", Behaviour::Answer).await;
    let failing = Recorder::start("old", Behaviour::Fail).await;
    let proxy = spawn_proxy(&table(
        &[
            ("primary", vec![primary.addr]),
            ("candidate", vec![candidate.addr]),
            ("failing", vec![failing.addr]),
        ],
        "[[route]]\nid = \"items\"\npath = \"/items\"\nupstream = \"primary\"\nshadow = { to = \"candidate\", percent = 100, ignore = [\"/items/*/v\"], tolerance = { \"/items/*/price\" = 1 } }\n\n\
         [[route]]\nid = \"broken\"\npath = \"/broken\"\nupstream = \"primary\"\nshadow = { to = \"failing\", percent = 100 }\n",
    ))
    .await;
    for i in 0..10 {
        let r = proxy
            .client
            .get(proxy.url(&format!("/items/{i}?token=secret{i}")))
            .header("cookie", "sid=very-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["flavour"], "old");
        let r = proxy.client.get(proxy.url("/broken")).send().await.unwrap();
        assert_eq!(r.status(), 200, "the client never sees the candidate's 500");
    }
    let t = proxy
        .wait_shadow("items", |t| get(t, "compared") == 10)
        .await;
    assert_eq!(get(&t, "mismatched"), 10, "{t:?}");
    proxy
        .wait_shadow("broken", |t| get(t, "mismatched") == 10)
        .await;

    let snap = proxy.shadow().await;
    let fields = &snap["routes"]["items"]["endpoints"]["GET /items/{id}"]["fields"];
    assert_eq!(
        fields.as_object().unwrap().len(),
        1,
        "only /flavour differs (items/*/v is ignored): {fields}"
    );
    let f = &fields["/flavour"];
    assert_eq!(f["mismatches"], 10);
    assert_eq!(f["example"]["path"], "/flavour");
    assert_eq!(f["example"]["primary"], "\"old\"");
    assert_eq!(f["example"]["candidate"], "\"new\"");
    let example_request = f["example"]["request"].as_str().unwrap();
    assert!(
        example_request.starts_with("GET /items/")
            && example_request.ends_with("?token=[redacted]"),
        "{example_request}"
    );
    let broken = &snap["routes"]["broken"]["endpoints"]["GET /broken"]["fields"];
    assert_eq!(broken["status"]["mismatches"], 10, "{broken}");

    let with_samples = proxy.admin_json("/shadow?route=items&samples=true").await;
    let samples = with_samples["routes"]["items"]["samples"]
        .as_array()
        .unwrap();
    // The first mismatch is always sampled (its field had no example yet); later ones at most
    // every 100 ms per route.
    assert!((1..=10).contains(&samples.len()), "{}", samples.len());
    let text = serde_json::to_string(samples).unwrap();
    assert!(
        !text.contains("very-secret") && !text.contains("secret1"),
        "secrets leaked into samples: {text}"
    );
    assert_eq!(samples[0]["primary"]["body"]["flavour"], "old");
    assert_eq!(samples[0]["candidate"]["body"]["flavour"], "new");

    let report = run_to_completion(
        "banyan",
        &["shadow", "report", "--admin", &proxy.admin],
        &[],
    );
    assert!(
        report.contains("items") && report.contains("100.00%"),
        "{report}"
    );
    assert!(
        report.contains("/flavour") && report.contains("primary \"old\"  candidate \"new\""),
        "{report}"
    );
    // The tolerance names a field the answers do not have: a typo the report points out; the
    // ignore rule matched, so it is not listed.
    assert!(
        report.contains("rules that matched no field in 10 answers looked at")
            && report.contains("    tolerance /items/*/price\n")
            && !report.contains("    ignore /items/*/v\n"),
        "{report}"
    );
    // Reset forgets everything (an action: it needs the admin token).
    let r = proxy
        .client
        .delete(format!("{}/shadow", proxy.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(!proxy.shadow_totals("items").await.is_empty());
    let r = proxy
        .admin_action(reqwest::Method::DELETE, "/shadow")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(proxy.shadow_totals("items").await.is_empty());
}

/// Shadow settings change under load (percent, rules, bound, off, on): no client request fails,
/// and once the shadow is off the candidate gets nothing that was sent after the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloading_shadow_settings_under_load_drops_nothing() {
    let primary = Recorder::start("same", Behaviour::Answer).await;
    let candidate = Recorder::start("same", Behaviour::Answer).await;
    let with = |shadow: &str| {
        routes(
            primary.addr,
            candidate.addr,
            &shadow_route("load", "/load", shadow),
        )
    };
    let proxy = Arc::new(spawn_proxy(&with("percent = 100")).await);
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (proxy, stop, phase, failures, sent) = (
            proxy.clone(),
            stop.clone(),
            phase.clone(),
            failures.clone(),
            sent.clone(),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let p = phase.load(Ordering::SeqCst);
                let ok = match proxy
                    .client
                    .get(proxy.url("/load"))
                    .header("x-test", p.to_string())
                    .send()
                    .await
                {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let edits = [
        "percent = 50",
        "percent = 50\nignore = [\"/items/*/v\"]\nunordered = [\"/items\"]",
        "percent = 100\nmax_in_flight = 2",
        "percent = 0",
        "percent = 100\ntimeout = \"1s\"",
    ];
    let mut off_phase = None;
    for (i, edit) in edits.iter().enumerate() {
        let before = proxy.routes().await["version"].as_str().unwrap().to_owned();
        let at = sent.load(Ordering::Relaxed);
        while sent.load(Ordering::Relaxed) < at + 50 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Requests created while the change is under way belong to no phase.
        phase.store(1000 + i as u64, Ordering::SeqCst);
        proxy.rename_save(&with(edit));
        proxy
            .wait_new_version(&before, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("edit {i} was not applied"));
        // Requests created from here on see the new table.
        phase.store(i as u64 + 1, Ordering::SeqCst);
        if *edit == "percent = 0" {
            off_phase = Some(i as u64 + 1);
        }
    }
    let at = sent.load(Ordering::Relaxed);
    while sent.load(Ordering::Relaxed) < at + 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "client requests failed during shadow reloads"
    );
    // Shadows are sent after the client's answer, from the shadow thread, in the order they were
    // queued: waiting for the last phase's copies also gives any copy from the off phase the
    // time to show up before it is looked for.
    let last = edits.len().to_string();
    candidate
        .wait_until("shadowing resumes after it was turned back on", |seen| {
            seen.iter()
                .any(|s| s.header.as_deref() == Some(last.as_str()))
        })
        .await;
    let off = off_phase.unwrap().to_string();
    assert!(
        !candidate
            .seen()
            .iter()
            .any(|s| s.header.as_deref() == Some(off.as_str())),
        "the candidate got requests sent while the shadow was off"
    );
    let t = proxy.shadow_totals("load").await;
    assert_eq!(get(&t, "mismatched"), 0, "{t:?}");
    assert!(sent.load(Ordering::Relaxed) >= 300);
}

/// Two proxies share results through Redis: the admin API of either, and
/// `banyan shadow report --redis`, show the sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run with BANYAN_TEST_REDIS_URL set (CI's second pass)"]
async fn proxies_add_their_results_up_in_redis() {
    let url = std::env::var("BANYAN_TEST_REDIS_URL").expect("BANYAN_TEST_REDIS_URL");
    let redis = banyan_tests::RedisPrefix::create(&url);
    let primary = Recorder::start("old", Behaviour::Answer).await;
    let candidate = Recorder::start("new", Behaviour::Answer).await;
    let t = routes(
        primary.addr,
        candidate.addr,
        &shadow_route("shared", "/s", "percent = 100"),
    );
    let args = [
        "--shadow-redis",
        url.as_str(),
        "--shadow-prefix",
        redis.prefix.as_str(),
    ];
    let (a, b): (ProxyApp, ProxyApp) = (
        spawn_proxy_with(&t, &args).await,
        spawn_proxy_with(&t, &args).await,
    );
    for i in 0..10 {
        for p in [&a, &b] {
            let r = p
                .client
                .get(p.url(&format!("/s?i={i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    // Each instance counts its own 10 (60 s at most, as in `wait_shadow`: the shadow thread runs
    // at idle priority)...
    for p in [&a, &b] {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let local = p.admin_json("/shadow?local=true").await;
            assert_eq!(local["source"], "local");
            if local["routes"]["shared"]["endpoints"]["GET /s"]["counts"]["compared"] == 10 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{local}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // ...and both report the shared 20, once flushed.
    let t = a.wait_shadow("shared", |t| get(t, "compared") == 20).await;
    assert_eq!(get(&t, "mismatched"), 20, "{t:?}");
    b.wait_shadow("shared", |t| get(t, "compared") == 20).await;
    assert_eq!(a.shadow().await["source"], "redis");
    assert!(
        redis.keys().iter().any(|k| k.ends_with(":routes")),
        "{:?}",
        redis.keys()
    );
    // The CLI reads Redis directly, no proxy needed. Flushes run every second: poll.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = run_to_completion(
            "banyan",
            &[
                "shadow",
                "report",
                "--redis",
                &url,
                "--prefix",
                &redis.prefix,
                "--json",
            ],
            &[],
        );
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let compared: u64 = v["shared"]["endpoints"]
            .as_object()
            .map(|e| {
                e.values()
                    .map(|x| x["counts"]["compared"].as_u64().unwrap())
                    .sum()
            })
            .unwrap_or(0);
        if compared == 20 {
            assert_eq!(
                v["shared"]["endpoints"]["GET /s"]["fields"]["/flavour"]["mismatches"], 20,
                "{out}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "report never showed 20: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
