//! Rollouts against real processes: the monolith and a synced catalog, each behind a
//! [`FaultyHop`] (the same extra hop on both sides, so neither side is slower by the test's
//! own plumbing), the real proxy in front, and steady client traffic with many sticky users.
//!
//! Every test drives a rollout with short intervals and small sample minimums, and reads the
//! outcome where an operator would: `GET /status`, `banyan status`, `banyan history`. They run
//! on both pipelines between them: the side records are the edge's, which both call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use banyan_tests::fault::{Fault, FaultyHop};
use banyan_tests::process::{ServiceProcess, run_raw};
use banyan_tests::proxy::{ProxyApp, spawn_proxy_with, table};
use banyan_tests::{AppOptions, TestApp, converges, spawn_app_with, spawn_synced_catalog};
use serde_json::Value;

struct Rig {
    _app: TestApp,
    _catalog: ServiceProcess,
    _old: FaultyHop,
    new: FaultyHop,
    proxy: ProxyApp,
    /// The route table the proxy runs (for a second proxy beside it).
    routes: String,
}

/// The route under test: product reads, rolling out to the catalog with `rollout` (the inside
/// of its inline table), shadowed to it when `shadow`.
fn products_route(rollout: &str, shadow: bool) -> String {
    let shadow = if shadow {
        "shadow = { to = \"catalog\", percent = 100 }\n"
    } else {
        ""
    };
    format!(
        "[[route]]\nid = \"products\"\npath = \"/api/products\"\nmethods = [\"GET\", \"HEAD\"]\n\
         upstream = \"legacy\"\n{shadow}rollout = {{ to = \"catalog\", interval = \"1s\", \
         sticky = \"header:x-user\", {rollout} }}\n\n\
         [[route]]\nid = \"rest\"\npath = \"/\"\nupstream = \"legacy\"\n"
    )
}

async fn rig(rollout: &str, shadow: bool, fast_path: bool, fault: Fault) -> Rig {
    rig_with(rollout, shadow, fast_path, fault, &[]).await
}

async fn rig_with(
    rollout: &str,
    shadow: bool,
    fast_path: bool,
    fault: Fault,
    extra: &[&str],
) -> Rig {
    let app = spawn_app_with(AppOptions::seeded(5)).await;
    let catalog = spawn_synced_catalog(&app).await;
    // The products are seeded into the monolith; the catalog serves them once its sync ran.
    converges(&format!("{}/api/products/5", catalog.address), |s, _| {
        s == 200
    })
    .await;
    let old = FaultyHop::start(&app.address).await;
    let new = FaultyHop::start(&catalog.address).await;
    new.set(fault);
    let routes = table(
        &[("legacy", vec![old.addr]), ("catalog", vec![new.addr])],
        &format!(
            "[upstreams.catalog.outlier]\nenabled = false\n\n{}",
            products_route(rollout, shadow)
        ),
    )
    .replace("[proxy]\n", &format!("[proxy]\nfast_path = {fast_path}\n"));
    let proxy = spawn_proxy_with(&routes, extra).await;
    Rig {
        _app: app,
        _catalog: catalog,
        _old: old,
        new,
        proxy,
        routes,
    }
}

