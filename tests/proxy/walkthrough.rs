//! The README's walkthrough, word for word: each step's edit applied to the shipped
//! `routes.toml` on a running proxy must load and reach the state the README says; the mistake
//! the walkthrough once led to (keeping the shadow on a migrated route) is refused, and
//! `banyan routes` puts the refusal on top and exits 1.

use std::time::{Duration, Instant};

use banyan_tests::process::run_raw;
use banyan_tests::proxy::{ProxyApp, spawn_proxy};
use serde_json::Value;

const SHIPPED: &str = include_str!("../../routes.toml");
const READ_ROUTE: &str = "methods  = [\"GET\", \"HEAD\"]\nupstream = \"legacy\"\n";
const SHADOW: &str = "shadow = { to = \"catalog\", percent = 100 }\n";
const SPLIT: &str = "split = { to = \"catalog\", percent = 10, sticky = \"cookie:sid\" }\n";

/// Saves `text` and waits until the proxy has applied it (or refused it); returns `/routes`.
async fn save(proxy: &ProxyApp, text: &str) -> Value {
    let before = proxy.routes().await["reloads"].clone();
    proxy.rename_save(text);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = proxy.routes().await;
        if r["reloads"] != before {
            // `/routes` reads the table, then the reload status; a reload between the two shows
            // the new status beside the old table. The table is swapped in before the status
            // changes, so once the status has changed a new look shows both.
            return proxy.routes().await;
        }
        assert!(
            Instant::now() < deadline,
            "the save was neither applied nor refused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn route<'a>(routes: &'a Value, id: &str) -> &'a Value {
    routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no route {id}"))
}

fn applied(r: &Value) {
    assert!(
        r["reloads"]["last_refused"].is_null(),
        "refused: {}",
        r["reloads"]["last_refused"]
    );
}

/// `banyan routes` against the proxy: (exit status, stdout).
fn banyan_routes(proxy: &ProxyApp) -> (i32, String) {
    let (status, out, err) = run_raw("banyan", &["routes", "--admin", &proxy.admin], &[]);
    assert!(err.is_empty() || status.code() != Some(2), "{err}");
    (status.code().unwrap_or(-1), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_of_the_walkthrough_loads_and_does_what_the_readme_says() {
    assert!(
        SHIPPED.contains(READ_ROUTE),
        "the products-read route changed; update the walkthrough"
    );
    let proxy = spawn_proxy(SHIPPED).await;
    let r = proxy.routes().await;
    assert_eq!(route(&r, "products-read")["upstream"], "legacy");

    // 0. Shadow.
    let step0 = SHIPPED.replacen(READ_ROUTE, &format!("{READ_ROUTE}{SHADOW}"), 1);
    let r = save(&proxy, &step0).await;
    applied(&r);
    assert_eq!(route(&r, "products-read")["shadow"]["to"], "catalog");

    // 1. Canary.
    let step1 = step0.replacen(
        &format!("{READ_ROUTE}{SHADOW}"),
        &format!("{READ_ROUTE}{SHADOW}{SPLIT}"),
        1,
    );
    let r = save(&proxy, &step1).await;
    applied(&r);
    let read = route(&r, "products-read");
    assert_eq!(read["split"]["percent"], 10.0);
    assert_eq!(read["split"]["sticky"], "cookie:sid");
    assert_eq!(read["shadow"]["to"], "catalog");

    // What the walkthrough used to say for step 2: the shadow stays. Refused, and shown.
    let kept_shadow = step1.replacen(
        &format!("{READ_ROUTE}{SHADOW}{SPLIT}"),
        &format!("methods  = [\"GET\", \"HEAD\"]\nupstream = \"catalog\"\n{SHADOW}"),
        1,
    );
    let r = save(&proxy, &kept_shadow).await;
    let refusal = r["reloads"]["last_refused"].to_string();
    assert!(refusal.contains("routes.toml:"), "{refusal}");
    let (code, out) = banyan_routes(&proxy);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("REFUSED at "), "{out}");
    assert!(
        out.lines().nth(1).unwrap().contains("routes.toml:"),
        "{out}"
    );

    // 2. Migrated: catalog, no split, no shadow; categories too.
    let step2 = step1
        .replacen(
            &format!("{READ_ROUTE}{SHADOW}{SPLIT}"),
            "methods  = [\"GET\", \"HEAD\"]\nupstream = \"catalog\"\n",
            1,
        )
        .replacen(
            "path     = \"/api/categories\"\nupstream = \"legacy\"",
            "path     = \"/api/categories\"\nupstream = \"catalog\"",
            1,
        );
    let r = save(&proxy, &step2).await;
    applied(&r);
    let read = route(&r, "products-read");
    assert_eq!(read["upstream"], "catalog");
    assert!(read["split"].is_null() && read["shadow"].is_null());
    assert_eq!(route(&r, "categories")["upstream"], "catalog");
    let (code, out) = banyan_routes(&proxy);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("REFUSED"), "{out}");

    // 4. Writes (from step 2).
    let step4 = step2.replacen(
        "methods  = [\"POST\", \"PUT\", \"PATCH\", \"DELETE\"]\nupstream = \"legacy\"",
        "methods  = [\"POST\", \"PUT\", \"PATCH\", \"DELETE\"]\nupstream = \"catalog\"",
        1,
    );
    let r = save(&proxy, &step4).await;
    applied(&r);
    assert_eq!(route(&r, "products-write")["upstream"], "catalog");

    // 3. Rollback: both read routes back to the monolith.
    let step3 = step4
        .replacen(
            "methods  = [\"GET\", \"HEAD\"]\nupstream = \"catalog\"",
            "methods  = [\"GET\", \"HEAD\"]\nupstream = \"legacy\"",
            1,
        )
        .replacen(
            "path     = \"/api/categories\"\nupstream = \"catalog\"",
            "path     = \"/api/categories\"\nupstream = \"legacy\"",
            1,
        )
        .replacen(
            "methods  = [\"POST\", \"PUT\", \"PATCH\", \"DELETE\"]\nupstream = \"catalog\"",
            "methods  = [\"POST\", \"PUT\", \"PATCH\", \"DELETE\"]\nupstream = \"legacy\"",
            1,
        );
    assert_eq!(
        step3, SHIPPED,
        "rolling every step back gives the shipped table"
    );
    let r = save(&proxy, &step3).await;
    applied(&r);
    assert_eq!(route(&r, "products-read")["upstream"], "legacy");
}

/// `banyan routes` shows the share each side of a split really served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banyan_routes_counts_requests_per_side() {
    let (a, b) = (
        banyan_tests::origin::Origin::start("legacy").await,
        banyan_tests::origin::Origin::start("new").await,
    );
    let proxy = spawn_proxy(&banyan_tests::proxy::table(
        &[("legacy", vec![a.addr]), ("new", vec![b.addr])],
        "[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"legacy\"\nsplit = { to = \"new\", percent = 50 }\n",
    ))
    .await;
    for _ in 0..200 {
        assert_eq!(proxy.get("/x").await.0, 200);
    }
    let r = proxy.routes().await;
    let sides = &route(&r, "all")["sides"];
    let (l, n) = (
        sides["legacy"]["total"].as_u64().unwrap(),
        sides["new"]["total"].as_u64().unwrap(),
    );
    assert_eq!(l + n, 200, "{sides}");
    assert!(l > 40 && n > 40, "{sides}");
    let (code, out) = banyan_routes(&proxy);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("legacy {l} (")) && out.contains(&format!("new {n} (")),
        "{out}"
    );
}

