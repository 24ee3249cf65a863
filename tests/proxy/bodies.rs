use banyan_tests::origin::Origin;
use banyan_tests::proxy::{spawn_proxy, table};
use futures::StreamExt;

const FIFTY_MB: u64 = 50 * 1024 * 1024;

/// 50 MB up and 50 MB down pass through whole, and the proxy's resident memory grows by less
/// than 20 MB: bodies are streamed, never buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_through_without_buffering() {
    let origin = Origin::start("a").await;
    let proxy = spawn_proxy(&table(
        &[("a", vec![origin.addr])],
        "[[route]]\nid = \"all\"\npath = \"/\"\nupstream = \"a\"\n",
    ))
    .await;
    assert_eq!(proxy.backend_of("/warm-up").await, "a");
    let (baseline, _) = proxy.memory();

    let r = proxy
        .client
        .get(proxy.url(&format!("/big/{FIFTY_MB}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        got += chunk.unwrap().len() as u64;
    }
    assert_eq!(got, FIFTY_MB);

    let chunks = futures::stream::iter(0..(FIFTY_MB / (1024 * 1024)))
        .map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 1024 * 1024])));
    let r = proxy
        .client
        .post(proxy.url("/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["received"], FIFTY_MB);

    let (_, peak) = proxy.memory();
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "proxy RSS: baseline {} MB, peak {} MB, growth {} MB",
        baseline >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(
        growth < 20 * 1024 * 1024,
        "proxy memory grew by {} MB",
        growth >> 20
    );
}
