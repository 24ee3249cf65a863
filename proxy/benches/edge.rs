//! The edge's stages, one by one, so that a regression shows before the full comparison against
//! nginx and HAProxy runs (`bench/compare`): routing over a 200-route table (normalize, match,
//! split), the sticky split alone, the upstream request head, the client response head, and a
//! failure's answer. `cargo bench -p banyan --bench edge`; figures in bench/RESULTS.md.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use banyan::bench_support::{self, Table};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;

/// 200 routes as a large migration has them: prefixes under `/api`, some with methods, some
/// with a header condition, some split; the catch-all last.
fn table_of_200() -> String {
    let mut t = String::from(
        "[upstreams.legacy]\naddrs = [\"127.0.0.1:3000\"]\n\n\
         [upstreams.catalog]\naddrs = [\"127.0.0.1:4001\"]\n\n",
    );
    for i in 0..199 {
        t.push_str(&format!(
            "[[route]]\nid = \"r{i}\"\npath = \"/api/area{}/things{i}\"\nupstream = \"legacy\"\n",
            i % 20
        ));
        match i % 4 {
            0 => t.push_str("methods = [\"GET\", \"HEAD\"]\n"),
            1 => t.push_str("headers = { x-beta = \"yes\" }\n"),
            2 => {
                t.push_str("split = { to = \"catalog\", percent = 25, sticky = \"cookie:sid\" }\n")
            }
            _ => {}
        }
        t.push('\n');
    }
    t.push_str("[[route]]\nid = \"rest\"\npath = \"/\"\nupstream = \"legacy\"\n");
    t
}

fn client_headers() -> Vec<httparse::Header<'static>> {
    [
        ("Host", "shop.example.com"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ),
        ("Accept", "application/json"),
        ("Accept-Encoding", "gzip, br"),
        ("Accept-Language", "en-GB,en;q=0.9"),
        ("Cookie", "sid=3f9a1c0e5b7d4a2f; theme=dark"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("Connection", "keep-alive"),
    ]
    .into_iter()
    .map(|(name, value)| httparse::Header {
        name,
        value: value.as_bytes(),
    })
    .collect()
}

fn upstream_headers() -> Vec<httparse::Header<'static>> {
    [
        ("Content-Type", "application/json"),
        ("Content-Length", "1000"),
        ("Cache-Control", "max-age=60"),
        ("X-Request-Id", "made-upstream"),
        ("Date", "Wed, 02 Dec 2026 18:00:00 GMT"),
    ]
    .into_iter()
    .map(|(name, value)| httparse::Header {
        name,
        value: value.as_bytes(),
    })
    .collect()
}

fn edge(c: &mut Criterion) {
    let table = Table::from_toml(&table_of_200());
    let headers = client_headers();
    let client = Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)));
    // A split route near the end of the table, and the catch-all.
    assert!(
        table
            .route(
                &Method::GET,
                "/api/area6/things186/42",
                Some("page=2"),
                &headers,
                client
            )
            .is_some()
    );
    c.bench_function("route: 200 routes, split route near the end", |b| {
        b.iter(|| {
            table.route(
                black_box(&Method::GET),
                black_box("/api/area6/things186/42"),
                black_box(Some("page=2")),
                &headers,
                client,
            )
        })
    });
    c.bench_function("route: 200 routes, falls to the catch-all", |b| {
        b.iter(|| {
            table.route(
                black_box(&Method::GET),
                black_box("/checkout/cart"),
                None,
                &headers,
                client,
            )
        })
    });
    c.bench_function("route: a path that needs normalizing", |b| {
        b.iter(|| {
            table.route(
                black_box(&Method::GET),
                black_box("/api/area6/./things186//42/../43"),
                None,
                &headers,
                client,
            )
        })
    });
    let mut out = Vec::with_capacity(1024);
    c.bench_function("request head: 8 client headers", |b| {
        b.iter(|| {
            out.clear();
            bench_support::upstream_request_head(
                &mut out,
                "GET",
                black_box("/api/area6/things186/42?page=2"),
                &headers,
                client,
            );
            out.len()
        })
    });
    let upstream = upstream_headers();
    c.bench_function("response head: 5 upstream headers", |b| {
        b.iter(|| {
            out.clear();
            bench_support::client_response_head(&mut out, black_box(200), &upstream, 1000);
            out.len()
        })
    });
    c.bench_function("failure: a refused connection's answer", |b| {
        b.iter(|| {
            out.clear();
            bench_support::connect_failure_answer(&mut out);
            out.len()
        })
    });
}

criterion_group!(benches, edge);
criterion_main!(benches);
