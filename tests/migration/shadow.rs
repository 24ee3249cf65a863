//! Shadowing `/api/search` from the monolith to the search service, through the real proxy, on
//! 1,000 varied requests: the issue's acceptance run.
//!
//! Between the proxy and the real processes sit two small pass-through servers, as a real
//! deployment's responses would differ:
//! - both add `served_at`, a timestamp that differs on every call (noise: the proxy learns it from
//!   a second call to the monolith, and must not report it as a mismatch);
//! - the candidate's plants one difference in one kind of response: for searches filtered by
//!   category, its first hit's `price_cents` is one cent more. The report must name that field
//!   with its path, count exactly those requests, and show an example.
//!
//! The catalog is built from whole words that both engines match alike (see the contract suite),
//! so everything else must agree under the route's rules: scores and hit order may differ.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::response::IntoResponse;
use banyan_tests::process::run_to_completion;
use banyan_tests::proxy::{spawn_proxy, table};
use banyan_tests::{converges, spawn_app, spawn_synced_search};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const ADJECTIVES: [&str; 6] = ["copper", "walnut", "silver", "velvet", "cotton", "maple"];
const NOUNS: [&str; 10] = [
    "kettle", "lantern", "blanket", "hammer", "pillow", "mirror", "basket", "candle", "wallet",
    "ladder",
];
const CATEGORIES: [&str; 4] = ["kitchen", "garden", "books", "toys"];

#[derive(Clone)]
struct Passthrough {
    base: String,
    client: reqwest::Client,
    plant: bool,
}

/// Forwards a GET to `base` and stamps the JSON answer (see the module docs).
async fn stamp(State(p): State<Passthrough>, req: Request) -> impl IntoResponse {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let r = p
        .client
        .get(format!("{}{target}", p.base))
        .send()
        .await
        .expect("the real service answers");
    let status = r.status();
    let mut body: Value = r.json().await.expect("a JSON answer");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    body["served_at"] = json!(nanos.to_string());
    if p.plant
        && target.contains("category=")
        && let Some(price) = body["hits"][0]["price_cents"].as_i64()
    {
        body["hits"][0]["price_cents"] = json!(price + 1);
    }
    (status, axum::Json(body))
}

