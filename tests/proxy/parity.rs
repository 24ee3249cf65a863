//! Parity: every edge rule gives the same result on both pipelines.
//!
//! Two proxies run the same route table, one with `fast_path = true` and one with
//! `fast_path = false` (everything through Pingora's pipeline), in front of the same origins.
//! Each case sends the same raw bytes to both and requires the same answers (status, headers
//! with `Date` aside, body), the same requests at the origins (byte for byte, a generated
//! request id aside), the same metric increments and the same access-log fields. Cases cover
//! routing, normalization, splits, header conditions, the edge's headers (spoofed ones
//! included), the requests a strict proxy refuses, error answers and retries; most state what
//! the right answer is as well, so both pipelines being wrong the same way fails too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banyan_tests::proxy::{ProxyApp, spawn_proxy, table};
use banyan_tests::raw_origin::{RawOrigin, Reply, Seen};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The requests an origin received, as heads (request line and headers).
type Log = Arc<Mutex<Vec<String>>>;

fn answer(body: &str, extra: &str) -> Reply {
    Reply::raw(&format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    ))
}

/// An origin that records every request and answers by its target.
async fn origin(name: &'static str, log: Log) -> RawOrigin {
    RawOrigin::start(move |seen: &Seen| {
        log.lock().unwrap().push(seen.head.clone());
        match seen.target() {
            "/api/products/response-hop" => answer(
                "hop",
                "Connection: X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n\
                 X-Request-Id: made-upstream\r\nVia: 1.0 upstream\r\nProxy-Authenticate: Basic\r\n\
                 X-Banyan-Route: forged\r\n",
            ),
            "/api/products/response-via-obs" => Reply::Pieces(vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.0 caf\xc3\xa9\r\n\r\nok".to_vec(),
            ]),
            "/api/slow" => Reply::Pieces(vec![]),
            "/api/fallback-status" if name == "t" => {
                Reply::raw("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown")
            }
            "/api/broken" => Reply::raw("HTTP/1.1 abc\r\n\r\n"),
            "/api/closes" => Reply::Close,
            target => {
                let mut body = format!("{name} {} {target}", seen.method());
                if !seen.body.is_empty() {
                    body = format!("{body} {}", String::from_utf8_lossy(&seen.body));
                }
                if seen.method() == "HEAD" {
                    Reply::raw(&format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    ))
                } else {
                    answer(&body, "")
                }
            }
        }
    })
    .await
}

/// A loopback address nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

