//! Circuit breakers and fallback to the monolith, on both pipelines: a failing new service is
//! not seen by clients of a route with `fallback = "legacy"`, its breaker opens within its
//! window and stops its traffic, half-open probes close it once it recovers, and writes fall
//! back only where that cannot apply them twice.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banyan_tests::proxy::{ProxyApp, spawn_proxy, table};
use banyan_tests::raw_origin::{RawOrigin, Reply, Seen};

/// What an origin received: `METHOD target` per request.
type Log = Arc<Mutex<Vec<String>>>;

/// How the new service behaves.
const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
const CLOSING: u8 = 2;
const HANGING: u8 = 3;

/// An origin answering `name` (or, for the new service, as its mode says), recording the
/// method and target of every request.
async fn origin(name: &'static str, mode: Arc<AtomicU8>, seen: Log) -> RawOrigin {
    RawOrigin::start(move |s: &Seen| {
        seen.lock()
            .unwrap()
            .push(format!("{} {}", s.method(), s.target()));
        let ok = |body: &str| {
            Reply::raw(&format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))
        };
        match mode.load(Ordering::SeqCst) {
            FAILING => {
                Reply::raw("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown")
            }
            CLOSING => Reply::Close,
            HANGING => Reply::Pieces(Vec::new()),
            _ => ok(name),
        }
    })
    .await
}

struct Rig {
    proxy: ProxyApp,
    mode: Arc<AtomicU8>,
    new_seen: Log,
    legacy_seen: Log,
    _origins: (RawOrigin, RawOrigin),
    client: reqwest::Client,
}

async fn rig(fast_path: bool) -> Rig {
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let (new_seen, legacy_seen) = (Arc::default(), Arc::default());
    let new = origin("new", mode.clone(), Arc::clone(&new_seen)).await;
    let legacy = origin("legacy", Arc::default(), Arc::clone(&legacy_seen)).await;
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let routes = format!(
        r#"
[[route]]
id = "products"
path = "/api/products"
upstream = "new"
fallback = "legacy"
timeout = "300ms"
breaker = {{ min_requests = 10, reset = "300ms", probes = 2 }}

[[route]]
id = "orders"
path = "/api/orders"
upstream = "new"
fallback = "legacy"
timeout = "300ms"
breaker = {{ min_requests = 10, reset = "30s" }}

[[route]]
id = "carts"
path = "/api/carts"
upstream = "gone"
fallback = "legacy"
fallback_writes = true

[upstreams.gone]
addrs = ["{gone}"]
"#
    );
    let routes = table(
        &[("new", vec![new.addr]), ("legacy", vec![legacy.addr])],
        &routes,
    )
    .replace("[proxy]\n", &format!("[proxy]\nfast_path = {fast_path}\n"));
    Rig {
        proxy: spawn_proxy(&routes).await,
        mode,
        new_seen,
        legacy_seen,
        _origins: (new, legacy),
        client: reqwest::Client::new(),
    }
}

struct Got {
    status: u16,
    fallback: Option<String>,
    retry_after: Option<String>,
    body: String,
}

impl Rig {
    async fn send(&self, method: reqwest::Method, path: &str) -> Got {
        let resp = self
            .client
            .request(method, self.proxy.url(path))
            .body(if path.contains("orders") || path.contains("carts") {
                "{}"
            } else {
                ""
            })
            .send()
            .await
            .unwrap();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        Got {
            status: resp.status().as_u16(),
            fallback: header("x-banyan-fallback"),
            retry_after: header("retry-after"),
            body: String::new(),
        }
        .with_body(resp)
        .await
    }

    fn new_requests(&self) -> usize {
        self.new_seen.lock().unwrap().len()
    }

