//! `banyan plan`: what saving a file would do to the running proxy's traffic, before saving.

use banyan_tests::origin::Origin;
use banyan_tests::process::run_raw;
use banyan_tests::proxy::{ADMIN_TOKEN_FILE, spawn_proxy, table};

fn routes(a: &Origin, b: &Origin, percent: u32) -> String {
    table(
        &[("a", vec![a.addr]), ("b", vec![b.addr])],
        &format!(
            "[[route]]\nid = \"products\"\npath = \"/api/products\"\nupstream = \"a\"\n\
             split = {{ to = \"b\", percent = {percent} }}\n\n\
             [[route]]\nid = \"rest\"\npath = \"/\"\nupstream = \"a\"\n"
        ),
    )
}

/// Raising a split from 10 to 50 % moves 40 % of that route: with three quarters of the
/// traffic on it, about 30 % of all. A bad file prints its errors and plans nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_says_which_routes_and_what_share_of_traffic_move() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let proxy = spawn_proxy(&routes(&a, &b, 10)).await;
    for i in 0..400 {
        let path = if i % 4 == 3 {
            "/other"
        } else {
            "/api/products/1"
        };
        assert_eq!(proxy.get(path).await.0, 200);
    }
    let planned = proxy.dir.path().join("next.toml");
    std::fs::write(&planned, routes(&a, &b, 50)).unwrap();
    let token = proxy.dir.path().join(ADMIN_TOKEN_FILE);
    let args = |file: &str| {
        vec![
            "plan".to_owned(),
            file.to_owned(),
            "--admin".into(),
            proxy.admin.clone(),
            "--token-file".into(),
            token.to_str().unwrap().to_owned(),
        ]
    };
    let run = |file: &str| {
        let a = args(file);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        run_raw("banyan", &refs, &[])
    };
    let (status, out, err) = run(planned.to_str().unwrap());
    assert!(status.success(), "{out}{err}");
    eprintln!("{out}");
    let line = out
        .lines()
        .find(|l| l.contains("products"))
        .unwrap_or_else(|| panic!("no line for the route: {out}"));
    assert!(
        line.contains("a 90 % + b 10 % -> a 50 % + b 50 %"),
        "{line}"
    );
    assert!(line.contains("moves 40 % of the route"), "{line}");
    // 300 of 400 requests were on the route: 40 % of 75 % of current traffic.
    assert!(line.contains("about 30.0 % of current traffic"), "{line}");
    assert!(
        !out.contains("rest "),
        "an unchanged route is not listed: {out}"
    );
    assert!(out.contains("1 route(s) change"), "{out}");

    // The same file as the live one: nothing moves.
    let same = proxy.dir.path().join("same.toml");
    std::fs::write(&same, routes(&a, &b, 10)).unwrap();
    let (status, out, _) = run(same.to_str().unwrap());
    assert!(status.success());
    assert!(out.contains("no change"), "{out}");

    // A bad file: its errors, located, and exit 1.
    let bad = proxy.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        routes(&a, &b, 10).replace("percent = 10", "percent = 150"),
    )
    .unwrap();
    let (status, out, err) = run(bad.to_str().unwrap());
    assert_eq!(status.code(), Some(1), "{out}{err}");
    let located = format!("{}:", bad.display());
    assert!(
        err.lines()
            .any(|l| l.starts_with(&located) && l.contains("percent must be between 0 and 100")),
        "{err}"
    );
}