struct Rig {
    fast: ProxyApp,
    pingora: ProxyApp,
    logs: Vec<(&'static str, Log)>,
    _origins: Vec<RawOrigin>,
}

async fn rig() -> Rig {
    let (a_log, b_log, t_log): (Log, Log, Log) = Default::default();
    let a = origin("a", a_log.clone()).await;
    let b = origin("b", b_log.clone()).await;
    let t = origin("t", t_log.clone()).await;
    let routes = format!(
        r#"
[upstreams.dead]
addrs = ["{dead}"]
connect_timeout = "500ms"

[upstreams.retry]
addrs = ["{dead2}", "{a}"]

[upstreams.retry_post]
addrs = ["{dead3}", "{a}"]

[upstreams.retry_trace]
addrs = ["{dead4}", "{a}"]

[upstreams.dead_fb]
addrs = ["{dead5}"]

[[route]]
id = "fallback-connect"
path = "/api/fallback-connect"
upstream = "dead_fb"
fallback = "a"

[[route]]
id = "fallback-status"
path = "/api/fallback-status"
upstream = "slow"
fallback = "a"

[upstreams.slow]
addrs = ["{t}"]
read_timeout = "300ms"

[[route]]
id = "products"
path = "/api/products"
upstream = "a"

[[route]]
id = "products-beta"
path = "/api/products"
methods = ["GET", "HEAD"]
headers = {{ x-beta = "yes" }}
upstream = "b"

[[route]]
id = "split"
path = "/api/split"
upstream = "a"
split = {{ to = "b", percent = 50, sticky = "cookie:uid" }}

[[route]]
id = "admin"
path = "/api/admin"
upstream = "a"

[[route]]
id = "dead"
path = "/api/dead"
upstream = "dead"

[[route]]
id = "retry"
path = "/api/retry"
upstream = "retry"

[[route]]
id = "retry-post"
path = "/api/retry-post"
upstream = "retry_post"

[[route]]
id = "retry-trace"
path = "/api/retry-trace"
upstream = "retry_trace"

[[route]]
id = "slow"
path = "/api/slow"
upstream = "slow"

[[route]]
id = "broken"
path = "/api/broken"
upstream = "slow"

[[route]]
id = "closes"
path = "/api/closes"
upstream = "slow"
"#,
        dead = closed_port(),
        dead2 = closed_port(),
        dead3 = closed_port(),
        dead4 = closed_port(),
        dead5 = closed_port(),
        a = a.addr,
        t = t.addr,
    );
    let base = table(&[("a", vec![a.addr]), ("b", vec![b.addr])], "");
    let on = base.replace("[proxy]\n", "[proxy]\nfast_path = true\n");
    let off = base.replace("[proxy]\n", "[proxy]\nfast_path = false\n");
    let (on, off) = (format!("{on}{routes}"), format!("{off}{routes}"));
    let (fast, pingora) = tokio::join!(spawn_proxy(&on), spawn_proxy(&off));
    Rig {
        fast,
        pingora,
        logs: vec![("a", a_log), ("b", b_log), ("t", t_log)],
        _origins: vec![a, b, t],
    }
}

/// One answer as the client read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    /// Lower-cased names, sorted, `Date` aside.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Marks where a case's bytes are sent in a second write, a moment after the first.
const PAUSE: &[u8] = b"<pause>";

/// The parts of `request` between [`PAUSE`] marks.
fn split_at_pauses(request: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = request;
    while let Some(at) = rest.windows(PAUSE.len()).position(|w| w == PAUSE) {
        parts.push(&rest[..at]);
        rest = &rest[at + PAUSE.len()..];
    }
    parts.push(rest);
    parts
}

/// Sends `request` on a new connection (in parts, where it has [`PAUSE`] marks) and reads every
/// answer until the connection closes or `expect` answers have come; then, when the last answer
/// closes the connection, whatever else the proxy sent before closing (nothing, from a correct
/// proxy).
async fn exchange(
    proxy: &ProxyApp,
    request: &[u8],
    head: bool,
    expect: usize,
) -> (Vec<Answer>, String) {
    let mut s = TcpStream::connect(proxy.address.trim_start_matches("http://"))
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    for (i, part) in split_at_pauses(request).into_iter().enumerate() {
        if i > 0 {
            // Pacing the client, so the next part arrives apart (as a second write does).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s.write_all(part).await.unwrap();
    }
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut closed = false;
    while answers.len() < expect {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = text.split("\r\n");
            let status = lines
                .next()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            let mut headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
                .filter(|(n, _)| n != "date")
                .collect();
            headers.sort();
            let length = if head {
                0
            } else {
                headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map_or(0, |(_, v)| v.parse().unwrap())
            };
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                buf.drain(..end + 4 + length);
                answers.push(Answer {
                    status,
                    headers,
                    body,
                });
                continue;
            }
        }
        if closed {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => closed = true,
            Err(_) => panic!(
                "no answer within 10 s to {:?}",
                String::from_utf8_lossy(request)
            ),
        }
    }
    let closing = answers
        .last()
        .is_some_and(|a| a.header("connection") == Some("close"));
    while closing && !closed {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => closed = true,
        }
    }
    (answers, String::from_utf8_lossy(&buf).into_owned())
}

/// The counters a request moves, by series, the pipeline label aside.
async fn counters(proxy: &ProxyApp) -> BTreeMap<String, f64> {
    proxy
        .admin_text("/metrics")
        .await
        .lines()
        .filter(|l| {
            !l.starts_with('#')
                && (l.starts_with("banyan_requests_total")
                    || l.starts_with("banyan_upstream_failures_total")
                    || l.starts_with("banyan_request_duration_seconds_count")
                    || l.starts_with("banyan_backend_up")
                    || l.starts_with("banyan_fallbacks_total")
                    || l.starts_with("banyan_retries_total")
                    || l.starts_with("banyan_breaker_state")
                    || l.starts_with("banyan_shadow_requests_total"))
        })
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(k, d)| *d != 0.0 || k.starts_with("banyan_backend_up"))
        .collect()
}