    async fn breaker_state(&self, route: &str) -> String {
        let routes = self.proxy.routes().await;
        let route = routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == route)
            .unwrap()
            .clone();
        route["breakers"]["new"]["state"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Got {
    async fn with_body(mut self, resp: reqwest::Response) -> Self {
        self.body = resp.text().await.unwrap();
        self
    }
}

async fn metric(proxy: &ProxyApp, series: &str) -> f64 {
    proxy
        .admin_text("/metrics")
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn reads_fall_back_and_the_breaker_opens_and_closes(fast_path: bool) {
    let rig = rig(fast_path).await;
    let get = || rig.send(reqwest::Method::GET, "/api/products/1");
    let first = get().await;
    assert_eq!((first.status, first.body.as_str()), (200, "new"));

    // Failing: every read is answered by the monolith; the breaker opens once its window holds
    // 10 requests (the healthy one above and 9 failures) and the new service then gets nothing.
    rig.mode.store(FAILING, Ordering::SeqCst);
    let before = rig.new_requests();
    let started = Instant::now();
    let mut reasons = Vec::new();
    for _ in 0..100 {
        let got = get().await;
        assert_eq!(
            (got.status, got.body.as_str()),
            (200, "legacy"),
            "fast_path = {fast_path}: a client saw the failure"
        );
        reasons.push(got.fallback.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    assert!(reasons[..9].iter().all(|r| r == "status"), "{reasons:?}");
    // While open, only a half-open probe reaches the new service, at most one per `reset`
    // (300 ms; a slow machine may take longer than that for the 100 requests), and it fails.
    let probes = reasons[9..].iter().filter(|r| *r == "status").count();
    let open = reasons[9..].iter().filter(|r| *r == "breaker_open").count();
    assert_eq!(probes + open, 91, "{reasons:?}");
    assert!(
        probes as u128 <= elapsed.as_millis() / 300,
        "fast_path = {fast_path}: {probes} probes in {elapsed:?}: {reasons:?}"
    );
    assert_eq!(
        rig.new_requests() - before,
        9 + probes,
        "fast_path = {fast_path}"
    );
    assert_eq!(rig.breaker_state("products").await, "open");
    assert_eq!(
        metric(
            &rig.proxy,
            "banyan_breaker_state{route=\"products\",upstream=\"new\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &rig.proxy,
            "banyan_fallbacks_total{reason=\"breaker_open\",route=\"products\"}"
        )
        .await,
        open as f64
    );

    // A new service that drops connections before answering: still the monolith's answer.
    // Once `reset` has passed, a half-open probe reaches it, fails, and opens the breaker again.
    rig.mode.store(CLOSING, Ordering::SeqCst);
    let probed = rig.new_requests();
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.new_requests() == probed {
        assert!(Instant::now() < deadline, "no half-open probe was sent");
        let got = get().await;
        assert_eq!((got.status, got.body.as_str()), (200, "legacy"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Recovered: the probes pass and the breaker closes; no client saw a failure meanwhile.
    rig.mode.store(HEALTHY, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = get().await;
        assert_eq!(got.status, 200, "fast_path = {fast_path}");
        if got.body == "new"
            && got.fallback.is_none()
            && rig.breaker_state("products").await == "closed"
        {
            break;
        }
        assert!(Instant::now() < deadline, "the breaker never closed again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(
            &rig.proxy,
            "banyan_breaker_state{route=\"products\",upstream=\"new\"}"
        )
        .await,
        0.0
    );
    assert!(
        rig.proxy.process.log().contains("circuit breaker opened"),
        "the state change is logged"
    );
}

async fn writes_fall_back_only_when_no_byte_reached_the_failing_side(fast_path: bool) {
    let rig = rig(fast_path).await;
    rig.mode.store(FAILING, Ordering::SeqCst);
    // Without fallback_writes, a write's failed answer is the client's (it may have applied)...
    for _ in 0..10 {
        let got = rig.send(reqwest::Method::POST, "/api/orders").await;
        assert_eq!(got.status, 503);
        assert_eq!(got.body, "down");
    }
    // ...and once the breaker is open, the answer is a fast 503 with Retry-After, and the new
    // service gets no more writes.
    let before = rig.new_requests();
    for _ in 0..20 {
        let started = Instant::now();
        let got = rig.send(reqwest::Method::POST, "/api/orders").await;
        assert_eq!(got.status, 503, "fast_path = {fast_path}");
        assert!(got.retry_after.is_some(), "fast_path = {fast_path}");
        assert!(got.body.contains("\"unavailable\""), "{}", got.body);
        assert!(got.body.contains("circuit breaker"), "{}", got.body);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(rig.new_requests(), before);
    assert!(
        !rig.legacy_seen
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.starts_with("POST /api/orders")),
        "no write reached the monolith"
    );

    // With fallback_writes, a write whose connection was refused lands on the monolith, once.
    let got = rig.send(reqwest::Method::POST, "/api/carts").await;
    assert_eq!((got.status, got.body.as_str()), (200, "legacy"));
    assert_eq!(got.fallback.as_deref(), Some("connect"));
    let carts = rig
        .legacy_seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("POST /api/carts"))
        .count();
    assert_eq!(carts, 1);
    // A read of a route whose upstream refuses connections falls back too.
    let got = rig.send(reqwest::Method::GET, "/api/carts/1").await;
    assert_eq!((got.status, got.body.as_str()), (200, "legacy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fall_back_and_the_breaker_opens_and_closes_on_both_pipelines() {
    tokio::join!(
        reads_fall_back_and_the_breaker_opens_and_closes(true),
        reads_fall_back_and_the_breaker_opens_and_closes(false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fall_back_only_when_no_byte_reached_the_failing_side_on_both_pipelines() {
    tokio::join!(
        writes_fall_back_only_when_no_byte_reached_the_failing_side(true),
        writes_fall_back_only_when_no_byte_reached_the_failing_side(false)
    );
}

/// A new service that hangs (SIGSTOPped, or stuck) costs a client at most the route's
/// `timeout`: a read is then served by the fallback; a write, which may have been applied, is
/// answered 504 and never sent to the monolith.
async fn a_hanging_side_costs_at_most_the_route_timeout(fast_path: bool) {
    let rig = rig(fast_path).await;
    rig.mode.store(HANGING, Ordering::SeqCst);
    for _ in 0..5 {
        let started = Instant::now();
        let got = rig.send(reqwest::Method::GET, "/api/products/1").await;
        assert_eq!(
            (got.status, got.body.as_str(), got.fallback.as_deref()),
            (200, "legacy", Some("timeout")),
            "fast_path = {fast_path}"
        );
        // The route's 300 ms, not the upstream's 30 s read timeout.
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let got = rig.send(reqwest::Method::POST, "/api/orders").await;
    assert_eq!(got.status, 504, "fast_path = {fast_path}");
    assert!(
        !rig.legacy_seen
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.starts_with("POST")),
        "a write that may have been applied is not sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_side_costs_at_most_the_route_timeout_on_both_pipelines() {
    tokio::join!(
        a_hanging_side_costs_at_most_the_route_timeout(true),
        a_hanging_side_costs_at_most_the_route_timeout(false)
    );
}

/// One of two backends answering 500s is ejected after 5 in a row and gets no traffic while
/// ejected; of a pool whose backends all fail, never more than `max_eject_percent` (50 %).
async fn a_failing_backend_is_ejected(fast_path: bool) {
    let status_origin = |status: u16, seen: Log| {
        RawOrigin::start(move |s: &Seen| {
            seen.lock().unwrap().push(s.target().to_owned());
            Reply::raw(&format!(
                "HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok"
            ))
        })
    };
    let (bad_seen, good_seen, bad2_seen): (Log, Log, Log) = Default::default();
    let bad = status_origin(500, bad_seen.clone()).await;
    let good = status_origin(200, good_seen.clone()).await;
    let bad2 = status_origin(503, Arc::clone(&bad2_seen)).await;
    let bad3 = status_origin(502, Arc::clone(&bad2_seen)).await;
    let routes = table(
        &[
            ("pair", vec![bad.addr, good.addr]),
            ("failing", vec![bad2.addr, bad3.addr]),
        ],
        "[[route]]\nid = \"pair\"\npath = \"/api/pair\"\nupstream = \"pair\"\nbreaker = { enabled = false }\n\n\
         [[route]]\nid = \"failing\"\npath = \"/api/failing\"\nupstream = \"failing\"\nbreaker = { enabled = false }\n",
    )
    .replace("[proxy]\n", &format!("[proxy]\nfast_path = {fast_path}\n"));
    let proxy = spawn_proxy(&routes).await;
    let client = reqwest::Client::new();
    let mut failed = 0;
    for _ in 0..40 {
        let status = client
            .get(proxy.url("/api/pair/1"))
            .send()
            .await
            .unwrap()
            .status();
        failed += usize::from(status == 500);
    }
    assert_eq!(bad_seen.lock().unwrap().len(), 5, "fast_path = {fast_path}");
    assert_eq!(failed, 5);
    assert_eq!(good_seen.lock().unwrap().len(), 35);
    let ejected = |routes: &serde_json::Value, upstream: &str| {
        routes["upstreams"][upstream]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["ejected"] == true)
            .count()
    };
    let listed = proxy.routes().await;
    assert_eq!(ejected(&listed, "pair"), 1);
    assert_eq!(
        metric(
            &proxy,
            &format!(
                "banyan_ejections_total{{backend=\"{}\",upstream=\"pair\"}}",
                bad.addr
            )
        )
        .await,
        1.0
    );
    for _ in 0..40 {
        client
            .get(proxy.url("/api/failing/1"))
            .send()
            .await
            .unwrap();
    }
    let listed = proxy.routes().await;
    assert_eq!(
        ejected(&listed, "failing"),
        1,
        "fast_path = {fast_path}: {listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_is_ejected_on_both_pipelines() {
    tokio::join!(
        a_failing_backend_is_ejected(true),
        a_failing_backend_is_ejected(false)
    );
}

/// A retry storm: a side that fails every request, with its breaker and ejection off, gets
/// its failed attempts followed by a fallback only within its retry budget (a burst of 100,
/// then 20 % of its requests plus 10 a second); the rest are answered as they failed, and
/// counted as `budget_exhausted`.
async fn retries_stay_within_the_budget(fast_path: bool) {
    let (new_seen, legacy_seen): (Log, Log) = Default::default();
    let new = origin("new", Arc::new(AtomicU8::new(CLOSING)), new_seen.clone()).await;
    let legacy = origin("legacy", Arc::default(), legacy_seen.clone()).await;
    let routes = table(
        &[("new", vec![new.addr]), ("legacy", vec![legacy.addr])],
        "[upstreams.new.outlier]\nenabled = false\n\n\
         [[route]]\nid = \"storm\"\npath = \"/\"\nupstream = \"new\"\nfallback = \"legacy\"\nbreaker = { enabled = false }\n",
    )
    .replace("[proxy]\n", &format!("[proxy]\nfast_path = {fast_path}\n"));
    let proxy = spawn_proxy(&routes).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let (mut served, mut failed) = (0, 0);
    for _ in 0..300 {
        match client
            .get(proxy.url("/api/x"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
        {
            200 => served += 1,
            _ => failed += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fallbacks = legacy_seen.lock().unwrap().len();
    assert_eq!(
        new_seen.lock().unwrap().len(),
        300,
        "fast_path = {fast_path}"
    );
    assert_eq!(fallbacks, served);
    let allowed = 100.0 + 0.2 * 300.0 + 10.0 * elapsed + 1.0;
    assert!(
        fallbacks >= 100 && fallbacks as f64 <= allowed,
        "fast_path = {fast_path}: {fallbacks} fallbacks in {elapsed:.2} s (budget {allowed:.0})"
    );
    let exhausted = metric(
        &proxy,
        "banyan_retries_total{result=\"budget_exhausted\",route=\"storm\"}",
    )
    .await;
    assert_eq!(exhausted as usize, failed, "fast_path = {fast_path}");
    let retried = metric(
        &proxy,
        "banyan_retries_total{result=\"retried\",route=\"storm\"}",
    )
    .await;
    assert_eq!(retried as usize, fallbacks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_budget_on_both_pipelines() {
    tokio::join!(
        retries_stay_within_the_budget(true),
        retries_stay_within_the_budget(false)
    );
}

/// The real thing: the monolith and a synced catalog service behind a route split 50 % to the
/// catalog with `fallback = "legacy"`. Under a steady load of GETs from 8 sticky clients, the
/// catalog is SIGSTOPped (it hangs), resumed, then killed; in each phase of at least 2,000
/// requests no client sees anything but 200. The breaker opens while it hangs and closes again
/// once it is back.
async fn a_failing_catalog_is_never_seen_by_clients(fast_path: bool) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let app = banyan_tests::spawn_app_with(banyan_tests::AppOptions::seeded(5)).await;
    let mut catalog = banyan_tests::spawn_synced_catalog(&app).await;
    let addr = |a: &str| a.trim_start_matches("http://").parse().unwrap();
    let routes = table(
        &[
            ("legacy", vec![addr(&app.address)]),
            ("catalog", vec![addr(&catalog.address)]),
        ],
        "[upstreams.catalog.outlier]\nenabled = false\n\n\
         [[route]]\nid = \"products\"\npath = \"/api/products\"\nupstream = \"legacy\"\n\
         split = { to = \"catalog\", percent = 50, sticky = \"cookie:sid\" }\n\
         fallback = \"legacy\"\ntimeout = \"500ms\"\n\
         breaker = { window = \"5s\", min_requests = 20, reset = \"1s\", probes = 3 }\n",
    )
    .replace("[proxy]\n", &format!("[proxy]\nfast_path = {fast_path}\n"));
    let proxy = spawn_proxy(&routes).await;
    let client = reqwest::Client::new();
    let url = proxy.url("/api/products/1");
    // The product was seeded into the monolith; the catalog has it once the sync has run.
    banyan_tests::converges(&format!("{}/api/products/1", catalog.address), |s, _| {
        s == 200
    })
    .await;

    // `n` GETs from 8 clients with their own sticky keys; the statuses that were not 200.
    let load = |n: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut tasks = Vec::new();
            for c in 0..8 {
                let (client, url) = (client.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    let mut bad = Vec::new();
                    for _ in 0..n / 8 {
                        let status = client
                            .get(&url)
                            .header("cookie", format!("sid=client-{c}"))
                            .send()
                            .await
                            .map_or(0, |r| r.status().as_u16());
                        if status != 200 {
                            bad.push(status);
                        }
                    }
                    bad
                }));
            }
            let mut bad = Vec::new();
            for t in tasks {
                bad.extend(t.await.unwrap());
            }
            bad
        }
    };
    let state = || async {
        proxy.routes().await["routes"][0]["breakers"]["catalog"]["state"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let sides = || async { proxy.routes().await["routes"][0]["sides"].clone() };
    assert_eq!(
        load(400).await,
        Vec::<u16>::new(),
        "fast_path = {fast_path}: healthy"
    );
    assert!(
        sides().await.to_string().contains("catalog"),
        "{}",
        sides().await
    );

    // Hanging: the requests on the catalog's side wait the route's timeout, then the monolith
    // answers; the breaker opens and the rest go straight to the monolith.
    kill(Pid::from_raw(catalog.pid()), Signal::SIGSTOP).unwrap();
    assert_eq!(
        load(2000).await,
        Vec::<u16>::new(),
        "fast_path = {fast_path}: hanging"
    );
    assert_eq!(state().await, "open", "fast_path = {fast_path}");

    // Back: within reset and the probes the breaker closes, while nobody sees a failure.
    kill(Pid::from_raw(catalog.pid()), Signal::SIGCONT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while state().await != "closed" {
        assert_eq!(
            load(80).await,
            Vec::<u16>::new(),
            "fast_path = {fast_path}: recovering"
        );
        assert!(
            Instant::now() < deadline,
            "the breaker did not close: {}",
            state().await
        );
    }
    assert_eq!(
        load(2000).await,
        Vec::<u16>::new(),
        "fast_path = {fast_path}: recovered"
    );

    // Killed: refused connections fall back at once.
    catalog.kill();
    assert_eq!(
        load(2000).await,
        Vec::<u16>::new(),
        "fast_path = {fast_path}: killed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_catalog_is_never_seen_by_clients_on_both_pipelines() {
    tokio::join!(
        a_failing_catalog_is_never_seen_by_clients(true),
        a_failing_catalog_is_never_seen_by_clients(false)
    );
}

/// `kill -9` one of two backends under 16 keep-alive clients, 8 times over (each killed one
/// restarted on its port): no GET fails. A pooled connection to the dead backend, or a new one
/// it reset while holding the request, is retried on the other backend.
async fn killing_one_of_two_backends_fails_no_get(fast_path: bool) {
    use banyan_tests::process::ServiceProcess;
    use std::sync::atomic::AtomicUsize;

    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let addrs = [port(), port()];
    let start = |addr: std::net::SocketAddr| async move {
        ServiceProcess::start_checked(
            "bench-backend",
            &["--listen", &addr.to_string()],
            &[],
            |a| format!("http://{a}/health"),
        )
        .await
    };
    let mut backends = [start(addrs[0]).await, start(addrs[1]).await];
    let routes = table(
        &[("pair", addrs.to_vec())],
        "[upstreams.pair.health]\npath = \"/health\"\ninterval = \"300ms\"\ntimeout = \"300ms\"\n\n\
         [[route]]\nid = \"pair\"\npath = \"/\"\nupstream = \"pair\"\n",
    )
    .replace("[proxy]\n", &format!("[proxy]\nfast_path = {fast_path}\n"));
    let proxy = spawn_proxy(&routes).await;
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (done, stop, url) = (done.clone(), stop.clone(), proxy.url("/api/products/1"));
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut failed = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failed.push(format!(
                        "{}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => failed.push(e.to_string()),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failed
        }));
    }
    let after = |n: usize| {
        let done = done.clone();
        async move {
            let target = done.load(Ordering::SeqCst) + n;
            let deadline = Instant::now() + Duration::from_secs(30);
            while done.load(Ordering::SeqCst) < target {
                assert!(Instant::now() < deadline, "the load stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    for round in 0..8 {
        after(300).await;
        let victim = round % 2;
        backends[victim].kill();
        after(300).await;
        backends[victim] = start(addrs[victim]).await;
        // Back in rotation (its health check passed) before the other one is killed.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listed = proxy.routes().await;
            let backends = listed["upstreams"]["pair"]["backends"]
                .as_array()
                .unwrap()
                .clone();
            if backends.iter().all(|b| b["in_rotation"] == true) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the restarted backend never came back"
            );
            after(50).await;
        }
    }
    after(300).await;
    stop.store(true, Ordering::SeqCst);
    let mut failed = Vec::new();
    for c in clients {
        failed.extend(c.await.unwrap());
    }
    assert!(
        failed.is_empty(),
        "fast_path = {fast_path}: {} of {} GETs failed: {:?}",
        failed.len(),
        done.load(Ordering::SeqCst),
        failed.iter().collect::<std::collections::BTreeSet<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_backends_fails_no_get_on_both_pipelines() {
    killing_one_of_two_backends_fails_no_get(true).await;
    killing_one_of_two_backends_fails_no_get(false).await;
}

/// A backend that takes a GET on a new connection and closes it before any byte of an answer
/// (as one killed while holding the request does): the GET goes to the other backend. A POST,
/// which it may have applied, does not.
async fn a_reset_before_any_answer_byte_is_retried_for_reads(fast_path: bool) {
    let (closer_seen, good_seen): (Log, Log) = Default::default();
    let closer = origin(
        "closer",
        Arc::new(AtomicU8::new(CLOSING)),
        closer_seen.clone(),
    )
    .await;
    let good = origin("good", Arc::default(), good_seen.clone()).await;
    let routes = table(
        &[("pair", vec![closer.addr, good.addr])],
        "[upstreams.pair.outlier]\nenabled = false\n\n\
         [[route]]\nid = \"pair\"\npath = \"/\"\nupstream = \"pair\"\nbreaker = { enabled = false }\n",
    )
    .replace("[proxy]\n", &format!("[proxy]\nfast_path = {fast_path}\n"));
    let proxy = spawn_proxy(&routes).await;
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let r = client.get(proxy.url("/api/x")).send().await.unwrap();
        assert_eq!(r.status(), 200, "fast_path = {fast_path}");
        assert_eq!(r.text().await.unwrap(), "good");
    }
    assert!(
        closer_seen.lock().unwrap().len() >= 5,
        "fast_path = {fast_path}: round robin sent GETs to the closer and they were retried"
    );
    let mut failed_posts = 0;
    for _ in 0..20 {
        let r = client
            .post(proxy.url("/api/x"))
            .body("{}")
            .send()
            .await
            .unwrap();
        failed_posts += usize::from(r.status() == 502);
    }
    let posts_at_closer = closer_seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("POST"))
        .count();
    assert!(posts_at_closer > 0);
    assert_eq!(failed_posts, posts_at_closer, "a POST is never sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_before_any_answer_byte_is_retried_for_reads_on_both_pipelines() {
    tokio::join!(
        a_reset_before_any_answer_byte_is_retried_for_reads(true),
        a_reset_before_any_answer_byte_is_retried_for_reads(false)
    );
}
