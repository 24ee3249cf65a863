//! A small upstream server for proxy tests, running inside the test process.
//!
//! Every answer names the origin (`{"backend": "a", ...}`) and echoes what the proxy forwarded
//! (method, path, query, `X-Forwarded-For`, `X-Request-Id`, `Via`), so a test can see where a
//! request went and how. `/health` answers 200; `/big/{bytes}` streams that many bytes;
//! `/upload` counts the bytes of a streamed body; `/slow/{ms}` answers after that long (counted in `hits` on arrival). It can be stopped and started again on the same
//! port, to play a backend that dies and comes back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::oneshot;

pub struct Origin {
    pub name: String,
    pub addr: SocketAddr,
    /// Requests answered (not counting `/health`).
    pub hits: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
struct OriginState {
    name: String,
    hits: Arc<AtomicU64>,
}

async fn echo(State(s): State<OriginState>, req: Request) -> impl IntoResponse {
    s.hits.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let h = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let answer = json!({
        "backend": s.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "x_forwarded_for": h("x-forwarded-for"),
        "x_forwarded_host": h("x-forwarded-host"),
        "x_forwarded_proto": h("x-forwarded-proto"),
        "x_request_id": h("x-request-id"),
        "via": h("via"),
    });
    // Read the body as a real backend does: hyper closes a kept-alive connection whose request
    // body was left unread when it had not fully arrived with the head, after answering it as
    // kept alive, so the proxy's next request on it (a POST, which is never retried) failed
    // now and then under load.
    let _ = axum::body::to_bytes(body, 1 << 20).await;
    axum::Json(answer)
}

async fn big(Path(bytes): Path<u64>) -> impl IntoResponse {
    const CHUNK: usize = 64 * 1024;
    let chunks = bytes / CHUNK as u64;
    let rest = (bytes % CHUNK as u64) as usize;
    let stream = futures::stream::iter(0..chunks)
        .map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; CHUNK])))
        .chain(futures::stream::iter(
            (rest > 0).then(|| Ok(bytes::Bytes::from(vec![b'x'; rest]))),
        ));
    (
        [("content-length", bytes.to_string())],
        Body::from_stream(stream),
    )
}

async fn upload(req: Request) -> impl IntoResponse {
    let mut stream = req.into_body().into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => total += c.len() as u64,
            Err(_) => {
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": "body"})),
                );
            }
        }
    }
    (
        axum::http::StatusCode::OK,
        axum::Json(json!({"received": total})),
    )
}

impl Origin {
    /// Starts on a free loopback port.
    pub async fn start(name: &str) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name).await
    }

    /// Starts on `addr` (e.g. the port of an origin that was stopped).
    pub async fn start_on(addr: SocketAddr, name: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("binding the origin");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let state = OriginState {
            name: name.to_owned(),
            hits: hits.clone(),
        };
        let app = Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/big/{bytes}", get(big))
            .route("/upload", post(upload))
            .route(
                "/slow/{ms}",
                get(
                    |State(s): State<OriginState>, Path(ms): Path<u64>| async move {
                        // Counted on arrival, so a test can tell the request is in flight.
                        s.hits.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                        "slow"
                    },
                ),
            )
            .fallback(any(echo))
            .with_state(state);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Origin {
            name: name.to_owned(),
            addr,
            hits,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops accepting and closes its connections (a crashed backend, as far as the proxy can
    /// tell).
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}
