//! The migration dashboard in a real browser: headless Chromium (Debian's package) driven by
//! `playwright-core` (tests/browser/dashboard.mjs), against the real proxy in front of the real
//! monolith and the synced catalog service. Marked ignored because it needs Chromium and
//! `npm ci` in tests/browser; CI installs both and runs it in its `--include-ignored` pass.
//!
//! Besides the browser's checks (loads without a console error, shows the table's routes, a
//! saved edit to 50 % shows within 2 s unreloaded, a refused edit shows its file:line:column
//! error, no planted secret anywhere, nothing fetched from elsewhere), it checks that what the
//! page showed is what `banyan status --json` says: both read `GET /status`.

use std::path::{Path, PathBuf};
use std::process::Command;

use banyan_tests::fault::{Fault, FaultyHop};
use banyan_tests::process::run_to_completion;
use banyan_tests::proxy::{spawn_proxy, table};
use banyan_tests::{AppOptions, converges, spawn_app_with, spawn_synced_catalog};
use serde_json::Value;

fn routes(products: &str) -> String {
    format!(
        "[[route]]\nid = \"products\"\npath = \"/api/products\"\nmethods = [\"GET\", \"HEAD\"]\n\
         upstream = \"legacy\"\n{products}\n\n\
         [[route]]\nid = \"everything-else\"\npath = \"/\"\nupstream = \"legacy\"\n"
    )
}

/// (route id, phase) of each row.
fn phases(rows: &Value) -> Vec<(String, String)> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].to_string(), r["phase"].to_string()))
        .collect()
}

/// The catalog's health checks, which carry its sync lag into the proxy.
const CATALOG_HEALTH: &str =
    "[upstreams.catalog.health]\npath = \"/health\"\ninterval = \"200ms\"\n\n";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Runs a script of tests/browser with `env`; what it printed, after asserting it succeeded.