/// Steady GETs of the five products from `clients` clients, each request as one of 1,000
/// users, until stopped; counts every answer by status.
struct Load {
    stop: Arc<AtomicBool>,
    statuses: Arc<std::sync::Mutex<BTreeMap<u16, u64>>>,
    sent: Arc<AtomicU64>,
    /// Users the proxy sent back to the monolith after it had served them by the catalog
    /// (`x-banyan-upstream`), with how often.
    sent_back: Arc<std::sync::Mutex<BTreeMap<u64, u64>>>,
    /// User -> when an answer from the catalog first reached it.
    on_new: Arc<std::sync::Mutex<BTreeMap<u64, Instant>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: &ProxyApp, clients: usize, pause: Option<Duration>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let statuses = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let sent_back = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        // User -> when an answer from the catalog first reached it.
        let on_new = Arc::new(std::sync::Mutex::new(BTreeMap::<u64, Instant>::new()));
        let tasks = (0..clients)
            .map(|c| {
                let (stop, statuses, sent) = (stop.clone(), statuses.clone(), sent.clone());
                let (sent_back, on_new) = (sent_back.clone(), on_new.clone());
                let (client, base) = (proxy.client.clone(), proxy.address.clone());
                tokio::spawn(async move {
                    let mut i = c as u64;
                    while !stop.load(Ordering::Relaxed) {
                        i = i
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let user = (i >> 33) % 1000;
                        let product = 1 + (i >> 20) % 5;
                        let sent_at = Instant::now();
                        let answer = client
                            .get(format!("{base}/api/products/{product}"))
                            .header("x-user", format!("user-{user}"))
                            .send()
                            .await;
                        let status = answer.as_ref().map_or(0, |r| r.status().as_u16());
                        let side = answer.ok().and_then(|r| {
                            r.headers()
                                .get("x-banyan-upstream")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        });
                        // Sent back: asked after a catalog answer had arrived, answered by the
                        // monolith (requests in flight across a step change are not).
                        match side.as_deref() {
                            Some("catalog") => {
                                on_new
                                    .lock()
                                    .unwrap()
                                    .entry(user)
                                    .or_insert_with(Instant::now);
                            }
                            Some("legacy")
                                if on_new
                                    .lock()
                                    .unwrap()
                                    .get(&user)
                                    .is_some_and(|first| *first < sent_at) =>
                            {
                                *sent_back.lock().unwrap().entry(user).or_default() += 1;
                            }
                            _ => {}
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                        *statuses.lock().unwrap().entry(status).or_default() += 1;
                        if let Some(p) = pause {
                            tokio::time::sleep(p).await; // pacing the load, not waiting for a state
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            statuses,
            sent,
            sent_back,
            on_new,
            tasks,
        }
    }

    /// Polls until at least `users` users have had an answer from the catalog, or `within`
    /// has passed; returns how many have.
    async fn wait_on_new(&self, users: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let moved = self.on_new.lock().unwrap().len();
            if moved >= users || Instant::now() >= deadline {
                return moved;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) -> BTreeMap<u16, u64> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.statuses.lock().unwrap().clone()
    }
}

/// The route's entry in `GET /status`.
async fn products(proxy: &ProxyApp) -> Value {
    route_status(&proxy.admin_json("/status").await)
}

fn route_status(status: &Value) -> Value {
    status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "products")
        .cloned()
        .unwrap()
}

/// Polls the rollout until its kept phase is one of `phases`; returns the route's status.
async fn wait_phase(proxy: &ProxyApp, phases: &[&str], within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let route = products(proxy).await;
        if let Some(p) = route["rollout"]["state"]["phase"].as_str()
            && phases.contains(&p)
        {
            return route;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout never reached {phases:?}: {route:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cli(proxy: &ProxyApp, args: &[&str]) -> (i32, String, String) {
    let admin = proxy.admin.clone();
    let mut all = args.to_vec();
    all.extend(["--admin", &admin]);
    let token = proxy.dir.path().join(banyan_tests::proxy::ADMIN_TOKEN_FILE);
    let token = token.to_str().unwrap().to_owned();
    all.extend(["--token-file", &token]);
    let (status, out, err) = run_raw("banyan", &all, &[]);
    (status.code().unwrap_or(-1), out, err)
}

/// A healthy catalog goes through shadow, 5 % and 25 % to migrated, each step judged on what
/// it served; `banyan status` and `banyan history` show every gate's figures.
///
/// The healthy tests allow a p99 3 times the monolith's: the p99 of 40-odd requests is about
/// their slowest, and with the suite's other processes on two cores the healthy catalog's came
/// out at 1.92 times the monolith's once (an abort at 1.5). The latency gate's own test uses a
/// catalog made slower on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_catalog_migrates_step_by_step() {
    let rig = rig(
        "steps = [0, 5, 25, 100], min_requests = 40, min_compared = 100, max_p99_ratio = 3.0",
        true,
        true,
        Fault::Pass,
    )
    .await;
    let load = Load::start(&rig.proxy, 6, None);
    let migrated = wait_phase(
        &rig.proxy,
        &["migrated", "aborted"],
        Duration::from_secs(150),
    )
    .await;
    // First, so that an abort shows with the gate that caused it.
    assert_eq!(
        migrated["rollout"]["state"]["phase"], "migrated",
        "{migrated:#}"
    );
    // Not a vacuous check: the load goes on until a good part of the users have been served by
    // the catalog. How many got there before the end depends on how fast the machine sends
    // (each step lasts one interval); after it every user goes there, so this converges.
    let moved = load.wait_on_new(200, Duration::from_secs(60)).await;
    let sent_back = load.sent_back.lock().unwrap().clone();
    let statuses = load.stop().await;
    assert!(
        moved >= 200,
        "only {moved} of 1,000 users were served by the catalog"
    );
    // Advancing only moves users from the old side to the new one.
    assert!(
        sent_back.is_empty(),
        "users sent back to the monolith: {sent_back:?}"
    );
    assert_eq!(migrated["percent"], 100.0);
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [200],
        "clients saw only 200s: {statuses:?}"
    );
    // The last check's gates passed, with figures.
    let gates = migrated["rollout"]["gates"].as_array().unwrap();
    let names: Vec<&str> = gates.iter().map(|g| g["gate"].as_str().unwrap()).collect();
    assert_eq!(names, ["error_rate", "latency", "shadow"], "{gates:#?}");
    assert!(gates.iter().all(|g| g["verdict"] == "pass"), "{gates:#?}");
    assert!(
        gates
            .iter()
            .all(|g| g["sample"].as_u64().unwrap() >= g["min_sample"].as_u64().unwrap())
    );

    let (code, text, err) = cli(&rig.proxy, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("products") && text.contains("migrated"),
        "{text}"
    );
    assert!(
        text.contains("error_rate") && text.contains("pass"),
        "{text}"
    );
    assert!(text.contains("extracted services served"), "{text}");
    let (code, text, err) = cli(
        &rig.proxy,
        &["status", "--wait", "products", "--timeout", "5s"],
    );
    assert_eq!(code, 0, "migrated: exit 0\n{text}\n{err}");

    let (code, history, err) = cli(&rig.proxy, &["history", "--route", "products"]);
    assert_eq!(code, 0, "{err}");
    for event in ["started", "advanced", "migrated"] {
        assert!(history.contains(event), "{event} missing:\n{history}");
    }
    // Each move names the gates that let it, with their figures.
    let migrated_line = history.lines().find(|l| l.contains(" migrated ")).unwrap();
    for gate in ["error_rate pass", "latency pass", "shadow pass"] {
        assert!(migrated_line.contains(gate), "{gate}: {migrated_line}");
    }
    let h = rig.proxy.admin_json("/history?route=products").await;
    let advanced: Vec<(f64, f64)> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "advanced")
        .map(|e| (e["from"].as_f64().unwrap(), e["to"].as_f64().unwrap()))
        .collect();
    assert_eq!(advanced, [(0.0, 5.0), (5.0, 25.0)], "{h:#}");
    eprintln!("{}", cli(&rig.proxy, &["status"]).1);
}

/// The history entries of the route, oldest first.
async fn history(proxy: &ProxyApp) -> Vec<Value> {
    proxy.admin_json("/history?route=products").await["entries"]
        .as_array()
        .unwrap()
        .clone()
}

/// The checks that led to an abort: after the first check that had enough traffic, nothing
/// but failed checks, `failures` of them in all (the last one the abort).
fn checks_to_abort(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .filter(|e| e != "table_applied")
        .skip_while(|e| e == "started" || e == "held")
        .collect()
}

/// Aborts `rig`'s rollout under load; returns the route's status at the abort, what clients
/// got, and the requests sent until then. Without a shadow, nothing reaches the new side once
/// the route is back at 0 % (a shadow in the file goes on comparing: the operator said so).
async fn abort_under_load(
    rig: &Rig,
    clients: usize,
    shadowed: bool,
) -> (Value, BTreeMap<u16, u64>, u64) {
    let load = Load::start(&rig.proxy, clients, None);
    let route = wait_phase(
        &rig.proxy,
        &["aborted", "migrated"],
        Duration::from_secs(120),
    )
    .await;
    let sent = load.sent.load(Ordering::Relaxed);
    let reached = rig.new.received();
    tokio::time::sleep(Duration::from_millis(500)).await; // load keeps flowing meanwhile
    let after = rig.new.received();
    let statuses = load.stop().await;
    if !shadowed {
        assert_eq!(
            after, reached,
            "the new side still got requests after the abort"
        );
    }
    (route, statuses, sent)
}

/// A catalog answering 500 to 3 % of requests aborts at its first step, on its error rate,
/// within `failures` checks; clients saw at most about 3 % of the canary's share fail. On
/// Pingora's pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_failing_3_percent_aborts_on_its_error_rate() {
    let rig = rig(
        "steps = [10, 50, 100], min_requests = 150",
        false,
        false,
        Fault::FailEvery(33),
    )
    .await;
    let (route, statuses, sent) = abort_under_load(&rig, 6, false).await;
    let state = &route["rollout"]["state"];
    assert_eq!(state["phase"], "aborted", "{route:#}");
    assert_eq!(state["cause"]["gate"], "error_rate", "{route:#}");
    assert_eq!(route["percent"], 0.0);
    let h = history(&rig.proxy).await;
    assert_eq!(checks_to_abort(&h), ["failed_check", "aborted"], "{h:#?}");
    let aborted = h.iter().find(|e| e["event"] == "aborted").unwrap();
    assert_eq!(aborted["at"], 10.0, "{aborted:#}");
    let failed = statuses.get(&500).copied().unwrap_or(0);
    // 3 % of 10 % of what was sent until the abort (twice that, for the sticky users' draw).
    let bound = (sent as f64 * 0.10 * 0.03 * 2.0).ceil() as u64 + 5;
    eprintln!("clients: {statuses:?} of {sent} sent before the abort; bound {bound}");
    assert!(failed <= bound, "{failed} client failures, bound {bound}");
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 500),
        "{statuses:?}"
    );
}

/// A catalog twice as slow aborts on its latency, at its first step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_twice_as_slow_aborts_on_its_latency() {
    let rig = rig(
        "steps = [10, 50, 100], min_requests = 150",
        false,
        true,
        Fault::Slower(2),
    )
    .await;
    let (route, statuses, _) = abort_under_load(&rig, 6, false).await;
    let state = &route["rollout"]["state"];
    assert_eq!(state["phase"], "aborted", "{route:#}");
    assert_eq!(state["cause"]["gate"], "latency", "{route:#}");
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), [200]);
    let h = history(&rig.proxy).await;
    assert_eq!(checks_to_abort(&h), ["failed_check", "aborted"], "{h:#?}");
}

