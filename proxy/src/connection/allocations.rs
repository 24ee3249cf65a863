//! How many heap allocations a request on the fast path costs, counted (issue 24).
//!
//! A test-only global allocator counts the allocations made on one thread: the thread that
//! runs the proxy's side of the test (a single-threaded runtime, as each of the proxy's worker
//! threads is). The client and the upstream are threads of their own and not counted; neither
//! is the access log's writer thread nor the shadow thread (neither is on a request's path).
//!
//! The proxy's side is the real one: [`Connections::requests`] (the keep-alive loop, the head
//! read, the edge's inspection), the fast path, the route table a migration runs (breakers on
//! every route, the monolith as fallback, a route in a rollout held at a sticky 50 %), its
//! metrics. Every fourth request is a small write (`PUT` with its body in the same write as its
//! head, to a route with a breaker and a fallback), which the fast path takes too. Per request is
//! measured as a difference: one connection carries `FEW` requests,
//! another `FEW + MANY`, both after a warm-up connection; what the second allocated beyond the
//! first, divided by `MANY`, is what a request allocates once the proxy is warm (per-connection
//! costs and first-time costs cancel out). Each count is read on the proxy's thread once its
//! connection is over, so nothing of a request is left out of its window.
//!
//! The access log is off here (no subscriber: its lines would go to the test's stderr). Its line
//! is written into a reused per-thread buffer and appended to a shared one
//! (`service_kit::log_line`); a scratch run of this test with a subscriber that enables
//! everything (2026-12-07) wrote every line and counted the same allocations.

// A global allocator is an `unsafe` trait; every call here is passed on to `System` as is.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Connections;
use crate::balance::Workers;
use crate::fast_path::FastPath;
use crate::forward::Banyan;
use crate::lifecycle::{Lifecycle, Timing};
use crate::metrics::Metrics;
use crate::reload::LiveTable;
use crate::shadow::results::Results;
use crate::shadow::thread::Shadower;

/// The system allocator, counting what the flagged thread allocates.
struct Counting;

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn note() {
    // `try_with`: an allocation during the thread's teardown finds no flag, and is not this
    // test's.
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to `System` unchanged; counting touches no memory it hands
// out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A buffer that grows costs an allocation as well.
        note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Requests on the shorter measured connection.
const FEW: usize = 100;
/// Requests the longer one carries beyond that.
const MANY: usize = 1_000;

/// The table a migration runs (as `bench/compare` gives Banyan): breakers on every route (on
/// by default), moved routes with the monolith as fallback, the measured route in a rollout
/// held at its 50 % step with a sticky split on a cookie.
fn table(upstream: std::net::SocketAddr) -> String {
    let mut t = format!(
        "[proxy]\nthreads = 1\n\n[upstreams.legacy]\naddrs = [\"{upstream}\"]\n\n\
         [upstreams.catalog]\naddrs = [\"{upstream}\"]\n\n"
    );
    for i in 0..8 {
        let side = if i % 2 == 0 {
            "upstream = \"catalog\"\nfallback = \"legacy\"\n"
        } else {
            "upstream = \"legacy\"\n"
        };
        t.push_str(&format!(
            "[[route]]\nid = \"r{i}\"\npath = \"/api/area{i}\"\n{side}\n"
        ));
    }
    t.push_str(
        "[[route]]\nid = \"products\"\npath = \"/api/products\"\nmethods = [\"GET\", \"HEAD\"]\n\
         upstream = \"legacy\"\nfallback = \"legacy\"\nrollout = { to = \"catalog\", \
         steps = [50, 100], interval = \"1h\", approve_at = [50], sticky = \"cookie:sid\" }\n\n\
         [[route]]\nid = \"rest\"\npath = \"/\"\nupstream = \"legacy\"\n",
    );
    t
}

/// An upstream answering every request on a connection with 64 bytes of JSON, kept alive.
fn upstream() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let body = [b'x'; 64];
                let mut answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                answer.extend_from_slice(&body);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = find(&buf, b"\r\n\r\n") {
                        // A write's body (the client's own, so its length is trusted here).
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let body = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        if buf.len() < end + 4 + body {
                            break;
                        }
                        buf.drain(..end + 4 + body);
                        if conn.write_all(&answer).is_err() {
                            return;
                        }
                    }
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `n` requests on one keep-alive connection, each answer read whole before the next is sent;
/// every answer must be a 200 with the upstream's body.
fn client(proxy: std::net::SocketAddr, n: usize) {
    let mut conn = std::net::TcpStream::connect(proxy).unwrap();
    conn.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for i in 0..n {
        // Sixteen users, so both sides of the split serve; every fourth request a small write
        // (its body in the same write as its head) to a route with a breaker and a fallback.
        let request = if i % 4 == 3 {
            format!(
                "PUT /api/area0/items/{i} HTTP/1.1\r\nHost: shop.example\r\n\
                 Content-Type: application/json\r\nContent-Length: 11\r\n\r\n{{\"stock\":3}}"
            )
        } else {
            format!(
                "GET /api/products/42?page=2 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: wrk\r\n\
                 Accept: application/json\r\nCookie: sid=user{}\r\n\r\n",
                i % 16
            )
        };
        conn.write_all(request.as_bytes()).unwrap();
        let (head_end, len) = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..end])
                    .unwrap()
                    .to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "answer {i}: {head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .expect("a length")
                    .trim()
                    .parse()
                    .unwrap();
                break (end + 4, len);
            }
            let n = conn.read(&mut chunk).unwrap();
            assert!(n > 0, "the proxy closed after {i} answers");
            buf.extend_from_slice(&chunk[..n]);
        };
        while buf.len() < head_end + len {
            let n = conn.read(&mut chunk).unwrap();
            assert!(n > 0, "the proxy closed mid-answer {i}");
            buf.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(&buf[head_end..head_end + len], &[b'x'; 64][..]);
        buf.drain(..head_end + len);
    }
}

