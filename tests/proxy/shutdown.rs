//! Stopping and replacing the proxy under load: SIGTERM answers every request a client already
//! sent (with `Connection: close`), the process exits as soon as nothing is in flight, a request
//! cut off by the grace period is logged by its id, `/healthz` turns 503 at once and the drain
//! delay keeps serving, and an upgrade to a new process refuses no connection and fails no
//! request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use banyan_tests::origin::Origin;
use banyan_tests::proxy::{ProxyApp, spawn_proxy, spawn_proxy_with, table};
use banyan_tests::raw_client::exchange;
use tokio::net::TcpStream;

fn one_route(origin: &Origin) -> String {
    table(
        &[("a", vec![origin.addr])],
        "[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"a\"\n",
    )
}

/// What a keep-alive client saw while the proxy stopped or changed hands.
#[derive(Debug, Default)]
struct Tally {
    answered: AtomicU64,
    /// Requests sent that got no (complete) response.
    lost: AtomicU64,
    /// Connection attempts refused.
    refused: AtomicU64,
    /// Responses that were not 200.
    failed: AtomicU64,
}

/// A client on raw keep-alive connections: request after request, a new connection when the
/// proxy closes one (after saying so, or not). GETs go through the fast path, POSTs through
/// Pingora's pipeline. Stops when `stop` is set, or (`until_refused`) at the first refused
/// connection attempt.
async fn client(
    addr: String,
    post: bool,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    until_refused: bool,
) {
    let request: &[u8] = if post {
        b"POST /load HTTP/1.1\r\nHost: banyan.test\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    } else {
        b"GET /load HTTP/1.1\r\nHost: banyan.test\r\n\r\n"
    };
    'connections: while !stop.load(Ordering::Relaxed) {
        let mut s = match TcpStream::connect(&addr).await {
            Ok(s) => s,
            Err(_) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                if until_refused {
                    return;
                }
                tokio::task::yield_now().await;
                continue;
            }
        };
        let mut rest = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match exchange(&mut s, &mut rest, request, Duration::from_secs(20)).await {
                Ok(r) => {
                    tally.answered.fetch_add(1, Ordering::Relaxed);
                    if r.status != 200 {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    if r.closes() {
                        continue 'connections;
                    }
                }
                Err(_) => {
                    tally.lost.fetch_add(1, Ordering::Relaxed);
                    continue 'connections;
                }
            }
        }
    }
}

fn start_clients(
    proxy: &ProxyApp,
    n: usize,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
    until_refused: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    let addr = proxy.address.trim_start_matches("http://").to_owned();
    (0..n)
        .map(|i| {
            tokio::spawn(client(
                addr.clone(),
                i % 2 == 1,
                stop.clone(),
                tally.clone(),
                until_refused,
            ))
        })
        .collect()
}

async fn wait_answered(tally: &Tally, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tally.answered.load(Ordering::Relaxed) < n {
        assert!(
            Instant::now() < deadline,
            "the load never got going: {tally:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// 16 keep-alive clients (half through each pipeline) while the proxy gets SIGTERM: every
/// request sent is answered; the clients stop when connections are refused; the proxy exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_leaves_no_request_unanswered() {
    let origin = Origin::start("a").await;
    let mut proxy = spawn_proxy(&one_route(&origin)).await;
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients = start_clients(&proxy, 16, &stop, &tally, true);
    wait_answered(&tally, 2_000).await;
    proxy.process.signal_term();
    let status = proxy.process.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    for c in clients {
        tokio::time::timeout(Duration::from_secs(30), c)
            .await
            .unwrap()
            .unwrap();
    }
    eprintln!("{tally:?}");
    assert_eq!(
        tally.lost.load(Ordering::Relaxed),
        0,
        "requests without an answer: {tally:?}"
    );
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "{tally:?}");
}

/// With nothing in flight the proxy exits at once, not at the end of its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_in_flight_sigterm_exits_without_waiting_out_the_grace() {
    let origin = Origin::start("a").await;
    let mut proxy = spawn_proxy_with(&one_route(&origin), &["--shutdown-grace", "60"]).await;
    assert_eq!(proxy.backend_of("/").await, "a");
    proxy.process.signal_term();
    // Well inside the 60 s grace period.
    let status = proxy.process.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        proxy
            .process
            .log()
            .contains("every client connection is closed; exiting")
    );
}

