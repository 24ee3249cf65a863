//! A test upstream that records every request it gets, for shadow tests: which requests reached
//! the candidate, with which marker, request id and body, and when it is told to, holds them
//! (a candidate that does not answer until released) or fails them.
//!
//! Its answer depends only on the request (method, target, body length) and on the recorder's
//! `flavour`, so a primary and a candidate with the same flavour give byte-identical answers and
//! different flavours differ in exactly one field.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::any;
use serde_json::json;
use tokio::sync::{Semaphore, oneshot, watch};

/// What the recorder does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer at once.
    Answer,
    /// Wait for [`Recorder::release`] before answering.
    Hold,
    /// Answer after this long.
    Delay(Duration),
    /// Answer 500.
    Fail,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// `x-banyan-shadow`, when present.
    pub marker: Option<String>,
    pub request_id: Option<String>,
    pub forwarded_for: Option<String>,
    pub header: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Clone)]
struct Shared {
    flavour: String,
    behaviour: Behaviour,
    seen: Arc<Mutex<Vec<Seen>>>,
    arrived: Arc<watch::Sender<()>>,
    gate: Arc<Semaphore>,
}

pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    arrived: Arc<watch::Sender<()>>,
    gate: Arc<Semaphore>,
    stop: Option<oneshot::Sender<()>>,
}

async fn handle(State(s): State<Shared>, req: Request) -> impl IntoResponse {
    let (parts, body) = req.into_parts();
    let h = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body: Bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    s.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        marker: h("x-banyan-shadow"),
        request_id: h("x-request-id"),
        forwarded_for: h("x-forwarded-for"),
        header: h("x-test"),
        body: body.to_vec(),
    });
    // Wakes whoever waits in `wait_until`.
    s.arrived.send_replace(());
    match s.behaviour {
        Behaviour::Answer => {}
        Behaviour::Hold => {
            let _ = s.gate.acquire().await.map(|p| p.forget());
        }
        Behaviour::Delay(d) => tokio::time::sleep(d).await,
        Behaviour::Fail => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": {"code": "internal", "message": "failing on purpose"}})),
            );
        }
    }
    (
        StatusCode::OK,
        axum::Json(json!({
            "method": parts.method.as_str(),
            "target": target,
            "body_len": body.len(),
            "flavour": s.flavour,
            "items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}],
        })),
    )
}

impl Recorder {
    pub async fn start(flavour: &str, behaviour: Behaviour) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Semaphore::new(0));
        let arrived = Arc::new(watch::channel(()).0);
        let app = Router::new().fallback(any(handle)).with_state(Shared {
            flavour: flavour.to_owned(),
            behaviour,
            seen: seen.clone(),
            arrived: arrived.clone(),
            gate: gate.clone(),
        });
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Recorder {
            addr,
            seen,
            arrived,
            gate,
            stop: Some(tx),
        }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits until `done` holds for the requests seen so far (60 s at most: copies for a candidate
    /// come from the proxy's shadow thread, which runs at idle priority and can be kept waiting on
    /// a busy machine); panics with `what` otherwise.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Seen]) -> bool) {
        let mut rx = self.arrived.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            rx.borrow_and_update();
            if done(&self.seen.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                panic!("{what}: not after 60 s ({} requests seen)", self.count());
            }
        }
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_count(&self, n: usize) {
        self.wait_until(&format!("{n} requests"), |s| s.len() >= n)
            .await;
    }

    /// Lets every held request (and all later ones) answer.
    pub fn release(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.release();
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