#[test]
fn a_warm_fast_path_request_allocates_at_most_its_budget() {
    let upstream = upstream();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, table(upstream)).unwrap();
    let metrics = Arc::new(Metrics::new());
    let live = Arc::new(LiveTable::open(&path, metrics.clone()).unwrap());
    let lifecycle = Arc::new(Lifecycle::new(Timing::default()));
    let results = Arc::new(Results::new(metrics.clone()));
    let shadow = Arc::new(Shadower::new(results, live.shadow_backlogs()));
    let conf = Arc::new(pingora_core::server::configuration::ServerConf::default());
    let app = pingora_proxy::http_proxy(
        &conf,
        Banyan {
            live: live.clone(),
            metrics: metrics.clone(),
            shadow: shadow.clone(),
            lifecycle: lifecycle.clone(),
        },
    );
    let connections = Connections {
        app: Arc::new(app),
        fast: FastPath {
            live,
            metrics: metrics.clone(),
            shadow,
            lifecycle: lifecycle.clone(),
        },
        workers: Arc::new(Workers::default()),
        lifecycle,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let counts = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let clients = std::thread::spawn(move || {
            // Warm-up (first-time costs: the upstream connection, metric series, buffers),
            // then the two measured connections.
            for n in [FEW, FEW, FEW + MANY] {
                client(proxy, n);
            }
        });
        COUNTED.with(|c| c.set(true));
        let mut counts = Vec::new();
        for _ in 0..3 {
            let (socket, peer) = listener.accept().await.unwrap();
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            connections
                .requests(socket, Some(peer.ip()), &shutdown)
                .await;
            counts.push(ALLOCATIONS.load(Ordering::Relaxed) - before);
        }
        COUNTED.with(|c| c.set(false));
        clients.join().unwrap();
        counts
    });
    let per_request = (counts[2] as f64 - counts[1] as f64) / MANY as f64;
    println!(
        "allocations: warm-up connection {}, {FEW} requests {}, {} requests {}: {per_request:.2} a request",
        counts[0],
        counts[1],
        FEW + MANY,
        counts[2]
    );
    let served = metrics.render();
    assert!(
        served.contains("route=\"products\"") && served.contains("route=\"r0\""),
        "reads and writes were counted: {served}"
    );
    let pipeline = |name: &str| {
        let series = format!("banyan_request_pipeline_total{{pipeline=\"{name}\"}}");
        served
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    assert_eq!(
        (pipeline("fast"), pipeline("pingora")),
        ((FEW * 2 + FEW + MANY) as u64, 0),
        "every request took the fast path"
    );
    assert!(
        per_request <= BUDGET,
        "a fast-path request allocated {per_request:.2} times (budget {BUDGET}): {counts:?}"
    );
}

/// What a warm request may allocate: one allocation, the boxed state of the request's exchange
/// (`Connections::requests` boxes it on purpose, so that an idle connection's future does not
/// carry room for it; see there), and a few hundredths for the idle upstream list the sweep
/// drops while its only connection is out (`fast_path::idle`, once every 256 requests). The
/// buffers and header slots come from [`crate::buffers`], the request id is inline, the path
/// is borrowed when it needs no normalizing. Measured 14 a request before those (2026-12-07).
const BUDGET: f64 = 1.05;