/// A catalog whose answers differ in one field aborts in the shadow step, on the shadow gate,
/// before any client was served by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_difference_aborts_in_the_shadow_step() {
    let rig = rig(
        "steps = [0, 10, 100], min_compared = 100",
        true,
        false,
        Fault::Plant,
    )
    .await;
    let (route, statuses, _) = abort_under_load(&rig, 4, true).await;
    let state = &route["rollout"]["state"];
    assert_eq!(state["phase"], "aborted", "{route:#}");
    assert_eq!(state["cause"]["gate"], "shadow", "{route:#}");
    assert!(
        state["cause"]["observed"].as_f64().unwrap() > 50.0,
        "every compared answer differs: {route:#}"
    );
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), [200]);
    let h = history(&rig.proxy).await;
    let aborted = h.iter().find(|e| e["event"] == "aborted").unwrap();
    assert_eq!(aborted["at"], 0.0, "{aborted:#}");
    // Nothing but the shadow step ever ran: no client got the planted price.
    assert!(!h.iter().any(|e| e["event"] == "advanced"), "{h:#?}");
}

/// Ten requests an interval never decide a step, even on a side failing half of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_traffic_neither_advances_nor_aborts() {
    let rig = rig(
        "steps = [50, 100], min_requests = 200",
        false,
        true,
        Fault::FailEvery(2),
    )
    .await;
    // Taken up by the controller (until then `/status` shows it starting).
    wait_phase(&rig.proxy, &["running"], Duration::from_secs(10)).await;
    // About 10 requests a second (the interval is 1 s), for 6 intervals.
    let load = Load::start(&rig.proxy, 1, Some(Duration::from_millis(100)));
    let started = Instant::now();
    let mut checks = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let route = products(&rig.proxy).await;
        assert_eq!(route["rollout"]["state"]["phase"], "running", "{route:#}");
        assert_eq!(route["percent"], 50.0);
        if route["rollout"]["last_check"].is_string() {
            checks += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = load.stop().await;
    let route = products(&rig.proxy).await;
    let gates = route["rollout"]["gates"].as_array().unwrap();
    assert!(checks > 0 && !gates.is_empty(), "no check ran: {route:#}");
    assert!(
        gates.iter().all(|g| g["verdict"] == "inconclusive"),
        "{gates:#?}"
    );
    let h = history(&rig.proxy).await;
    let events: Vec<&str> = h.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert!(events.contains(&"held"), "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| ["advanced", "failed_check", "aborted", "migrated"].contains(e)),
        "{events:?}"
    );
    let held = h.iter().find(|e| e["event"] == "held").unwrap();
    assert!(
        held["reason"].as_str().unwrap().contains("needed"),
        "{held:#}"
    );
}