/// The access-log fields of the request with this id (waits for the line to be written; a
/// request that never gets one has the single field `missing`, and fails its case).
/// Only lines past byte `from` of the log count (earlier cases used the same ids).
async fn access_fields(
    proxy: &ProxyApp,
    request_id: &str,
    from: usize,
    nth: usize,
) -> BTreeMap<String, String> {
    let needle = format!("request_id=\"{request_id}\"");
    for _ in 0..300 {
        let log = proxy.process.log();
        if let Some(line) = log[from..]
            .lines()
            .filter(|l| l.contains(" request method=") && l.split(' ').any(|w| w == needle))
            .nth(nth)
        {
            return line
                .split(' ')
                .filter_map(|w| w.split_once('='))
                .filter(|(k, _)| *k != "elapsed_ms" && *k != "request_id")
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    BTreeMap::from([("missing".to_owned(), needle)])
}

/// What one pipeline did with a case.
#[derive(Debug, PartialEq)]
struct Observed {
    answers: Vec<Answer>,
    /// Bytes after the last answer, before the proxy closed the connection.
    trailing: String,
    /// Per origin, the heads it received (generated request ids replaced).
    at_origin: Vec<(&'static str, Vec<String>)>,
    counters: Vec<(String, f64)>,
    access: Vec<BTreeMap<String, String>>,
}

fn generated_ids_replaced(head: &str, answers: &[Answer]) -> String {
    let mut out = head.to_owned();
    for a in answers {
        if let Some(id) = a.header("x-request-id")
            && !id.starts_with("parity-")
        {
            out = out.replace(id, "<generated>");
        }
    }
    out
}

fn answers_with_generated_ids_replaced(answers: &[Answer]) -> Vec<Answer> {
    answers
        .iter()
        .map(|a| {
            let mut a = a.clone();
            for (n, v) in &mut a.headers {
                if n == "x-request-id" && !v.starts_with("parity-") {
                    *v = "<generated>".into();
                }
            }
            a
        })
        .collect()
}

async fn run(rig: &Rig, proxy: &ProxyApp, request: &[u8], expect: usize) -> Observed {
    let head = request.starts_with(b"HEAD ");
    for (_, log) in &rig.logs {
        log.lock().unwrap().clear();
    }
    let before = counters(proxy).await;
    let from = proxy.process.log().len();
    let (answers, trailing) = exchange(proxy, request, head, expect).await;
    let mut access = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        if let Some(id) = a.header("x-request-id") {
            let earlier = answers[..i]
                .iter()
                .filter(|b| b.header("x-request-id") == Some(id))
                .count();
            access.push(access_fields(proxy, id, from, earlier).await);
        }
    }
    let after = counters(proxy).await;
    let at_origin = rig
        .logs
        .iter()
        .map(|(name, log)| {
            let heads = log.lock().unwrap().clone();
            (
                *name,
                heads
                    .iter()
                    .map(|h| generated_ids_replaced(h, &answers))
                    .collect(),
            )
        })
        .collect();
    Observed {
        answers: answers_with_generated_ids_replaced(&answers),
        trailing,
        at_origin,
        counters: delta(&before, &after),
        access,
    }
}

/// A case: the bytes sent, how many answers are due, and what both pipelines must give.
struct Case {
    name: &'static str,
    request: Vec<u8>,
    answers: usize,
    check: fn(&Observed),
}

fn req(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn origin_heads<'a>(seen: &'a Observed, origin: &str) -> &'a [String] {
    &seen.at_origin.iter().find(|(n, _)| *n == origin).unwrap().1
}

fn only_head<'a>(seen: &'a Observed, origin: &str) -> &'a str {
    let heads = origin_heads(seen, origin);
    assert_eq!(heads.len(), 1, "{origin} received {heads:?}");
    &heads[0]
}

fn status(seen: &Observed) -> u16 {
    seen.answers[0].status
}

fn refused_400(seen: &Observed) {
    assert_eq!(status(seen), 400, "{seen:#?}");
    assert_eq!(
        seen.answers[0].header("content-type"),
        Some("application/json")
    );
    for (name, heads) in &seen.at_origin {
        assert!(heads.is_empty(), "{name} received {heads:?}");
    }
}

