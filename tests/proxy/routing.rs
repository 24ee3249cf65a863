use banyan_tests::origin::Origin;
use banyan_tests::proxy::{spawn_proxy, table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalized_paths_match_and_are_forwarded_normalized() {
    let (products, rest) = (Origin::start("products").await, Origin::start("rest").await);
    let routes = r#"
[[route]]
id = "products"
path = "/api/products"
upstream = "products"

[[route]]
id = "rest"
path = "/"
upstream = "rest"
"#;
    let proxy = spawn_proxy(&table(
        &[("products", vec![products.addr]), ("rest", vec![rest.addr])],
        routes,
    ))
    .await;
    for path in [
        "/api//products",
        "/api/./products",
        "/api/x/../products",
        "/api/%70roducts",
        "/api/products/7",
    ] {
        let (status, body) = proxy.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body["backend"], "products", "{path}");
        assert!(
            body["path"].as_str().unwrap().starts_with("/api/products"),
            "{path} forwarded as {}",
            body["path"]
        );
    }
    assert_eq!(proxy.backend_of("/api/productsx").await, "rest");
    assert_eq!(
        proxy.backend_of("/api/%2e%2e/api/products").await,
        "products"
    );
    let (_, body) = proxy.get("/api//products?page=2&q=a%20b").await;
    assert_eq!(body["path"], "/api/products");
    assert_eq!(
        body["query"], "page=2&q=a%20b",
        "query passed through untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_set_by_the_proxy_not_the_client() {
    let origin = Origin::start("a").await;
    let proxy = spawn_proxy(&table(
        &[("a", vec![origin.addr])],
        "[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"a\"\n",
    ))
    .await;
    let r = proxy
        .client
        .get(proxy.url("/x"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-123");
    assert_eq!(r.headers()["via"], "1.1 banyan");
    assert_eq!(r.headers()["x-banyan-route"], "all");
    assert_eq!(r.headers()["x-banyan-upstream"], "a");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["x_forwarded_for"], "127.0.0.1",
        "a client cannot choose its own address"
    );
    assert_eq!(body["x_forwarded_proto"], "http");
    assert!(
        body["x_forwarded_host"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(body["x_request_id"], "trace-me-123");
    assert_eq!(body["via"], "1.1 banyan");
    // Without an id (or with an unusable one) the proxy makes one and passes it on.
    let r = proxy
        .client
        .get(proxy.url("/x"))
        .header("x-request-id", "bad id")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["x_request_id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_and_headers_pick_the_route() {
    let (a, b, c) = (
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("c").await,
    );
    let routes = r#"
[[route]]
id = "writes"
path = "/api/products"
methods = ["POST", "PUT"]
upstream = "b"

[[route]]
id = "beta"
path = "/api/products"
methods = ["GET"]
headers = { x-beta = "1" }
upstream = "c"

[[route]]
id = "rest"
path = "/"
upstream = "a"
"#;
    let proxy = spawn_proxy(&table(
        &[
            ("a", vec![a.addr]),
            ("b", vec![b.addr]),
            ("c", vec![c.addr]),
        ],
        routes,
    ))
    .await;
    assert_eq!(proxy.backend_of("/api/products").await, "a");
    let r: serde_json::Value = proxy
        .client
        .post(proxy.url("/api/products"))
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["backend"], "b");
    let r: serde_json::Value = proxy
        .client
        .get(proxy.url("/api/products"))
        .header("x-beta", "1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["backend"], "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_malformed_and_unreachable_answer_in_the_error_format() {
    let origin = Origin::start("a").await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let routes = "[[route]]\nid = \"api\"\npath = \"/api\"\nupstream = \"a\"\n\n[[route]]\nid = \"gone\"\npath = \"/gone\"\nupstream = \"dead\"\n";
    let proxy = spawn_proxy(&table(
        &[("a", vec![origin.addr]), ("dead", vec![dead])],
        routes,
    ))
    .await;
    let (status, body) = proxy.get("/elsewhere").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = proxy.get("/api/%zz").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    let (status, body) = proxy.get("/gone").await;
    assert!(status == 502 || status == 503, "{status}");
    assert!(
        ["bad_gateway", "unavailable"].contains(&body["error"]["code"].as_str().unwrap()),
        "{body}"
    );
    // Once the backend is known to be down, it is a 503 without trying.
    let (status, body) = proxy.get("/gone").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
}

/// The repository's own routes.toml shape in front of the real monolith: clients see the
/// monolith's API unchanged through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monolith_behind_the_proxy_is_unchanged_for_clients() {
    let app = banyan_tests::spawn_app_with(banyan_tests::AppOptions::seeded(30)).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let routes = format!(
        "[upstreams.legacy]\naddrs = [\"{addr}\"]\nhealth = {{ path = \"/health\", interval = \"1s\" }}\n\n[[route]]\nid = \"everything-else\"\npath = \"/\"\nupstream = \"legacy\"\n"
    );
    let proxy = spawn_proxy(&routes).await;
    let client = banyan_tests::new_client();
    let direct: serde_json::Value = app
        .get("/api/products?sort=-price&per_page=5")
        .await
        .json()
        .await
        .unwrap();
    let via: serde_json::Value = client
        .get(proxy.url("/api/products?sort=-price&per_page=5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(direct, via);
    // Login through the proxy sets the same cookie; the session works through the proxy.
    let r = client
        .post(proxy.url("/api/auth/login"))
        .json(&serde_json::json!({"email": app.admin_email, "password": app.admin_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("HttpOnly")
    );
    let me: serde_json::Value = client
        .get(proxy.url("/api/auth/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "admin");
    let r = client
        .post(proxy.url("/api/products"))
        .json(&serde_json::json!({"sku": "P-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "validation errors pass through unchanged");
}

/// A backend slower than the upstream's `read_timeout` gets the client a 504 in the error format
/// (and the proxy does not hang with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_a_504() {
    let origin = Origin::start("a").await;
    let routes = format!(
        "[upstreams.a]\naddrs = [\"{}\"]\nread_timeout = \"200ms\"\n\n[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"a\"\n",
        origin.addr
    );
    let proxy = spawn_proxy(&routes).await;
    assert_eq!(proxy.get("/slow/10").await.0, 200);
    let started = std::time::Instant::now();
    let (status, body) = proxy.get("/slow/3000").await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "gateway_timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // Debug headers are off unless the table turns them on.
    let r = proxy.client.get(proxy.url("/x")).send().await.unwrap();
    assert!(r.headers().get("x-banyan-route").is_none());
    assert!(r.headers().get("x-banyan-upstream").is_none());
}
