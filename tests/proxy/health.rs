use std::time::{Duration, Instant};

use banyan_tests::origin::Origin;
use banyan_tests::process::ServiceProcess;
use banyan_tests::proxy::spawn_proxy;

/// One of two real backend processes is killed (SIGKILL): idempotent requests never see it
/// (the refused connect is retried on the other backend, and the dead one leaves rotation). It
/// is restarted on the same port: it gets traffic again within two health intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_is_routed_around_and_welcomed_back() {
    let storage = banyan_tests::TestStorage::create().await;
    let env = storage.env();
    let mut a = ServiceProcess::start(
        "legacy-monolith",
        &["serve", "--listen", "127.0.0.1:0"],
        &env,
    )
    .await;
    let b = ServiceProcess::start(
        "legacy-monolith",
        &["serve", "--listen", "127.0.0.1:0"],
        &env,
    )
    .await;
    let addr_a = a.address.trim_start_matches("http://").to_owned();
    let addr_b = b.address.trim_start_matches("http://").to_owned();
    let interval = Duration::from_millis(500);
    let routes = format!(
        "[upstreams.pool]\naddrs = [\"{addr_a}\", \"{addr_b}\"]\nhealth = {{ path = \"/health\", interval = \"500ms\", timeout = \"200ms\" }}\n\n[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"pool\"\n"
    );
    let proxy = spawn_proxy(&routes).await;
    for _ in 0..10 {
        assert_eq!(proxy.get("/api/categories").await.0, 200);
    }
    assert!(
        a.log().contains("path=/api/categories") && b.log().contains("path=/api/categories"),
        "round-robin over both"
    );

    a.kill();
    for i in 0..200 {
        let (status, body) = proxy.get(&format!("/api/categories?i={i}")).await;
        assert_eq!(
            status, 200,
            "request {i} failed while a backend was down: {body}"
        );
    }
    let r = proxy.routes().await;
    let backends = r["upstreams"]["pool"]["backends"]
        .as_array()
        .unwrap()
        .clone();
    let dead = backends
        .iter()
        .find(|x| x["addr"] == addr_a.as_str())
        .unwrap();
    assert_eq!(dead["in_rotation"], false, "{r}");

    let restarted =
        ServiceProcess::start("legacy-monolith", &["serve", "--listen", &addr_a], &env).await;
    let back = Instant::now();
    loop {
        assert_eq!(proxy.get("/api/categories?after=restart").await.0, 200);
        if restarted.log().contains("path=/api/categories") {
            break;
        }
        assert!(
            back.elapsed() <= 2 * interval,
            "no traffic to the restarted backend within two health intervals"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("restarted backend got traffic after {:?}", back.elapsed());
    let metrics = proxy
        .client
        .get(format!("{}/metrics", proxy.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "banyan_backend_up{{backend=\"{addr_a}\",upstream=\"pool\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("banyan_upstream_failures_total{kind=\"connect\",upstream=\"pool\"}"));
    assert!(
        metrics.contains("banyan_requests_total{class=\"2xx\",route=\"all\",upstream=\"pool\"}")
    );
}

/// Non-idempotent requests get exactly one attempt: a POST whose backend refuses the connection
/// gets a 502 instead of being sent elsewhere (the policy is simple to reason about: a write is
/// delivered at most once, whatever failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_requests_are_not_retried() {
    let b = Origin::start("b").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let routes = format!(
        "[upstreams.pool]\naddrs = [\"{dead}\", \"{}\"]\n\n[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"pool\"\n",
        b.addr
    );
    let proxy = spawn_proxy(&routes).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            proxy
                .client
                .post(proxy.url("/orders"))
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(
        statuses.contains(&502),
        "a POST that hit the dead backend was retried elsewhere: {statuses:?}"
    );
    assert!(statuses.contains(&200));
}