fn cases() -> Vec<Case> {
    let get = |target: &str, extra: &str| {
        req(&format!(
            "GET {target} HTTP/1.1\r\nHost: shop.example\r\nX-Request-Id: parity-1\r\n{extra}\r\n"
        ))
    };
    vec![
        Case {
            name: "a plain GET is routed and answered",
            request: get("/api/products?page=2", ""),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 200);
                assert!(only_head(s, "a").starts_with("GET /api/products?page=2 HTTP/1.1\r\n"));
                assert_eq!(s.answers[0].header("x-banyan-route"), Some("products"));
            },
        },
        Case {
            name: "a path is normalized before it is matched and forwarded",
            request: get("/api//products/./x/../%70ics?q=a%20b", ""),
            answers: 1,
            check: |s| {
                assert!(only_head(s, "a").starts_with("GET /api/products/pics?q=a%20b HTTP/1.1"));
            },
        },
        Case {
            name: "raw UTF-8 in a path that needs normalizing passes as sent",
            request: [
                &b"GET /api/products/caf\xc3\xa9/%41 HTTP/1.1\r\nHost: shop.example\r\n"[..],
                b"X-Request-Id: parity-1\r\n\r\n",
            ]
            .concat(),
            answers: 1,
            check: |s| {
                let head = only_head(s, "a");
                assert!(head.starts_with("GET /api/products/caf\u{e9}/A HTTP/1.1"), "{head}");
            },
        },
        Case {
            name: "a malformed escape is a 400",
            request: get("/api/products/%zz", ""),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "no route is a 404 in the error format",
            request: get("/elsewhere", ""),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 404);
                assert_eq!(s.access[0].get("error").map(String::as_str), Some("no_route"));
            },
        },
        Case {
            name: "HEAD is routed and answered without a body",
            request: req(
                "HEAD /api/products HTTP/1.1\r\nHost: shop.example\r\nX-Request-Id: parity-1\r\n\r\n",
            ),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 200);
                assert!(s.answers[0].body.is_empty());
            },
        },
        Case {
            name: "HEAD with no route is a 404 without a body",
            request: req("HEAD /elsewhere HTTP/1.1\r\nHost: a\r\nX-Request-Id: parity-1\r\n\r\n"),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 404);
                assert!(s.answers[0].body.is_empty());
            },
        },
        Case {
            name: "HEAD to a dead backend is a 502 without a body",
            request: req("HEAD /api/closes HTTP/1.1\r\nHost: a\r\nX-Request-Id: parity-1\r\n\r\n"),
            answers: 1,
            check: |s| assert_eq!(status(s), 502),
        },
        Case {
            name: "a header condition picks its route",
            request: get("/api/products", "X-Beta: yes\r\n"),
            answers: 1,
            check: |s| {
                assert_eq!(s.answers[0].header("x-banyan-route"), Some("products-beta"));
                assert_eq!(origin_heads(s, "b").len(), 1);
            },
        },
        Case {
            name: "a sticky split sends a cookie to one side",
            request: get("/api/split", "Cookie: uid=alice\r\n"),
            answers: 1,
            check: |s| assert_eq!(status(s), 200),
        },
        Case {
            name: "a sticky split sends another cookie to its side",
            request: get("/api/split", "Cookie: theme=dark; uid=bob\r\n"),
            answers: 1,
            check: |s| assert_eq!(status(s), 200),
        },
        Case {
            name: "what only the edge may say is replaced, never passed through",
            request: get(
                "/api/products",
                "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\
                 X-Banyan-Shadow: candidate\r\n",
            ),
            answers: 1,
            check: |s| {
                let head = only_head(s, "a").to_ascii_lowercase();
                assert!(!head.contains("6.6.6.6") && !head.contains("evil"), "{head}");
                assert!(!head.contains("x-banyan-shadow"), "{head}");
                assert!(head.contains("x-forwarded-for: 127.0.0.1\r\n"), "{head}");
                assert!(head.contains("x-forwarded-host: shop.example\r\n"), "{head}");
                assert!(head.contains("x-forwarded-proto: http\r\n"), "{head}");
            },
        },
        Case {
            name: "a plain client request id is kept",
            request: get("/api/products", ""),
            answers: 1,
            check: |s| {
                assert_eq!(s.answers[0].header("x-request-id"), Some("parity-1"));
                assert!(only_head(s, "a").contains("x-request-id: parity-1\r\n"));
            },
        },
        Case {
            name: "a request id that is not plain is replaced by a generated one",
            request: req(
                "GET /api/products HTTP/1.1\r\nHost: shop.example\r\nX-Request-Id: a;b\r\n\r\n",
            ),
            answers: 1,
            check: |s| {
                assert_eq!(s.answers[0].header("x-request-id"), Some("<generated>"));
                assert!(!only_head(s, "a").contains("a;b"));
            },
        },
        Case {
            name: "a client's Via is kept and Banyan's added",
            request: get("/api/products", "Via: 1.0 cdn\r\n"),
            answers: 1,
            check: |s| assert!(only_head(s, "a").contains("via: 1.0 cdn, 1.1 banyan\r\n")),
        },
        Case {
            name: "a client's Via with obs-text is kept too",
            request: [
                &b"GET /api/products HTTP/1.1\r\nHost: shop.example\r\nX-Request-Id: parity-1\r\n"[..],
                b"Via: 1.0 caf\xc3\xa9\r\n\r\n",
            ]
            .concat(),
            answers: 1,
            check: |s| assert!(only_head(s, "a").contains("via: 1.0 caf\u{e9}, 1.1 banyan\r\n")),
        },
        Case {
            name: "hop-by-hop request headers never reach the origin",
            request: get(
                "/api/products",
                "Connection: keep-alive, X-Custom\r\nX-Custom: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n\
                 Trailer: X-Sum\r\nProxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\n\
                 HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nUpgrade: h2c\r\nAccept: */*\r\n",
            ),
            answers: 1,
            check: |s| {
                let head = only_head(s, "a").to_ascii_lowercase();
                for gone in [
                    "x-custom", "keep-alive", "te:", "trailer", "proxy-", "http2-settings",
                    "upgrade", "connection",
                ] {
                    assert!(!head.contains(gone), "{gone} in {head}");
                }
                assert!(head.contains("accept: */*"), "{head}");
            },
        },
        Case {
            name: "hop-by-hop and edge-only response headers never reach the client",
            request: get("/api/products/response-hop", ""),
            answers: 1,
            check: |s| {
                let a = &s.answers[0];
                for gone in ["x-hop", "keep-alive", "proxy-authenticate"] {
                    assert_eq!(a.header(gone), None, "{gone}");
                }
                assert_eq!(a.header("x-request-id"), Some("parity-1"));
                assert_eq!(a.header("via"), Some("1.0 upstream, 1.1 banyan"));
                assert_eq!(a.header("x-banyan-route"), Some("products"));
            },
        },
        Case {
            name: "an upstream's Via with obs-text is appended to",
            request: get("/api/products/response-via-obs", ""),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 200);
                assert!(s.answers[0].header("via").unwrap().ends_with(", 1.1 banyan"));
            },
        },
        Case {
            name: "a Host with userinfo is a 400",
            request: req("GET /api/admin HTTP/1.1\r\nHost: user@evil\r\n\r\n"),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "a Host with a space is a 400",
            request: req("GET /api/admin HTTP/1.1\r\nHost: a b\r\n\r\n"),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "an empty Host is a 400",
            request: req("GET /api/admin HTTP/1.1\r\nHost:\r\n\r\n"),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "an unclosed IP literal Host is a 400",
            request: req("GET /api/admin HTTP/1.1\r\nHost: [::1\r\n\r\n"),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "an HTTP/1.1 request without Host is a 400",
            request: req("GET /api/admin HTTP/1.1\r\nAccept: */*\r\n\r\n"),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "two Host headers are a 400",
            request: req("GET /api/admin HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "a relative target is a 400, not a request for /",
            request: req("GET x/api/admin HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "an @ target is a 400",
            request: req("GET @evil/api/admin HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "an encoded-slash target is a 400",
            request: req("GET %2fapi/admin HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "two spaces before the target are a 400",
            request: req("GET  /api/admin HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "an absolute-form target is routed by its path, for its authority",
            request: req(
                "GET http://shop.example:8080/api/products?x=1 HTTP/1.1\r\nHost: other\r\n\
                 X-Request-Id: parity-1\r\n\r\n",
            ),
            answers: 1,
            check: |s| {
                let head = only_head(s, "a").to_ascii_lowercase();
                assert!(head.starts_with("get /api/products?x=1 http/1.1\r\n"), "{head}");
                assert!(head.contains("host: shop.example:8080\r\n"), "{head}");
                assert!(!head.contains("other"), "{head}");
            },
        },
        Case {
            name: "* is only for OPTIONS",
            request: req("GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "OPTIONS * has no route",
            request: req("OPTIONS * HTTP/1.1\r\nHost: a\r\nX-Request-Id: parity-1\r\n\r\n"),
            answers: 1,
            check: |s| assert_eq!(status(s), 404),
        },
        Case {
            name: "a Content-Length list is a 400",
            request: req("POST /api/products HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\nx"),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "two equal Content-Length lines are a 400",
            request: req(
                "POST /api/products HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            ),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "Content-Length beside Transfer-Encoding is a 400",
            request: req(
                "POST /api/products HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\
                 Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            answers: 1,
            check: refused_400,
        },
        Case {
            name: "a POST with a body is forwarded with it",
            request: req(
                "POST /api/products HTTP/1.1\r\nHost: a\r\nX-Request-Id: parity-1\r\n\
                 Content-Length: 5\r\n\r\nhello",
            ),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 200);
                assert!(only_head(s, "a").contains("Content-Length: 5\r\n"));
            },
        },
        Case {
            name: "a PUT's body reaches the origin whole",
            request: req(
                // (`X-Request-Id` last: Pingora's header map removes a field by moving the last
                // one into its place, so a dropped field before two others swaps their order
                // there, and the origins' heads are compared byte for byte. The order of
                // different fields carries no meaning, RFC 9110 §5.3.)
                "PUT /api/products/7 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
                 Content-Length: 11\r\nX-Request-Id: parity-1\r\n\r\n{\"stock\":3}",
            ),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 200);
                assert_eq!(s.answers[0].body, "a PUT /api/products/7 {\"stock\":3}");
                assert!(only_head(s, "a").contains("Content-Length: 11\r\n"));
            },
        },
        Case {
            name: "a DELETE with an empty body, then a PATCH and a GET pipelined behind it",
            request: [
                req("DELETE /api/products/7 HTTP/1.1\r\nHost: a\r\nX-Request-Id: parity-1\r\nContent-Length: 0\r\n\r\n"),
                req("PATCH /api/products/8 HTTP/1.1\r\nHost: a\r\nX-Request-Id: parity-2\r\nContent-Length: 4\r\n\r\nGET "),
                get("/api/products/9", ""),
            ]
            .concat(),
            answers: 3,
            check: |s| {
                assert_eq!(s.answers.len(), 3, "{s:#?}");
                assert_eq!(s.answers[0].body, "a DELETE /api/products/7");
                // The body's bytes look like the start of a request: they are still its body.
                assert_eq!(s.answers[1].body, "a PATCH /api/products/8 GET ");
                assert_eq!(s.answers[2].body, "a GET /api/products/9");
            },
        },
        Case {
            name: "an OPTIONS request is forwarded",
            request: req("OPTIONS /api/products HTTP/1.1\r\nHost: a\r\nX-Request-Id: parity-1\r\n\r\n"),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 200);
                assert_eq!(s.answers[0].body, "a OPTIONS /api/products");
            },
        },
        Case {
            name: "a read whose side refuses the connection is served by the fallback",
            request: get("/api/fallback-connect", ""),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 200, "{s:#?}");
                assert_eq!(s.answers[0].body, "a GET /api/fallback-connect");
                assert_eq!(s.answers[0].header("x-banyan-fallback"), Some("connect"));
                assert_eq!(s.answers[0].header("x-banyan-upstream"), Some("a"));
                assert_eq!(s.access[0].get("upstream").map(String::as_str), Some("a"));
                assert!(
                    s.counters.iter().any(|(k, v)| k.starts_with("banyan_fallbacks_total")
                        && k.contains("reason=\"connect\"")
                        && *v == 1.0),
                    "{:?}",
                    s.counters
                );
            },
        },
        Case {
            name: "a write does not fall back without fallback_writes",
            request: req(
                "POST /api/fallback-connect HTTP/1.1\r\nHost: shop.example\r\nX-Request-Id: parity-1\r\nContent-Length: 2\r\n\r\n{}",
            ),
            answers: 1,
            check: |s| {
                // The backend is out of rotation since the case above.
                assert_eq!(status(s), 503, "{s:#?}");
                assert_eq!(s.answers[0].header("x-banyan-fallback"), None);
                assert!(origin_heads(s, "a").is_empty());
            },
        },
        Case {
            name: "a read whose side answers a failing status is served by the fallback",
            request: get("/api/fallback-status", ""),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 200, "{s:#?}");
                assert_eq!(s.answers[0].body, "a GET /api/fallback-status");
                assert_eq!(s.answers[0].header("x-banyan-fallback"), Some("status"));
                assert_eq!(origin_heads(s, "t").len(), 1);
                assert_eq!(origin_heads(s, "a").len(), 1);
                // A fallback is not a retry: the failing side's budget is not drawn on.
                assert!(
                    !s.counters
                        .iter()
                        .any(|(k, _)| k.starts_with("banyan_retries_total")),
                    "{:?}",
                    s.counters
                );
            },
        },
        Case {
            name: "a HEAD whose side answers a failing status is served by the fallback",
            request: req(
                "HEAD /api/fallback-status HTTP/1.1\r\nHost: shop.example\r\nX-Request-Id: parity-1\r\n\r\n",
            ),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 200, "{s:#?}");
                assert_eq!(s.answers[0].header("x-banyan-fallback"), Some("status"));
            },
        },
        Case {
            name: "a refused connection is a 502",
            request: get("/api/dead", ""),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 502);
                assert_eq!(s.access[0].get("error").map(String::as_str), Some("connect"));
            },
        },
        Case {
            name: "then the backend is out of rotation: 503",
            request: get("/api/dead", ""),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 503);
                assert_eq!(s.access[0].get("error").map(String::as_str), Some("no_backend"));
            },
        },
        Case {
            name: "an upstream slower than read_timeout is a 504",
            request: get("/api/slow", ""),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 504);
                assert_eq!(
                    s.access[0].get("error").map(String::as_str),
                    Some("upstream_timeout")
                );
            },
        },
        Case {
            name: "a malformed upstream answer is a 502",
            request: get("/api/broken", ""),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 502);
                assert_eq!(s.access[0].get("error").map(String::as_str), Some("bad_upstream"));
            },
        },
        Case {
            name: "an upstream that closes without answering is a 502",
            request: get("/api/closes", ""),
            answers: 1,
            check: |s| assert_eq!(status(s), 502),
        },
        Case {
            name: "a GET whose connection failed is retried on another backend",
            request: get("/api/retry", ""),
            answers: 1,
            check: |s| {
                assert_eq!(status(s), 200);
                assert_eq!(s.access[0].get("attempts").map(String::as_str), Some("2"));
            },
        },
        Case {
            name: "a POST whose connection failed is not retried",
            request: req(
                "POST /api/retry-post HTTP/1.1\r\nHost: a\r\nX-Request-Id: parity-1\r\n\
                 Content-Length: 0\r\n\r\n",
            ),
            answers: 1,
            check: |s| assert_eq!(status(s), 502),
        },
        Case {
            name: "a TRACE whose connection failed is not retried",
            request: req("TRACE /api/retry-trace HTTP/1.1\r\nHost: a\r\nX-Request-Id: parity-1\r\n\r\n"),
            answers: 1,
            check: |s| assert_eq!(status(s), 502),
        },
        Case {
            name: "three pipelined requests are answered in order",
            request: [
                get("/api/products/1", ""),
                get("/api/products/2", ""),
                get("/api/products/3", ""),
            ]
            .concat(),
            answers: 3,
            check: |s| {
                assert_eq!(s.answers.len(), 3, "{s:#?}");
                for (i, a) in s.answers.iter().enumerate() {
                    let want = format!("a GET /api/products/{}", i + 1);
                    assert_eq!(a.body, want);
                }
            },
        },
        Case {
            name: "a write whose body comes in a second write is read whole, then the next",
            request: [
                req("PUT /api/products/9 HTTP/1.1\r\nHost: a\r\nX-Request-Id: parity-1\r\nContent-Length: 11\r\n\r\n"),
                req("<pause>hello world"),
                get("/api/products/after", ""),
            ]
            .concat(),
            answers: 2,
            check: |s| {
                assert_eq!(s.answers.len(), 2, "{s:#?}");
                assert_eq!(s.answers[0].body, "a PUT /api/products/9 hello world");
                assert_eq!(s.answers[1].body, "a GET /api/products/after");
            },
        },
        Case {
            name: "a pipelined POST and GET are answered in order",
            request: [
                req("POST /api/products HTTP/1.1\r\nHost: a\r\nX-Request-Id: parity-1\r\nContent-Length: 2\r\n\r\nhi"),
                get("/api/products/after", ""),
            ]
            .concat(),
            answers: 2,
            check: |s| {
                assert_eq!(s.answers.len(), 2, "{s:#?}");
                assert_eq!(s.answers[1].body, "a GET /api/products/after");
            },
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_edge_rule_is_the_same_on_both_pipelines() {
    let rig = rig().await;
    let cases = cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in &cases {
        let fast = run(&rig, &rig.fast, &case.request, case.answers).await;
        let pingora = run(&rig, &rig.pingora, &case.request, case.answers).await;
        let missing = fast
            .access
            .iter()
            .chain(&pingora.access)
            .any(|a| a.contains_key("missing"));
        if fast != pingora || missing {
            failures.push(format!(
                "{}: the pipelines differ\n  fast path: {fast:#?}\n  pingora:   {pingora:#?}",
                case.name
            ));
            continue;
        }
        let checked = std::panic::catch_unwind(|| {
            assert_eq!(fast.trailing, "", "bytes after the last answer");
            (case.check)(&fast)
        });
        if let Err(panic) = checked {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!(
                "{}: both pipelines are wrong: {why}\n  both: {fast:#?}",
                case.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    // The fast path did take the cases it could: the comparison is between two pipelines.
    let fast_count = rig.fast.admin_text("/metrics").await;
    assert!(
        fast_count.contains("banyan_request_pipeline_total{pipeline=\"fast\"}"),
        "{fast_count}"
    );
    let pingora_count = rig.pingora.admin_text("/metrics").await;
    assert!(
        !pingora_count.contains("pipeline=\"fast\"}"),
        "{pingora_count}"
    );
}

/// A client that asks for a large answer and stops reading holds neither pipeline: once a write
/// to it has waited `client_write_timeout`, the exchange ends (logged like any other, the same on
/// both) and the connection closes short of the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_after_the_write_timeout() {
    // Far more than the loopback socket buffers between proxy and client hold.
    const BODY: usize = 32 << 20;
    let origin = RawOrigin::start(|_| {
        let mut reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
        reply.resize(reply.len() + BODY, b'x');
        Reply::Pieces(vec![reply])
    })
    .await;
    let mut logged = Vec::new();
    for fast_path in [true, false] {
        let routes = table(
            &[("a", vec![origin.addr])],
            "[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"a\"\n",
        )
        .replace(
            "[proxy]\n",
            &format!("[proxy]\nfast_path = {fast_path}\nclient_write_timeout = \"300ms\"\n"),
        );
        let proxy = spawn_proxy(&routes).await;
        let mut client = TcpStream::connect(proxy.address.trim_start_matches("http://"))
            .await
            .unwrap();
        client
            .write_all(
                b"GET /big HTTP/1.1\r\nHost: shop.example\r\nX-Request-Id: parity-stalled\r\n\r\n",
            )
            .await
            .unwrap();
        // The client reads nothing until the proxy has finished with the request.
        let fields = access_fields(&proxy, "parity-stalled", 0, 0).await;
        assert!(
            !fields.contains_key("missing"),
            "fast_path = {fast_path}: the exchange did not end while the client stopped reading"
        );
        let mut received = 0;
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), client.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => received += n,
                Err(_) => panic!("fast_path = {fast_path}: the connection stayed open"),
            }
        }
        assert!(
            received < BODY,
            "fast_path = {fast_path}: the whole answer arrived ({received} bytes)"
        );
        assert_eq!(
            fields.get("error").map(String::as_str),
            Some("client_gone"),
            "fast_path = {fast_path}: {fields:?}"
        );
        logged.push(fields);
    }
    assert_eq!(logged[0], logged[1], "the access records differ");
}

