//! Client connections between requests (proxy/src/connection.rs): kept-alive connections serve
//! request after request (on either pipeline, moving between them), idle ones are closed on
//! graceful shutdown, pipelined requests never leave a client hanging.

use std::time::Duration;

use banyan_tests::origin::Origin;
use banyan_tests::proxy::{ProxyApp, spawn_proxy, table};
use banyan_tests::raw_client::{self, NoResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: banyan.test\r\n\r\n";

async fn proxy_to_one_origin() -> (Origin, ProxyApp) {
    let a = Origin::start("a").await;
    let proxy = spawn_proxy(&table(
        &[("a", vec![a.addr])],
        "[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"a\"\n",
    ))
    .await;
    (a, proxy)
}

async fn connect(proxy: &ProxyApp) -> TcpStream {
    TcpStream::connect(proxy.address.trim_start_matches("http://"))
        .await
        .expect("connect to the proxy")
}

/// One response's status, or `None` when the connection closed before a response began.
async fn read_response(s: &mut TcpStream, rest: &mut Vec<u8>) -> Option<u16> {
    match raw_client::read_response(s, rest, Duration::from_secs(30)).await {
        Ok(r) => Some(r.status),
        Err(NoResponse::Closed) => None,
        Err(e) => panic!("{e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_serves_request_after_request() {
    let (_a, proxy) = proxy_to_one_origin().await;
    let mut s = connect(&proxy).await;
    let mut rest = Vec::new();
    for i in 0..100 {
        s.write_all(GET).await.unwrap();
        assert_eq!(
            read_response(&mut s, &mut rest).await,
            Some(200),
            "request {i}"
        );
        if i % 10 == 0 {
            // Idle a moment between requests so the connection is parked waiting for the next.
            tokio::task::yield_now().await;
        }
    }
    // Request heads split across writes: the first byte wakes the connection, the parser
    // reads the rest.
    for piece in GET.chunks(7) {
        s.write_all(piece).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(read_response(&mut s, &mut rest).await, Some(200));
}

/// A GET goes on the fast path and a POST with a chunked body on Pingora's pipeline: between them the
/// connection's socket is wrapped for Pingora and taken back as a bare socket, request after
/// request, and the client's address reaches the upstream from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_moves_between_the_pipelines_request_after_request() {
    let (_a, proxy) = proxy_to_one_origin().await;
    let mut s = connect(&proxy).await;
    let me = s.local_addr().unwrap().ip().to_string();
    const POST: &[u8] = b"POST /x HTTP/1.1\r\nHost: banyan.test\r\n\
        Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    let mut rest = Vec::new();
    for i in 0..20 {
        let (request, method) = if i % 2 == 0 {
            (GET, "GET")
        } else {
            (POST, "POST")
        };
        s.write_all(request).await.unwrap();
        let answer = raw_client::read_response(&mut s, &mut rest, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e:?}"));
        assert_eq!(answer.status, 200, "request {i}");
        let echoed: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(echoed["method"], method, "request {i}");
        assert_eq!(echoed["x_forwarded_for"], me.as_str(), "request {i}");
    }
    super::fast_path::expect_pipeline(&proxy, "fast", 10).await;
    super::fast_path::expect_pipeline(&proxy, "pingora", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_on_graceful_shutdown() {
    let (_a, mut proxy) = proxy_to_one_origin().await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut s = connect(&proxy).await;
        s.write_all(GET).await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(read_response(&mut s, &mut rest).await, Some(200));
        idle.push(s);
    }
    proxy.process.signal_term();
    for mut s in idle {
        let mut buf = [0u8; 16];
        // Keep-alive would hold them for 60 s; shutdown closes them at once.
        let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf))
            .await
            .expect("the idle connection was closed on shutdown")
            .unwrap_or(0);
        assert_eq!(n, 0, "no bytes are sent on an idle connection");
    }
    let status = proxy.process.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_never_leave_the_client_hanging() {
    let (_a, proxy) = proxy_to_one_origin().await;
    let mut s = connect(&proxy).await;
    let two = [GET, GET].concat();
    s.write_all(&two).await.unwrap();
    let mut rest = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s, &mut rest))
        .await
        .expect("the first answer arrives");
    assert_eq!(first, Some(200));
    // The second request is either answered, or the connection is closed so the client knows
    // to send it again (Pingora does not reuse a connection that sent past its request).
    let second = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s, &mut rest))
        .await
        .expect("the second answer or a close arrives");
    assert!(matches!(second, Some(200) | None), "{second:?}");
}
