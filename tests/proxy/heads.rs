//! Request heads are bounded on both pipelines: size (431), header count (431) and the time to
//! send them (408), in the catalog error format; a thousand clients trickling huge heads cost
//! bounded memory and get their answer.

use std::time::Duration;

use banyan_tests::origin::Origin;
use banyan_tests::proxy::{ProxyApp, spawn_proxy, table};
use banyan_tests::raw_client::{RawResponse, read_response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn proxy(extra_proxy_settings: &str) -> (Origin, ProxyApp) {
    let origin = Origin::start("a").await;
    let routes = table(
        &[("a", vec![origin.addr])],
        "[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"a\"\n",
    )
    .replacen("[proxy]\n", &format!("[proxy]\n{extra_proxy_settings}"), 1);
    (origin, spawn_proxy(&routes).await)
}

async fn send(proxy: &ProxyApp, bytes: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(proxy.address.trim_start_matches("http://"))
        .await
        .unwrap();
    // The proxy may answer (and close) before it has read everything: ignore write errors.
    let _ = s.write_all(bytes).await;
    let mut rest = Vec::new();
    read_response(&mut s, &mut rest, Duration::from_secs(30))
        .await
        .expect("an answer")
}

fn head(method: &str, headers: &[String]) -> Vec<u8> {
    let mut h = format!("{method} /x HTTP/1.1\r\nHost: banyan.test\r\n");
    for line in headers {
        h.push_str(line);
        h.push_str("\r\n");
    }
    if method == "POST" {
        h.push_str("Content-Length: 2\r\n\r\n{}");
    } else {
        h.push_str("\r\n");
    }
    h.into_bytes()
}

/// Over 32 KiB of head, or over 100 headers: 431 in the error format, for a read or a write
/// (the edge refuses them before choosing a pipeline); within both: forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_over_their_bounds_are_refused_with_431_on_both_pipelines() {
    let (_origin, proxy) = proxy("").await;
    for method in ["GET", "POST"] {
        let big = vec![format!("X-Big: {}", "a".repeat(33 * 1024))];
        let r = send(&proxy, &head(method, &big)).await;
        assert_eq!(r.status, 431, "{method}");
        assert_eq!(r.json()["error"]["code"], "headers_too_large");
        assert!(r.closes());

        let many: Vec<String> = (0..101).map(|i| format!("X-H{i}: v")).collect();
        let r = send(&proxy, &head(method, &many)).await;
        assert_eq!(r.status, 431, "{method}: {:?}", r.json());

        // (The origin, hyper, takes at most 100 headers itself, the proxy's own included.)
        let fine: Vec<String> = (0..90)
            .map(|i| format!("X-H{i}: {}", "v".repeat(300)))
            .collect();
        let r = send(&proxy, &head(method, &fine)).await;
        assert_eq!(r.status, 200, "{method}: {:?}", r.json());
    }
    let m = proxy.admin_text("/metrics").await;
    assert!(
        m.contains("banyan_requests_total{class=\"4xx\",route=\"-\",upstream=\"-\"} 4"),
        "{m}"
    );
}

/// A head that has not finished arriving within `request_head_timeout` gets 408, however
/// steadily its bytes trickle in (the time is per head, not per read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_too_slowly_gets_408() {
    let (_origin, proxy) = proxy("request_head_timeout = \"1s\"\n").await;
    let mut s = TcpStream::connect(proxy.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = head("GET", &[]);
    let trickle = tokio::spawn(async move {
        // One byte every 100 ms: each read is quick, the head as a whole is not.
        for b in request.iter().take(request.len() - 1) {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s
    });
    let mut s = trickle.await.unwrap();
    let mut rest = Vec::new();
    let r = read_response(&mut s, &mut rest, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(r.status, 408);
    assert_eq!(r.json()["error"]["code"], "request_timeout");
}

/// 1,000 connections each trickling a head towards 1 MiB: each is answered 431 once past the
/// limit, and the proxy's peak memory stays under 64 MB above where it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_trickled_huge_heads_cost_bounded_memory() {
    let (_origin, proxy) = proxy("").await;
    let (before, _) = proxy.memory();
    let addr = proxy.address.trim_start_matches("http://").to_owned();
    let mut clients = Vec::new();
    for _ in 0..1000 {
        let addr = addr.clone();
        clients.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            let _ = s
                .write_all(b"GET /x HTTP/1.1\r\nHost: banyan.test\r\nX-Big: ")
                .await;
            let piece = vec![b'a'; 1024];
            let mut sent = 0;
            while sent < 1024 * 1024 {
                if s.write_all(&piece).await.is_err() {
                    break;
                }
                sent += piece.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut rest = Vec::new();
            read_response(&mut s, &mut rest, Duration::from_secs(60))
                .await
                .map(|r| r.status)
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    for c in clients {
        let status = c.await.unwrap();
        *statuses.entry(format!("{status:?}")).or_insert(0) += 1;
    }
    let (_, peak) = proxy.memory();
    let grew = peak.saturating_sub(before);
    eprintln!(
        "statuses {statuses:?}; RSS before {} MB, peak {} MB",
        before >> 20,
        peak >> 20
    );
    assert_eq!(statuses.get("Ok(431)"), Some(&1000), "{statuses:?}");
    assert!(grew < 64 << 20, "peak RSS grew by {} MB", grew >> 20);
    // Still serving.
    assert_eq!(proxy.backend_of("/").await, "a");
}