/// A proxy killed while its rollout waits for approval at 25 % comes back at 25 %, still
/// waiting; approved from the command line it migrates, and `banyan rollback` sends it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_resumes_its_step_and_the_cli_steers_it() {
    let mut rig = rig(
        "steps = [5, 25, 100], min_requests = 40, max_p99_ratio = 3.0, approve_at = [25]",
        false,
        true,
        Fault::Pass,
    )
    .await;
    let load = Load::start(&rig.proxy, 4, None);
    let waiting = wait_phase(
        &rig.proxy,
        &["awaiting_approval", "aborted"],
        Duration::from_secs(120),
    )
    .await;
    let _ = load.stop().await;
    assert_eq!(
        waiting["rollout"]["state"]["phase"], "awaiting_approval",
        "{waiting:#}"
    );
    assert_eq!(waiting["percent"], 25.0);

    rig.proxy.restart().await;
    let back = products(&rig.proxy).await;
    assert_eq!(
        back["percent"], 25.0,
        "the first table after the restart serves 25 %: {back:#}"
    );
    let back = wait_phase(&rig.proxy, &["awaiting_approval"], Duration::from_secs(10)).await;
    assert_eq!(back["rollout"]["phase"], "canary 25 %, awaiting approval");
    assert!(
        history(&rig.proxy)
            .await
            .iter()
            .any(|e| e["event"] == "restored" && e["at"] == 25.0)
    );

    // An action needs the token.
    let r = rig
        .proxy
        .client
        .post(format!("{}/rollouts/products/approve", rig.proxy.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (code, out, err) = cli(&rig.proxy, &["rollout", "approve", "products"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli(&rig.proxy, &["rollout", "approve", "nope"]);
    assert_eq!(code, 1, "no such rollout: {err}");
    assert!(err.contains("has no rollout"), "{err}");
    let load = Load::start(&rig.proxy, 4, None);
    let (code, out, err) = cli(
        &rig.proxy,
        &["status", "--wait", "products", "--timeout", "120s"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("migrated"), "{out}");

    let (code, out, err) = cli(&rig.proxy, &["rollback", "products"]);
    assert_eq!(code, 0, "{out}{err}");
    let reached = rig.new.received();
    tokio::time::sleep(Duration::from_millis(500)).await; // load keeps flowing meanwhile
    assert_eq!(
        rig.new.received(),
        reached,
        "rolled back: nothing reaches the catalog"
    );
    let statuses = load.stop().await;
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), [200]);
    let (code, _, _) = cli(
        &rig.proxy,
        &["status", "--wait", "products", "--timeout", "5s"],
    );
    assert_eq!(code, 1, "rolled back: --wait exits 1");
}

/// Two proxies sharing Redis run one rollout: one decides (the shared history has each step
/// once), the other serves the same share within a tick of each decision; an action taken on
/// either applies to both; killing the decider hands the decision to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run with BANYAN_TEST_REDIS_URL set (CI's second pass)"]
async fn two_proxies_sharing_redis_run_one_rollout() {
    let url = std::env::var("BANYAN_TEST_REDIS_URL").expect("BANYAN_TEST_REDIS_URL");
    let redis = banyan_tests::RedisPrefix::create(&url);
    let args = [
        "--rollout-redis",
        url.as_str(),
        "--rollout-prefix",
        redis.prefix.as_str(),
    ];
    let mut rig = rig_with(
        "steps = [5, 25, 50, 100], min_requests = 40, max_p99_ratio = 3.0, approve_at = [50]",
        false,
        true,
        Fault::Pass,
        &args,
    )
    .await;
    let a = &rig.proxy;
    let mut b = spawn_proxy_with(&rig.routes, &args).await;
    let (load_a, load_b) = (Load::start(a, 3, None), Load::start(&b, 3, None));
    let waiting = wait_phase(
        a,
        &["awaiting_approval", "aborted"],
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(
        waiting["rollout"]["state"]["phase"], "awaiting_approval",
        "{waiting:#}"
    );
    // The other follows within a tick (250 ms) or two.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let other = products(&b).await;
        if other["rollout"]["state"]["phase"] == "awaiting_approval" {
            assert_eq!(other["percent"], 50.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second proxy did not follow: {other:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (sa, sb) = (a.admin_json("/status").await, b.admin_json("/status").await);
    let deciders = [&sa, &sb]
        .iter()
        .filter(|s| s["rollouts"]["decides"] == true)
        .count();
    assert_eq!(
        deciders, 1,
        "exactly one decides: {:#} {:#}",
        sa["rollouts"], sb["rollouts"]
    );
    let h = history(a).await;
    let advanced: Vec<(f64, f64)> = h
        .iter()
        .filter(|e| e["event"] == "advanced")
        .map(|e| (e["from"].as_f64().unwrap(), e["to"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        advanced,
        [(5.0, 25.0), (25.0, 50.0)],
        "each step once: {h:#?}"
    );
    assert_eq!(history(&b).await, h, "one shared history");
    // Both proxies' traffic was judged: the last check saw more than either served alone.
    let gates = waiting["rollout"]["gates"].as_array().unwrap().clone();
    assert!(!gates.is_empty());

    // Approved on the follower; then the decider dies, and the other finishes the rollout.
    let a_decides = sa["rollouts"]["decides"] == true;
    let follower = if a_decides { &b } else { a };
    let (code, out, err) = cli(follower, &["rollout", "approve", "products"]);
    assert_eq!(code, 0, "{out}{err}");
    let (dead_load, survivor_load) = if a_decides {
        (load_a, load_b)
    } else {
        (load_b, load_a)
    };
    let _ = dead_load.stop().await;
    if a_decides {
        rig.proxy.process.kill();
    } else {
        b.process.kill();
    }
    let survivor = if a_decides { &b } else { &rig.proxy };
    let migrated = wait_phase(survivor, &["migrated", "aborted"], Duration::from_secs(60)).await;
    assert_eq!(
        migrated["rollout"]["state"]["phase"], "migrated",
        "{migrated:#}"
    );
    let statuses = survivor_load.stop().await;
    assert!(statuses.keys().all(|s| *s == 200), "{statuses:?}");
    let h = history(survivor).await;
    assert_eq!(
        h.iter().filter(|e| e["event"] == "migrated").count(),
        1,
        "{h:#?}"
    );
}