/// The README's autopilot section, word for word: its two lines added to `products-read` of
/// the shipped table load, and the route starts in its shadow step; `banyan status` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autopilot_lines_of_the_readme_start_a_rollout_in_shadow() {
    const README: &str = include_str!("../../README.md");
    let section = README
        .split("### Autopilot: a route that migrates itself")
        .nth(1)
        .expect("the README has its autopilot section");
    let lines = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the section opens with the lines to add");
    let proxy = spawn_proxy(SHIPPED).await;
    let edited = SHIPPED.replacen(READ_ROUTE, &format!("{READ_ROUTE}{lines}"), 1);
    let r = save(&proxy, &edited).await;
    applied(&r);
    assert_eq!(route(&r, "products-read")["rollout"]["to"], "catalog");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let s = proxy.admin_json("/status").await;
        let read = s["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "products-read")
            .cloned()
            .unwrap();
        // Taken up by the controller: until its first look `/status` shows it starting.
        if read["rollout"].is_object() && read["rollout"]["phase"] != "starting" {
            break read;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout never started: {read:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["phase"], "shadow", "{status:#}");
    assert_eq!(status["percent"], 0.0);
    let (code, out, err) = run_raw("banyan", &["status", "--admin", &proxy.admin], &[]);
    assert_eq!(code.code(), Some(0), "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("products-read") && l.contains("shadow")),
        "{out}"
    );
}