/// What a route's rollout window holds, from `GET /status`: (new requests, new errors, old
/// requests, old errors).
async fn rollout_window(proxy: &ProxyApp, route: &str) -> (u64, u64, u64, u64) {
    let status = proxy.admin_json("/status").await;
    let r = status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == route)
        .unwrap_or_else(|| panic!("no route {route} in {status}"));
    if r["rollout"]["phase"] == "starting" {
        // Not taken up by the controller yet: nothing counted in its window so far.
        return (0, 0, 0, 0);
    }
    let w = &r["rollout"]["window"];
    let n = |k: &str| w[k].as_u64().unwrap_or_else(|| panic!("no {k} in {r}"));
    (
        n("new_requests"),
        n("new_errors"),
        n("old_requests"),
        n("old_errors"),
    )
}

/// A rollout's records of each side are kept on the edge: the same requests give the same
/// window on both pipelines, a new side that refuses connections counts as failed even though
/// the fallback served the client, and the fallback's answer counts for the old side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_counts_each_side_the_same_on_both_pipelines() {
    const SENT: u64 = 6;
    let (a_log, b_log): (Log, Log) = Default::default();
    let a = origin("a", a_log).await;
    let b = origin("b", b_log).await;
    let rollout = |to: &str| {
        format!(
            "[route.rollout]\nto = \"{to}\"\nsteps = [100]\ninterval = \"1h\"\n\
             min_requests = 1000\nmin_compared = 1000\n"
        )
    };
    let routes = format!(
        "[upstreams.dead]\naddrs = [\"{dead}\"]\n\n\
         [[route]]\nid = \"live\"\npath = \"/api/live\"\nmethods = [\"GET\", \"HEAD\"]\n\
         upstream = \"a\"\n{live}\n\
         [[route]]\nid = \"dead\"\npath = \"/api/dead\"\nmethods = [\"GET\", \"HEAD\"]\n\
         upstream = \"a\"\nfallback = \"a\"\n{dead_rollout}",
        dead = closed_port(),
        live = rollout("b"),
        dead_rollout = rollout("dead"),
    );
    let base = table(&[("a", vec![a.addr]), ("b", vec![b.addr])], "");
    let mut windows = Vec::new();
    for fast_path in [true, false] {
        let t = base.replace("[proxy]\n", &format!("[proxy]\nfast_path = {fast_path}\n"));
        let proxy = spawn_proxy(&format!("{t}{routes}")).await;
        for i in 0..SENT {
            for (route, served_by) in [("live", "b"), ("dead", "a")] {
                let r = reqwest::get(proxy.url(&format!("/api/{route}/{i}")))
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap();
                assert_eq!(status, 200, "fast_path = {fast_path}, {route}: {body}");
                assert!(
                    body.starts_with(&format!("{served_by} GET")),
                    "fast_path = {fast_path}, {route}: {body}"
                );
            }
        }
        // The controller takes its figures from the edge on its own tick.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let seen = loop {
            let live = rollout_window(&proxy, "live").await;
            let dead = rollout_window(&proxy, "dead").await;
            if live.0 + live.2 >= SENT && dead.0 >= SENT && dead.2 >= SENT {
                break (live, dead);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "fast_path = {fast_path}: the windows stayed at {live:?} {dead:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            seen,
            ((SENT, 0, 0, 0), (SENT, SENT, SENT, 0)),
            "fast_path = {fast_path}: (new, new errors, old, old errors) of live, dead"
        );
        windows.push(seen);
    }
    assert_eq!(windows[0], windows[1], "the pipelines count differently");
}