fn node(script: &str, env: &[(&str, std::ffi::OsString)]) -> String {
    let out = Command::new("node")
        .arg(browser_dir().join(script))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("running node");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script}: {said}");
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and `npm ci` in tests/browser (CI installs both)"]
async fn the_dashboard_shows_the_migration_live_in_a_browser() {
    let modules = browser_dir().join("node_modules/playwright-core");
    assert!(
        modules.exists(),
        "run `npm ci` in {} first (and apt-get install chromium)",
        browser_dir().display()
    );
    let app = spawn_app_with(AppOptions::seeded(5)).await;
    let catalog = spawn_synced_catalog(&app).await;
    converges(&format!("{}/api/products/5", catalog.address), |s, _| {
        s == 200
    })
    .await;
    // The catalog behind a hop that plants a difference: the shadow section has an example.
    let hop = FaultyHop::start(&catalog.address).await;
    hop.set(Fault::Plant);
    let upstreams = [
        (
            "legacy",
            vec![app.address.trim_start_matches("http://").parse().unwrap()],
        ),
        ("catalog", vec![hop.addr]),
    ];
    let shadow = "shadow = { to = \"catalog\", percent = 100 }";
    let proxy = spawn_proxy(&table(
        &upstreams,
        &format!("{CATALOG_HEALTH}{}", routes(shadow)),
    ))
    .await;

    // The catalog says in its /health how far its sync is behind the monolith; the proxy's
    // health checks carry it into the status (and `banyan_upstream_sync_lag_seconds`).
    let health: Value = reqwest::get(format!("{}/health", catalog.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lag = &health["sync"]["lag"]["products from the monolith"];
    assert!(lag["lag_ms"].as_u64().unwrap() < 5_000, "{health}");
    assert_eq!(lag["caught_up"], true, "{health}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let data = proxy.admin_json("/status").await["data"].clone();
        if let Some(d) = data.as_array().and_then(|d| d.first()) {
            assert_eq!(d["upstream"], "catalog", "{data}");
            assert_eq!(d["stream"], "products from the monolith", "{data}");
            assert!(d["lag_seconds"].as_f64().unwrap() < 5.0, "{data}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sync lag reached the status"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let metrics = proxy.admin_text("/metrics").await;
    assert!(
        metrics.contains("banyan_upstream_sync_lag_seconds{backend="),
        "{metrics}"
    );

    // Shadowed traffic carrying secrets: a bearer token, a session cookie, a key and a password
    // in the query.
    let secrets = [
        format!("tok-{}", banyan_tests::random_hex(12)),
        format!("sid-{}", banyan_tests::random_hex(12)),
        format!("key-{}", banyan_tests::random_hex(12)),
        format!("pw-{}", banyan_tests::random_hex(12)),
    ];
    for i in 1..=5 {
        let r = proxy
            .client
            .get(proxy.url(&format!(
                "/api/products/{i}?api_key={}&password={}",
                secrets[2], secrets[3]
            )))
            .header("authorization", format!("Bearer {}", secrets[0]))
            .header("cookie", format!("session={}", secrets[1]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while proxy.admin_json("/status").await["routes"][0]["shadow"]["mismatched"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        assert!(std::time::Instant::now() < deadline, "no comparison came");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let edit_50 = dir.path().join("routes-50.toml");
    let split = format!("{shadow}\nsplit = {{ to = \"catalog\", percent = 50 }}");
    std::fs::write(
        &edit_50,
        table(&upstreams, &format!("{CATALOG_HEALTH}{}", routes(&split))),
    )
    .unwrap();
    let edit_bad = dir.path().join("routes-bad.toml");
    std::fs::write(
        &edit_bad,
        table(
            &upstreams,
            &format!(
                "{CATALOG_HEALTH}{}",
                routes(&format!("{split}\nthis is not toml"))
            ),
        ),
    )
    .unwrap();
    let seen_file = dir.path().join("seen.json");
    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("target/dashboard.png");
    let said = node(
        "dashboard.mjs",
        &[
            ("DASHBOARD_URL", format!("{}/", proxy.admin).into()),
            ("ROUTES_FILE", proxy.config.clone().into()),
            ("EDIT_50", edit_50.clone().into()),
            ("EDIT_BAD", edit_bad.clone().into()),
            ("SECRETS", secrets.join("\n").into()),
            ("SCREENSHOT", screenshot.clone().into()),
            ("SEEN", seen_file.clone().into()),
        ],
    );
    println!("{said}");
    assert!(screenshot.exists());

    // What the page showed is what the CLI says (nothing changed in between).
    let seen: Value = serde_json::from_str(&std::fs::read_to_string(&seen_file).unwrap()).unwrap();
    let cli = run_to_completion(
        "banyan",
        &[
            "status",
            "--json",
            "--admin",
            proxy.admin.trim_start_matches("http://"),
        ],
        &[],
    );
    let status: Value = serde_json::from_str(&cli).unwrap_or_else(|e| panic!("{e}: {cli}"));
    assert_eq!(
        phases(&seen["rows"]),
        phases(&status["routes"]),
        "the page and `banyan status` disagree"
    );
    assert_eq!(
        seen["migrated"],
        format!(
            "{} of {}",
            status["migrated"]["routes"], status["migrated"]["of"]
        )
    );
    assert_eq!(seen["version"], status["version"]);
    let refused = status["reloads"]["last_refused"]["errors"][0]
        .as_str()
        .unwrap();
    assert!(
        seen["refused"].as_str().unwrap().contains(refused),
        "{seen} / {refused}"
    );
}

/// The page is served by the binary itself, with a policy that lets it fetch nothing but the
/// admin listener; `GET /status` carries what it shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_built_in_and_reads_only_the_status() {
    let origin = banyan_tests::recorder::Recorder::start(
        "legacy",
        banyan_tests::recorder::Behaviour::Answer,
    )
    .await;
    let proxy = spawn_proxy(&table(&[("legacy", vec![origin.addr])], &routes(""))).await;
    let r = proxy
        .client
        .get(format!("{}/", proxy.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let policy = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"),
        "{policy}"
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("fetch(\"status\""));
    // The SVG namespace is a name, not an address the page fetches.
    let page = page.replace("http://www.w3.org/2000/svg", "");
    for external in ["http://", "https://", "//cdn", "<link", "src=\""] {
        assert!(!page.contains(external), "the page refers to {external}");
    }
    for _ in 0..3 {
        let (status, _) = proxy.get("/api/products/1").await;
        assert_eq!(status, 200);
    }
    let status = proxy.admin_json("/status?series=true").await;
    let route = &status["routes"][0];
    assert_eq!(
        route["writes_to"],
        Value::Null,
        "a read-only route takes no writes"
    );
    let everything = &status["routes"][1];
    assert_eq!(everything["writes_to"], serde_json::json!(["legacy"]));
    assert!(status["extracted"]["last_5m"].is_object(), "{status}");
    assert!(status["series"].is_object(), "{status}");
    assert!(status["tables"].is_array(), "{status}");
}

/// At 200 routes the page lists them all, the filter narrows them, and a poll with its
/// rendering stays well inside the one-second period (the figures are printed, not judged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and `npm ci` in tests/browser (CI installs both)"]
async fn the_dashboard_stays_usable_at_200_routes() {
    let origin = banyan_tests::recorder::Recorder::start(
        "legacy",
        banyan_tests::recorder::Behaviour::Answer,
    )
    .await;
    let mut routes = String::new();
    for i in 0..200 {
        routes.push_str(&format!(
            "[[route]]\nid = \"route-{i}\"\npath = \"/api/r{i}\"\nupstream = \"legacy\"\n\n"
        ));
    }
    let proxy = spawn_proxy(&table(&[("legacy", vec![origin.addr])], &routes)).await;
    for i in 0..200 {
        let (status, _) = proxy.get(&format!("/api/r{i}/x")).await;
        assert_eq!(status, 200);
    }
    let size = proxy.admin_text("/status").await.len();
    let said = node(
        "many.mjs",
        &[
            ("DASHBOARD_URL", format!("{}/", proxy.admin).into()),
            ("ROUTES", "200".into()),
        ],
    );
    println!("{said}GET /status at 200 routes: {size} bytes");
}
