//! The fast path (proxy/src/fast_path): requests without a body, or with a body in hand (a
//! small one, which the edge reads with the head, or one that came with it), forwarded without
//! Pingora's pipeline. Checked against an origin that frames its answers every way HTTP/1.1 allows and
//! misbehaves the ways real backends do, with a client that reads the bytes the proxy sends.

use std::time::Duration;

use banyan_tests::origin::Origin;
use banyan_tests::proxy::{ProxyApp, spawn_proxy, table};
use banyan_tests::raw_origin::{RawOrigin, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn one_route(addr: std::net::SocketAddr) -> String {
    table(
        &[("origin", vec![addr])],
        "[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"origin\"\n",
    )
}

async fn connect(proxy: &ProxyApp) -> TcpStream {
    TcpStream::connect(proxy.address.trim_start_matches("http://"))
        .await
        .expect("connect to the proxy")
}

/// One response as the client read it.
struct Response {
    status: u16,
    /// Lower-cased head.
    head: String,
    body: Vec<u8>,
    /// The proxy closed the connection after it.
    closed: bool,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n == name).then(|| v.trim())
        })
    }
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
        .await
        .expect("the proxy answers within 10 s")
        .unwrap_or(0);
    buf.extend_from_slice(&chunk[..n]);
    n > 0
}

/// Sends `request` and reads its response, following whatever framing the response declares
/// (`head_request`: no body whatever the headers say). Bytes past it stay in `rest`.
async fn exchange(s: &mut TcpStream, request: &str, rest: &mut Vec<u8>) -> Response {
    s.write_all(request.as_bytes()).await.unwrap();
    let head_request = request.starts_with("HEAD ");
    let end = loop {
        if let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        assert!(fill(s, rest).await, "closed before a response head");
    };
    let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
    rest.drain(..end);
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut r = Response {
        status,
        head,
        body: Vec::new(),
        closed: false,
    };
    let bodiless = head_request || status == 204 || status == 304;
    if bodiless {
    } else if r.header("transfer-encoding") == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                assert!(fill(s, rest).await, "closed inside a chunked body");
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                    .unwrap();
            rest.drain(..line_end + 2);
            while rest.len() < size + 2 {
                assert!(fill(s, rest).await, "closed inside a chunk");
            }
            if size == 0 {
                assert_eq!(&rest[..2], b"\r\n", "no trailers expected");
                rest.drain(..2);
                break;
            }
            r.body.extend_from_slice(&rest[..size]);
            rest.drain(..size + 2);
        }
    } else if let Some(length) = r.header("content-length") {
        let length: usize = length.parse().unwrap();
        while rest.len() < length {
            assert!(fill(s, rest).await, "closed inside a body");
        }
        r.body = rest.drain(..length).collect();
    } else {
        while fill(s, rest).await {}
        r.body = std::mem::take(rest);
        r.closed = true;
    }
    if r.header("connection") == Some("close") && !r.closed {
        assert!(
            !fill(s, rest).await,
            "bytes after a connection: close answer"
        );
        r.closed = true;
    }
    r
}