async fn start_passthrough(base: String, plant: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(axum::routing::get(stamp))
        .with_state(Passthrough {
            base,
            client: reqwest::Client::new(),
            plant,
        });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_shadowed_from_the_monolith_reports_the_planted_difference_and_learns_noise() {
    let app = spawn_app().await;
    let admin = app.admin_client().await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut n = 0;
    for (i, adj) in ADJECTIVES.iter().enumerate() {
        for (j, noun) in NOUNS.iter().enumerate() {
            if (i + j) % 3 == 2 {
                continue; // 40 of the 60 pairs
            }
            let (adj2, noun2) = (ADJECTIVES[(i + 2) % 6], NOUNS[(j + 3) % 10]);
            app.create_product(
                &admin,
                json!({
                    "sku": format!("SH-{n}"),
                    "name": format!("{} {}", capitalize(adj), capitalize(noun)),
                    "description": format!("{adj2} {noun2} for the home"),
                    "category": CATEGORIES[n % 4],
                    "price_cents": rng.gen_range(100..20_000),
                    "stock": 5,
                }),
            )
            .await;
            n += 1;
        }
    }
    assert_eq!(n, 40);
    let search = spawn_synced_search(&app).await;
    let monolith_total = app
        .get("/api/search?q=copper")
        .await
        .json::<Value>()
        .await
        .unwrap()["total"]
        .clone();
    converges(
        &format!("{}/api/search?q=copper", search.address),
        |s, b| s == 200 && b["total"] == monolith_total,
    )
    .await;

    let legacy = start_passthrough(app.address.clone(), false).await;
    let candidate = start_passthrough(search.address.clone(), true).await;
    let proxy = Arc::new(
        spawn_proxy(&table(
            &[("legacy", vec![legacy]), ("search", vec![candidate])],
            r#"[[route]]
id = "search"
path = "/api/search"
upstream = "legacy"

[route.shadow]
to = "search"
percent = 100
second_primary = "legacy"
max_in_flight = 2000
timeout = "10s"
ignore = ["/hits/*/score"]
unordered = ["/hits"]
"#,
        ))
        .await,
    );

    // 1,000 varied searches, deterministic: one word, a word in a category, two words, odd
    // casing, and invalid ones (an empty query, a bad limit).
    let mut requests = Vec::new();
    for _ in 0..1000 {
        let word = |rng: &mut rand_chacha::ChaCha8Rng| {
            if rng.gen_bool(0.5) {
                ADJECTIVES[rng.gen_range(0..6)]
            } else {
                NOUNS[rng.gen_range(0..10)]
            }
        };
        let w = word(&mut rng);
        let q = match rng.gen_range(0..100) {
            0..50 => format!("q={w}"),
            50..65 => format!("q={w}&category={}", CATEGORIES[rng.gen_range(0..4)]),
            65..85 => format!("q={w}%20{}&limit=100", word(&mut rng)),
            85..95 => format!("q={}", w.to_uppercase()),
            95..98 => "q=".to_owned(),
            _ => format!("q={w}&limit=abc"),
        };
        requests.push(format!("/api/search?{q}"));
    }
    // Sent in batches of 100 by 8 clients, each batch's shadows settled before the next: the
    // proxy never makes a client wait for shadows, so without this the test would pile up to
    // 2,000 candidate and second-primary calls at once, and on a busy CI machine the last of
    // them would time out (counted, correctly, but not what this test is about).
    let requests = Arc::new(requests);
    let planted = Arc::new(AtomicU64::new(0));
    for batch in 0..10 {
        let next = Arc::new(AtomicU64::new(batch * 100));
        let mut clients = Vec::new();
        for _ in 0..8 {
            let (proxy, requests, next, planted) = (
                proxy.clone(),
                requests.clone(),
                next.clone(),
                planted.clone(),
            );
            clients.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= (batch + 1) * 100 {
                        return;
                    }
                    let path = &requests[i as usize];
                    let r = proxy.client.get(proxy.url(path)).send().await.unwrap();
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap();
                    if path.ends_with("q=") || path.ends_with("limit=abc") {
                        assert_eq!(status, 422, "{path}: {body}");
                    } else {
                        assert_eq!(status, 200, "{path}: {body}");
                        if path.contains("category=") && body["total"].as_u64().unwrap() > 0 {
                            planted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        settled(&proxy, (batch + 1) * 100).await;
    }
    let planted = planted.load(Ordering::Relaxed);
    assert!(
        planted > 50,
        "the mix must plant enough differences: {planted}"
    );

    let t = settled(&proxy, 1000).await;
    assert_eq!(t["compared"], 1000, "{t:?}");
    assert_eq!(
        t["mismatched"], planted,
        "exactly the planted requests mismatch: {t:?}"
    );
    assert_eq!(t["noise_only"], 1000 - planted, "{t:?}");

    let snap = proxy.shadow().await;
    let endpoint = &snap["routes"]["search"]["endpoints"]["GET /api/search"];
    let fields = endpoint["fields"].as_object().unwrap();
    let mismatching: Vec<&String> = fields
        .iter()
        .filter(|(_, f)| f["mismatches"].as_u64().unwrap() > 0)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        mismatching,
        ["/hits/*/price_cents"],
        "only the planted field: {fields:?}"
    );
    let price = &fields["/hits/*/price_cents"];
    assert_eq!(price["mismatches"], planted);
    let example = &price["example"];
    let path = example["path"].as_str().unwrap();
    let index = path
        .strip_prefix("/hits/")
        .and_then(|p| p.strip_suffix("/price_cents"))
        .unwrap_or_else(|| panic!("an exact path: {example}"));
    assert!(index.parse::<usize>().is_ok(), "{example}");
    assert!(
        example["request"].as_str().unwrap().contains("category="),
        "{example}"
    );
    let (p, c) = (
        example["primary"].as_str().unwrap().parse::<i64>().unwrap(),
        example["candidate"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap(),
    );
    assert_eq!(c, p + 1, "{example}");
    let served_at = &fields["/served_at"];
    assert_eq!(
        served_at["noise"], 1000,
        "the timestamp is noise on every request: {served_at}"
    );
    assert_eq!(served_at["mismatches"], 0);
    assert_eq!(endpoint["counts"]["primary_pairs"], 1000);

    let report = run_to_completion(
        "banyan",
        &["shadow", "report", "--admin", &proxy.admin],
        &[],
    );
    println!("{report}");
    let top = report
        .lines()
        .skip_while(|l| !l.contains("top differing fields"))
        .nth(1)
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        top.contains("/hits/*/price_cents") && top.contains(&planted.to_string()),
        "{report}"
    );
    assert!(report.contains("e.g. GET /api/search?q="), "{report}");
    let noise = report
        .split("noise (not counted as mismatches)")
        .nth(1)
        .unwrap_or_else(|| panic!("{report}"));
    assert!(noise.contains("/served_at"), "{report}");
}

/// Waits until `n` shadows of the search route have an outcome, whichever it is.
async fn settled(
    proxy: &banyan_tests::proxy::ProxyApp,
    n: u64,
) -> std::collections::BTreeMap<String, u64> {
    proxy
        .wait_shadow("search", |t| {
            [
                "compared",
                "candidate_errors",
                "candidate_timeouts",
                "too_large",
                "dropped_in_flight",
                "primary_failed",
            ]
            .iter()
            .map(|k| t.get(*k).copied().unwrap_or(0))
            .sum::<u64>()
                == n
        })
        .await
}

fn capitalize(w: &str) -> String {
    let mut c = w.chars();
    c.next().map_or_else(String::new, |f| {
        f.to_uppercase().collect::<String>() + c.as_str()
    })
}