/// A shadowed route's copy is built by the mirror from either pipeline's headers (Pingora's map,
/// the fast path's parsed head): the candidate gets the same head from both, with the edge's
/// rules applied (hop-by-hop and nominated headers dropped, forged edge headers replaced, the
/// shadow marker added).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_copy_is_the_same_from_both_pipelines() {
    let (a_log, c_log): (Log, Log) = Default::default();
    let a = origin("a", a_log).await;
    let c = origin("c", c_log.clone()).await;
    let routes = "[[route]]\nid = \"shadowed\"\npath = \"/api/shadowed\"\nupstream = \"a\"\n\
                  shadow = { to = \"c\", percent = 100 }\n";
    let base = table(&[("a", vec![a.addr]), ("c", vec![c.addr])], "");
    let request = req(
        "GET /api/shadowed/1?q=x HTTP/1.1\r\nHost: shop.example\r\nConnection: x-hop\r\n\
         X-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-Custom: yes\r\nX-Custom: again\r\n\
         X-Forwarded-For: 6.6.6.6\r\nX-Banyan-Shadow: forged\r\nCookie: sid=abc\r\n\r\n",
    );
    let mut copies = Vec::new();
    for fast_path in [true, false] {
        let t = base.replace("[proxy]\n", &format!("[proxy]\nfast_path = {fast_path}\n"));
        let proxy = spawn_proxy(&format!("{t}{routes}")).await;
        c_log.lock().unwrap().clear();
        let (answers, _) = exchange(&proxy, &request, false, 1).await;
        assert_eq!(answers[0].status, 200, "fast_path = {fast_path}");
        // The copy leaves from the idle-priority shadow thread, after the answer.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let head = loop {
            if let Some(h) = c_log.lock().unwrap().first().cloned() {
                break h;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "fast_path = {fast_path}: no copy reached the candidate"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let head = generated_ids_replaced(&head, &answers).to_ascii_lowercase();
        let mut lines: Vec<String> = head.lines().map(str::to_owned).collect();
        lines.sort();
        copies.push(lines);
    }
    let copy = copies[0].join("\n");
    for absent in ["x-hop", "keep-alive", "connection:", "6.6.6.6", "forged"] {
        assert!(!copy.contains(absent), "{absent} in the copy:\n{copy}");
    }
    for present in [
        "get /api/shadowed/1?q=x http/1.1",
        "x-custom: yes",
        "x-custom: again",
        "x-forwarded-for: 127.0.0.1",
        "x-banyan-shadow: candidate",
        "cookie: sid=abc",
    ] {
        assert!(
            copies[0].iter().any(|l| l == present),
            "{present} not in the copy:\n{copy}"
        );
    }
    assert_eq!(copies[0], copies[1], "the pipelines' copies differ");
}