/// `banyan_request_pipeline_total{pipeline}` from the admin API.
async fn pipeline_count(proxy: &ProxyApp, pipeline: &str) -> u64 {
    let text = proxy.admin_text("/metrics").await;
    let series = format!("banyan_request_pipeline_total{{pipeline=\"{pipeline}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Waits (10 s at most) for `banyan_request_pipeline_total{pipeline}` to be `want`, and fails
/// with the count it had otherwise. A request is counted once its answer is out, so a client
/// holding the answer may read the metrics a moment before the count moves.
pub(crate) async fn expect_pipeline(proxy: &ProxyApp, pipeline: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let count = pipeline_count(proxy, pipeline).await;
        if count == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pipeline} pipeline: {count} requests counted, {want} expected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_framing_passes_through_whole_on_one_connection() {
    let origin = RawOrigin::start(|seen| match seen.target() {
        "/chunked" => Reply::Pieces(vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
            b"5\r\nhello\r\n".to_vec(),
            b"6\r\n world\r\n".to_vec(),
            b"0\r\n\r\n".to_vec(),
        ]),
        "/length" if seen.method() == "HEAD" => {
            Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        }
        "/length" => Reply::Pieces(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234".to_vec(),
            b"56789".to_vec(),
        ]),
        "/no-content" => Reply::raw("HTTP/1.1 204 No Content\r\n\r\n"),
        "/not-modified" => {
            Reply::raw("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"v1\"\r\n\r\n")
        }
        "/interim" => Reply::raw(
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
        "/until-close" => Reply::PiecesThenClose(vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ".to_vec(),
            b"close".to_vec(),
        ]),
        _ => Reply::raw("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    })
    .await;
    let proxy = spawn_proxy(&one_route(origin.addr)).await;
    let mut s = connect(&proxy).await;
    let mut rest = Vec::new();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n\r\n");

    let mut answers = Vec::new();
    let r = exchange(&mut s, &get("/chunked"), &mut rest).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world"[..]));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    answers.push(r);
    let head = "HEAD /length HTTP/1.1\r\nHost: shop.test\r\n\r\n";
    let r = exchange(&mut s, head, &mut rest).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some("1000"),
        "HEAD keeps the length"
    );
    answers.push(r);
    let r = exchange(&mut s, &get("/length"), &mut rest).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"0123456789"[..]));
    answers.push(r);
    let r = exchange(&mut s, &get("/no-content"), &mut rest).await;
    assert_eq!(r.status, 204);
    answers.push(r);
    let r = exchange(&mut s, &get("/not-modified"), &mut rest).await;
    assert_eq!((r.status, r.header("etag")), (304, Some("\"v1\"")));
    answers.push(r);
    let r = exchange(&mut s, &get("/interim"), &mut rest).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    answers.push(r);
    for r in &answers {
        assert_eq!(r.header("via"), Some("1.1 banyan"), "{}", r.head);
        assert_eq!(
            r.header("x-request-id").map(str::len),
            Some(32),
            "{}",
            r.head
        );
        assert!(!r.closed, "{}", r.head);
    }
    // Every answer so far was framed: one upstream connection carried them all.
    assert_eq!(origin.connections(), 1);

    // A body that ends when the upstream closes can only end the client's connection too.
    let r = exchange(&mut s, &get("/until-close"), &mut rest).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"until close"[..]));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.closed);
    assert!(rest.is_empty());

    expect_pipeline(&proxy, "fast", 7).await;
    expect_pipeline(&proxy, "pingora", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_asking_to_close_gets_its_answer_then_the_close() {
    let origin =
        RawOrigin::start(|_| Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).await;
    let proxy = spawn_proxy(&one_route(origin.addr)).await;
    let mut s = connect(&proxy).await;
    let mut rest = Vec::new();
    let r = exchange(
        &mut s,
        "GET /a HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n",
        &mut rest,
    )
    .await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.closed);
    expect_pipeline(&proxy, "fast", 1).await;
}