/// A request still running when the grace period ends: its connection is closed and the log
/// names its request id and route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_off_by_the_grace_period_is_logged_with_its_id() {
    let origin = Origin::start("a").await;
    let mut proxy = spawn_proxy(&one_route(&origin)).await;
    let url = proxy.url("/slow/20000");
    let client = proxy.client.clone();
    let slow = tokio::spawn(async move {
        client
            .get(url)
            .header("x-request-id", "cut-off-by-grace-1")
            .send()
            .await
    });
    // In flight once the origin has it (the slow endpoint counts on arrival).
    let deadline = Instant::now() + Duration::from_secs(20);
    while origin.hits.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.process.signal_term();
    let status = proxy.process.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        slow.await.unwrap().is_err(),
        "the cut-off request got no answer"
    );
    let log = proxy.process.log();
    let line = log
        .lines()
        .find(|l| {
            l.contains("grace period over: closing the connection of a request still running")
        })
        .unwrap_or_else(|| panic!("no cut-off line:\n{log}"));
    assert!(
        line.contains("cut-off-by-grace-1") && line.contains("route=all"),
        "{line}"
    );
}

/// Kubernetes: on SIGTERM `/healthz` turns 503 at once, so the pod leaves the Service's
/// endpoints, while the proxy keeps serving for the drain delay; then it drains and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_healthz_turns_503_and_the_drain_delay_keeps_serving() {
    let origin = Origin::start("a").await;
    let mut proxy = spawn_proxy_with(&one_route(&origin), &["--drain-delay", "3"]).await;
    assert_eq!(proxy.backend_of("/").await, "a");
    proxy.process.signal_term();
    let healthz = format!("{}/healthz", proxy.admin);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = proxy.client.get(&healthz).send().await.unwrap();
        if r.status() == 503 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["status"], "draining");
            break;
        }
        assert!(Instant::now() < deadline, "/healthz never turned 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Still serving, new connections included, during the drain delay.
    for _ in 0..20 {
        let fresh = reqwest::Client::new();
        let r = fresh.get(proxy.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let status = proxy.process.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
}

/// A second process takes over with `--upgrade` while 16 clients keep sending: not one
/// connection is refused, every request is answered 200, and the old process exits by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_under_load_refuses_no_connection_and_fails_no_request() {
    let origin = Origin::start("a").await;
    let mut old = spawn_proxy(&one_route(&origin)).await;
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients = start_clients(&old, 16, &stop, &tally, false);
    wait_answered(&tally, 1_000).await;
    let new = old.start_upgrade().await;
    let before_exit = tally.answered.load(Ordering::Relaxed);
    let status = old.process.wait_exit(Duration::from_secs(40)).await;
    assert!(status.success(), "{status:?}");
    // The new process alone now: more load, then stop.
    wait_answered(&tally, tally.answered.load(Ordering::Relaxed) + 1_000).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(Duration::from_secs(30), c)
            .await
            .unwrap()
            .unwrap();
    }
    eprintln!("{tally:?} ({before_exit} answered when the new process was ready)");
    assert_eq!(tally.refused.load(Ordering::Relaxed), 0, "{tally:?}");
    assert_eq!(tally.lost.load(Ordering::Relaxed), 0, "{tally:?}");
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "{tally:?}");
    let pid = std::fs::read_to_string(old.dir.path().join("banyan.pid")).unwrap();
    assert_eq!(
        pid.trim(),
        new.pid().to_string(),
        "the pid file names the new process"
    );
    let routes: serde_json::Value = old
        .client
        .get(format!("{}/routes", old.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        routes["version"].is_string(),
        "the admin API moved over too"
    );
}
