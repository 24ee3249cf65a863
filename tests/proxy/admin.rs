//! Who may talk to the admin API: loopback names and IP addresses as `Host` (not a rebinding
//! page's name), the admin token for every action, and for every read off loopback.

use std::time::Duration;

use banyan_tests::origin::Origin;
use banyan_tests::process::run_raw;
use banyan_tests::proxy::{ADMIN_TOKEN_FILE, spawn_proxy, spawn_proxy_with, table};
use reqwest::Method;

fn one_route(origin: &Origin) -> String {
    table(
        &[("a", vec![origin.addr])],
        "[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"a\"\n",
    )
}

/// A browser page that rebinds its own name to 127.0.0.1 sends that name as `Host`: refused.
/// IP addresses and localhost pass; `/healthz` is open to any Host, for probes.
#[tokio::test]
async fn the_admin_api_answers_only_loopback_names_and_ip_addresses() {
    let origin = Origin::start("a").await;
    let proxy = spawn_proxy(&one_route(&origin)).await;
    let port = proxy.admin.rsplit(':').next().unwrap().to_owned();
    let get = |host: String, path: &'static str| {
        let url = format!("{}{path}", proxy.admin);
        let client = proxy.client.clone();
        async move { client.get(url).header("host", host).send().await.unwrap() }
    };
    for host in [
        format!("evil.example:{port}"),
        "evil.example".into(),
        format!("127.0.0.1.evil.example:{port}"),
    ] {
        let r = get(host.clone(), "/routes").await;
        assert_eq!(r.status(), 403, "{host}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{body}");
        assert_eq!(get(host.clone(), "/metrics").await.status(), 403, "{host}");
        assert_eq!(get(host, "/healthz").await.status(), 200);
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(get(host.clone(), "/routes").await.status(), 200, "{host}");
    }
}

/// `admin_hosts` adds names the API answers to.
#[tokio::test]
async fn configured_admin_hosts_are_accepted() {
    let origin = Origin::start("a").await;
    let routes = one_route(&origin).replacen(
        "[proxy]\n",
        "[proxy]\nadmin_hosts = [\"banyan-admin.internal\"]\n",
        1,
    );
    let proxy = spawn_proxy(&routes).await;
    let r = proxy
        .client
        .get(format!("{}/routes", proxy.admin))
        .header("host", "banyan-admin.internal:9901")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Actions need the token: none or a wrong one is 401 and nothing happens; the right one works.
/// Without a token file, actions are refused outright (reads on loopback still work).
#[tokio::test]
async fn actions_need_the_admin_token() {
    let origin = Origin::start("a").await;
    let proxy = spawn_proxy(&one_route(&origin)).await;
    let plain = proxy
        .client
        .delete(format!("{}/shadow", proxy.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 401);
    assert_eq!(plain.headers()["www-authenticate"], "Bearer");
    let wrong = proxy
        .client
        .delete(format!("{}/shadow", proxy.admin))
        .bearer_auth("not-the-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = proxy
        .admin_action(Method::DELETE, "/shadow")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 204);
    // Reads on loopback need no token.
    let read = proxy
        .client
        .get(format!("{}/routes", proxy.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    let untokened =
        one_route(&origin).replace(&format!("admin_token_file = \"{ADMIN_TOKEN_FILE}\"\n"), "");
    let bare = spawn_proxy(&untokened).await;
    let r = bare
        .admin_action(Method::DELETE, "/shadow")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin_token_file"),
        "{body}"
    );
}

/// Off loopback, the proxy refuses to start without a token; with one, every read needs it too
/// (but `/healthz`).
#[tokio::test]
async fn off_loopback_the_admin_api_needs_a_token_for_everything() {
    let origin = Origin::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.toml");
    let untokened =
        one_route(&origin).replace(&format!("admin_token_file = \"{ADMIN_TOKEN_FILE}\"\n"), "");
    std::fs::write(&config, untokened).unwrap();
    // Refused before it binds anything: port 0 would do as well as any.
    let (admin, listen) = ("0.0.0.0:0", "127.0.0.1:0");
    let (status, _, stderr) = run_raw(
        "banyan",
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            listen,
            "--admin",
            admin,
        ],
        &[],
    );
    assert!(!status.success());
    assert!(stderr.contains("admin_token_file"), "{stderr}");

    let proxy = spawn_proxy_with(&one_route(&origin), &["--admin", admin]).await;
    let local = &proxy.admin;
    let r = proxy
        .client
        .get(format!("{local}/routes"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = proxy
        .client
        .get(format!("{local}/routes"))
        .bearer_auth(&proxy.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = proxy
        .client
        .get(format!("{local}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A token file that is missing or too short is a configuration error at its line.
#[tokio::test]
async fn a_bad_token_file_is_located_in_the_table() {
    let origin = Origin::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.toml");
    std::fs::write(&config, one_route(&origin)).unwrap();
    std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "short\n").unwrap();
    let (status, _, stderr) = run_raw("banyan", &["check", config.to_str().unwrap()], &[]);
    assert!(!status.success());
    assert!(stderr.contains(":4:20: admin_token_file:"), "{stderr}");
    assert!(stderr.contains("at least 16 characters"), "{stderr}");
}