/// A backend may close a kept-alive connection at any moment; when it does so just as Banyan
/// reuses it, the request was not processed and goes again on a new connection. A backend that
/// closes a new connection without answering is a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_kept_alive_connections_costs_clients_nothing() {
    let origin = RawOrigin::start(|seen| match (seen.target(), seen.on_connection) {
        ("/hang-up", _) => Reply::Close,
        // Answers the first request of each connection, drops the connection on the second.
        (_, 0) => Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        _ => Reply::Close,
    })
    .await;
    let proxy = spawn_proxy(&one_route(origin.addr)).await;
    let mut s = connect(&proxy).await;
    let mut rest = Vec::new();
    for i in 0..10 {
        let r = exchange(
            &mut s,
            "GET /a HTTP/1.1\r\nHost: shop.test\r\n\r\n",
            &mut rest,
        )
        .await;
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"ok"[..]),
            "request {i}"
        );
        assert!(!r.closed);
    }
    // Request 0 opened a connection; each later one found its kept-alive connection closed by
    // the backend and went again on a new one.
    assert_eq!(origin.connections(), 10);
    assert_eq!(origin.requests(), 19);

    let r = exchange(
        &mut s,
        "GET /hang-up HTTP/1.1\r\nHost: shop.test\r\n\r\n",
        &mut rest,
    )
    .await;
    assert_eq!(r.status, 502);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"]["code"], "bad_gateway", "{body}");
    assert!(r.header("x-request-id").is_some());
    assert!(r.closed, "an error answer closes the connection");
    let metrics = proxy.admin_text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("banyan_upstream_failures_total")
                && l.contains("upstream=\"origin\"")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_upstream_answers_are_bad_gateways_not_passed_on() {
    let origin = RawOrigin::start(|seen| match seen.target() {
        "/garbage" => Reply::raw("SPDY/9 OK\r\n\r\n"),
        "/conflict" => {
            Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc")
        }
        "/bad-chunk" => Reply::PiecesThenClose(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        ]),
        "/short" => Reply::PiecesThenClose(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this".to_vec(),
        ]),
        _ => Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    })
    .await;
    let proxy = spawn_proxy(&one_route(origin.addr)).await;
    for path in ["/garbage", "/conflict", "/bad-chunk"] {
        let mut s = connect(&proxy).await;
        let mut rest = Vec::new();
        let r = exchange(
            &mut s,
            &format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n\r\n"),
            &mut rest,
        )
        .await;
        assert_eq!(r.status, 502, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"]["code"], "bad_gateway", "{path}: {body}");
    }
    // A body cut short after its head went out: the client sees the connection end early,
    // never a complete-looking answer.
    let mut s = connect(&proxy).await;
    s.write_all(b"GET /short HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    while fill(&mut s, &mut got).await {}
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("only this"), "{text}");
    // The proxy is fine afterwards.
    let mut s = connect(&proxy).await;
    let r = exchange(
        &mut s,
        "GET /fine HTTP/1.1\r\nHost: shop.test\r\n\r\n",
        &mut Vec::new(),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_stop_at_the_proxy() {
    let origin = RawOrigin::start(|_| {
        Reply::raw(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
             X-Hop: internal\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\
             Via: 1.1 backend\r\nContent-Length: 2\r\n\r\nok",
        )
    })
    .await;
    let proxy = spawn_proxy(&one_route(origin.addr)).await;
    let mut s = connect(&proxy).await;
    let r = exchange(
        &mut s,
        "GET /a HTTP/1.1\r\nHost: shop.test\r\n\r\n",
        &mut Vec::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    for gone in ["x-hop", "keep-alive", "proxy-connection"] {
        assert_eq!(r.header(gone), None, "{gone} in {}", r.head);
    }
    // The proxy's own `Connection`, as Pingora's pipeline says it, not the upstream's.
    assert_eq!(r.header("connection"), Some("keep-alive"), "{}", r.head);
    assert_eq!(r.header("x-kept"), Some("yes"));
    assert_eq!(r.header("via"), Some("1.1 backend, 1.1 banyan"));
    // The test tables turn debug headers on.
    assert_eq!(r.header("x-banyan-route"), Some("all"));
    assert_eq!(r.header("x-banyan-upstream"), Some("origin"));
}

/// What the fast path does not take goes through Pingora's pipeline with nothing lost, and
/// `fast_path = false` sends everything there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_fast_path_leaves_goes_through_pingora() {
    let origin = Origin::start("a").await;
    let routes = table(
        &[("a", vec![origin.addr])],
        "[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"a\"\n",
    );
    let proxy = spawn_proxy(&routes).await;

    let (status, body) = proxy.get("/plain?q=1").await;
    assert_eq!((status, body["path"].as_str()), (200, Some("/plain")));
    expect_pipeline(&proxy, "fast", 1).await;

    // A chunked body, an HTTP/1.0 client, an Expect: each handed over with its bytes.
    // Pipelined GETs stay on the fast path, answered in order.
    let chunked = "POST /upload HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                   c\r\ntwelve bytes\r\n0\r\n\r\n";
    let r = exchange(&mut connect(&proxy).await, chunked, &mut Vec::new()).await;
    assert_eq!(r.status, 200);
    let mut s = connect(&proxy).await;
    let two = "GET /one HTTP/1.1\r\nHost: shop.test\r\n\r\n\
               GET /two HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n";
    let mut rest = Vec::new();
    let r = exchange(&mut s, two, &mut rest).await;
    assert_eq!(r.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["path"], "/one");
    let r = exchange(&mut s, "", &mut rest).await;
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((r.status, body["path"].as_str()), (200, Some("/two")));
    expect_pipeline(&proxy, "fast", 3).await;
    let mut s = connect(&proxy).await;
    let r = exchange(
        &mut s,
        "GET /old HTTP/1.0\r\nHost: shop.test\r\n\r\n",
        &mut Vec::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    let expect_100 = "GET /x HTTP/1.1\r\nHost: shop.test\r\nExpect: 100-continue\r\n\r\n";
    let r = exchange(&mut connect(&proxy).await, expect_100, &mut Vec::new()).await;
    assert_eq!(r.status, 200);
    expect_pipeline(&proxy, "fast", 3).await;
    let handed_over = 3;
    expect_pipeline(&proxy, "pingora", handed_over).await;

    // Turned off by a reload: plain GETs go through Pingora too.
    let version = proxy.routes().await["version"].as_str().unwrap().to_owned();
    proxy.write_in_place(&routes.replacen("[proxy]\n", "[proxy]\nfast_path = false\n", 1));
    proxy
        .wait_new_version(&version, Duration::from_secs(10))
        .await
        .expect("the edit applies");
    let (status, _) = proxy.get("/plain").await;
    assert_eq!(status, 200);
    expect_pipeline(&proxy, "fast", 3).await;
    expect_pipeline(&proxy, "pingora", handed_over + 1).await;
}

/// A shadowed route on the fast path: the comparison sees the primary's body decoded from its
/// chunks, as Pingora's path gives it, so a chunked primary and a candidate that sends a length
/// agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadowed_reads_are_compared_on_the_fast_path() {
    let json = r#"{"id":7,"name":"Copper Kettle","tags":["kitchen","copper"]}"#;
    let primary = RawOrigin::start(move |_| {
        let (a, b) = json.split_at(20);
        Reply::Pieces(vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
            format!("{:x}\r\n{a}\r\n", a.len()).into_bytes(),
            format!("{:x}\r\n{b}\r\n0\r\n\r\n", b.len()).into_bytes(),
        ])
    })
    .await;
    let candidate = RawOrigin::start(move |_| {
        Reply::Pieces(vec![
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                json.len()
            )
            .into_bytes(),
        ])
    })
    .await;
    let proxy = spawn_proxy(&table(
        &[
            ("primary", vec![primary.addr]),
            ("candidate", vec![candidate.addr]),
        ],
        "[[route]]\nid = \"reads\"\npath = \"/\"\nupstream = \"primary\"\n\n\
         [route.shadow]\nto = \"candidate\"\npercent = 100\n",
    ))
    .await;
    for i in 0..10 {
        let r = proxy
            .client
            .get(proxy.url(&format!("/p/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), json);
    }
    let t = proxy
        .wait_shadow("reads", |t| t.get("compared").copied().unwrap_or(0) == 10)
        .await;
    assert_eq!(t.get("matched").copied(), Some(10), "{t:?}");
    assert_eq!(candidate.requests(), 10);
    expect_pipeline(&proxy, "fast", 10).await;
}

/// A write whose body came with its head is forwarded by the fast path, body and all; one whose
/// body is still coming when the head is read (here a 256 KiB body, more than the first read
/// takes) streams through Pingora's pipeline, and the connection carries on on the fast path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_hand_takes_the_fast_path_and_a_body_still_coming_streams() {
    let origin = RawOrigin::start(|seen| {
        let echo = format!(
            "{} {} {}",
            seen.method(),
            seen.body.len(),
            String::from_utf8_lossy(&seen.body[..seen.body.len().min(16)])
        );
        Reply::raw(&format!(
            "HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n{echo}",
            echo.len()
        ))
    })
    .await;
    let proxy = spawn_proxy(&one_route(origin.addr)).await;
    let mut s = connect(&proxy).await;
    let mut rest = Vec::new();
    let small =
        "POST /cart HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 13\r\n\r\n{\"sku\":\"K1\"}\n";
    let r = exchange(&mut s, small, &mut rest).await;
    assert_eq!(
        (r.status, String::from_utf8_lossy(&r.body).as_ref()),
        (201, "POST 13 {\"sku\":\"K1\"}\n")
    );
    expect_pipeline(&proxy, "fast", 1).await;

    let big = format!(
        "PUT /import HTTP/1.1\r\nHost: shop.test\r\nContent-Length: {}\r\n\r\n{}",
        256 * 1024,
        "y".repeat(256 * 1024)
    );
    let r = exchange(&mut s, &big, &mut rest).await;
    assert_eq!(
        (r.status, String::from_utf8_lossy(&r.body).as_ref()),
        (201, format!("PUT {} yyyyyyyyyyyyyyyy", 256 * 1024).as_str())
    );
    assert!(!r.closed);
    expect_pipeline(&proxy, "pingora", 1).await;

    let after = "GET /after HTTP/1.1\r\nHost: shop.test\r\n\r\n";
    let r = exchange(&mut s, after, &mut rest).await;
    assert_eq!(
        (r.status, String::from_utf8_lossy(&r.body).as_ref()),
        (201, "GET 0 ")
    );
    expect_pipeline(&proxy, "fast", 2).await;
    assert_eq!(origin.requests(), 3);
}

/// Clients that write a request's head and its small body separately (Java's
/// `HttpURLConnection` and `HttpClient` both do) get the same answer on both pipelines: the
/// edge reads the body whole with the head, so the fast path takes the write, and a request
/// pipelined right behind the body is the next one. With `fast_path` off, Pingora's pipeline
/// gets the same whole request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_written_after_its_head_is_read_whole_at_the_edge() {
    for fast_path in [true, false] {
        let origin = RawOrigin::start(|seen| {
            let echo = format!("{} {} {}", seen.method(), seen.target(), seen.body.len());
            Reply::raw(&format!(
                "HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n{echo}",
                echo.len()
            ))
        })
        .await;
        let routes = one_route(origin.addr)
            .replace("[proxy]\n", &format!("[proxy]\nfast_path = {fast_path}\n"));
        let proxy = spawn_proxy(&routes).await;
        let mut s = connect(&proxy).await;
        let mut rest = Vec::new();
        let body = format!("{{\"note\":\"{}\"}}", "j".repeat(1000));
        for round in 0..2 {
            let head = format!(
                "POST /orders/{round} HTTP/1.1\r\nHost: shop.test\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            // Pacing the client so the head arrives on its own, as a second write does.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let then = format!("{body}GET /next/{round} HTTP/1.1\r\nHost: shop.test\r\n\r\n");
            let r = exchange(&mut s, &then, &mut rest).await;
            assert_eq!(
                (r.status, String::from_utf8_lossy(&r.body).as_ref()),
                (201, format!("POST /orders/{round} {}", body.len()).as_str()),
                "fast_path = {fast_path}"
            );
            let r = exchange(&mut s, "", &mut rest).await;
            assert_eq!(
                String::from_utf8_lossy(&r.body),
                format!("GET /next/{round} 0")
            );
            assert!(!r.closed);
        }
        let pipeline = if fast_path { "fast" } else { "pingora" };
        expect_pipeline(&proxy, pipeline, 4).await;
        assert_eq!(origin.requests(), 4);
    }
}

/// A small body that does not arrive within `request_head_timeout` of the request's first byte
/// is answered 408 by the edge, on both pipelines, and nothing reaches the origin; the body of a
/// client that sent `Expect: 100-continue` is not waited for at the edge (the client waits for
/// an answer before sending it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_that_never_comes_gets_408_unless_the_client_expects_100() {
    for fast_path in [true, false] {
        let origin = RawOrigin::start(|seen| {
            let echo = format!("{} {}", seen.method(), seen.body.len());
            Reply::raw(&format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{echo}",
                echo.len()
            ))
        })
        .await;
        let routes = one_route(origin.addr).replace(
            "[proxy]\n",
            &format!("[proxy]\nfast_path = {fast_path}\nrequest_head_timeout = \"1s\"\n"),
        );
        let proxy = spawn_proxy(&routes).await;
        let mut s = connect(&proxy).await;
        let mut rest = Vec::new();
        let partial =
            "PUT /cart HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 100\r\n\r\n{\"sku\"";
        let r = exchange(&mut s, partial, &mut rest).await;
        assert_eq!(r.status, 408, "fast_path = {fast_path}");
        assert!(r.closed);
        assert!(
            String::from_utf8_lossy(&r.body).contains("request_timeout"),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(origin.requests(), 0);

        // An expecting client's body comes when it is asked for or, with no interim answer (the
        // origin here sends none), after the client's own wait: curl waits 1 s. Longer than
        // `request_head_timeout` here, and still answered: the edge never waited for it.
        let mut s = connect(&proxy).await;
        let expecting = "PUT /cart HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 4\r\n\
                         Expect: 100-continue\r\n\r\n";
        s.write_all(expecting.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let r = exchange(&mut s, "{\"\"}", &mut Vec::new()).await;
        assert_eq!(
            (r.status, String::from_utf8_lossy(&r.body).as_ref()),
            (200, "PUT 4"),
            "fast_path = {fast_path}"
        );
        assert_eq!(origin.requests(), 1);
    }
}

/// A backend that reads a write and then drops the connection may have applied it: unlike a
/// read, the write is not sent again, on either pipeline, whether the connection was a kept-alive
/// one (the fast path's own retry of a reused connection is for idempotent requests only) or a
/// new one; the client gets a 502 and decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lost_on_a_reused_connection_is_not_sent_twice() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for fast_path in [true, false] {
        // The first request is answered; every later one is read and its connection dropped.
        let seen = AtomicUsize::new(0);
        let origin = RawOrigin::start(move |_| match seen.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            _ => Reply::Close,
        })
        .await;
        let routes = one_route(origin.addr)
            .replace("[proxy]\n", &format!("[proxy]\nfast_path = {fast_path}\n"));
        let proxy = spawn_proxy(&routes).await;
        let write = "POST /orders HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 2\r\n\r\n{}";
        let mut s = connect(&proxy).await;
        let mut rest = Vec::new();
        let r = exchange(&mut s, write, &mut rest).await;
        assert_eq!(r.status, 200, "fast_path = {fast_path}");
        let r = exchange(&mut s, write, &mut rest).await;
        assert_eq!(r.status, 502, "fast_path = {fast_path}");
        assert_eq!(
            origin.requests(),
            2,
            "fast_path = {fast_path}: the second write reached the origin once"
        );
        let pipeline = if fast_path { "fast" } else { "pingora" };
        expect_pipeline(&proxy, pipeline, 2).await;
    }
}
