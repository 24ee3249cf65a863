use std::collections::HashMap;
use std::time::Duration;

use banyan_tests::origin::Origin;
use banyan_tests::proxy::{spawn_proxy, table};
use futures::StreamExt;

fn split_table(legacy: std::net::SocketAddr, new: std::net::SocketAddr, percent: u32) -> String {
    table(
        &[("legacy", vec![legacy]), ("new", vec![new])],
        &format!(
            "[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"legacy\"\nsplit = {{ to = \"new\", percent = {percent}, sticky = \"cookie:sid\" }}\n"
        ),
    )
}

/// Where each of `cookies` lands, asked `times` times each; panics if a cookie changes side.
async fn sides(
    proxy: &banyan_tests::proxy::ProxyApp,
    cookies: &[String],
    times: usize,
) -> HashMap<String, String> {
    let results: Vec<(String, Vec<String>)> = futures::stream::iter(cookies.iter().cloned())
        .map(|c| async move {
            let mut seen = Vec::with_capacity(times);
            for _ in 0..times {
                let r = proxy
                    .client
                    .get(proxy.url("/p"))
                    .header("cookie", format!("theme=dark; sid={c}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                seen.push(
                    r.json::<serde_json::Value>().await.unwrap()["backend"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            (c, seen)
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results
        .into_iter()
        .map(|(c, seen)| {
            assert!(
                seen.iter().all(|s| s == &seen[0]),
                "cookie {c} changed sides: {seen:?}"
            );
            (c, seen[0].clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_split_holds_its_share_and_only_moves_users_forward() {
    let (legacy, new) = (Origin::start("legacy").await, Origin::start("new").await);
    let proxy = spawn_proxy(&split_table(legacy.addr, new.addr, 30)).await;
    let cookies: Vec<String> = (0..1000)
        .map(|i| format!("session-{i:04}-{}", banyan_tests::random_hex(4)))
        .collect();

    let at30 = sides(&proxy, &cookies, 10).await;
    let on_new = at30.values().filter(|s| *s == "new").count();
    assert!(
        (250..=350).contains(&on_new),
        "{on_new} of 1000 on the new side at 30%"
    );

    let before = proxy.routes().await["version"].as_str().unwrap().to_owned();
    proxy.rename_save(&split_table(legacy.addr, new.addr, 60));
    proxy
        .wait_new_version(&before, Duration::from_secs(2))
        .await
        .expect("reloaded to 60%");
    let at60 = sides(&proxy, &cookies, 1).await;
    let on_new_60 = at60.values().filter(|s| *s == "new").count();
    assert!(
        (550..=650).contains(&on_new_60),
        "{on_new_60} of 1000 on the new side at 60%"
    );
    for (c, side) in &at30 {
        if side == "new" {
            assert_eq!(
                at60[c], "new",
                "cookie {c} went back to legacy when the percent rose"
            );
        }
    }
    eprintln!("30%: {on_new}/1000 on new; 60%: {on_new_60}/1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_key_are_split_per_request_and_zero_means_none() {
    let (legacy, new) = (Origin::start("legacy").await, Origin::start("new").await);
    let proxy = spawn_proxy(&split_table(legacy.addr, new.addr, 50)).await;
    let mut seen = HashMap::new();
    for _ in 0..200 {
        *seen.entry(proxy.backend_of("/p").await).or_insert(0) += 1;
    }
    assert!(
        seen.get("legacy").copied().unwrap_or(0) > 50 && seen.get("new").copied().unwrap_or(0) > 50,
        "{seen:?}"
    );

    let before = proxy.routes().await["version"].as_str().unwrap().to_owned();
    proxy.rename_save(&split_table(legacy.addr, new.addr, 0));
    proxy
        .wait_new_version(&before, Duration::from_secs(2))
        .await
        .unwrap();
    for _ in 0..50 {
        assert_eq!(proxy.backend_of("/p").await, "legacy");
    }
}
