//! An HTTP hop in front of a real service that a test can turn bad: every request answered
//! 503 without reaching the service, every n-th answered 500, every request forwarded late,
//! every answer held as long again (a slower service), a planted difference in every JSON
//! answer, or the port closed as a dead process's is. The service behind it stays real (its database, its sync); only the
//! way it answers changes, so a test can walk one process through the failures a new service
//! has in production and count what reached it in each.
//!
//! [`crate::relay::Relay`] cuts TCP and cannot answer; this one speaks HTTP/1.1 (keep-alive),
//! so the proxy in front of it sees answers, not just a link that went away.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How the hop answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwards every request and its answer unchanged.
    Pass,
    /// Answers every request 503 in the catalog error format; nothing reaches the service.
    Unavailable,
    /// Forwards every request after holding it this long (the service still gets it).
    Late(Duration),
    /// Answers every n-th request 500 without passing it on; forwards the others.
    FailEvery(u64),
    /// Forwards every request, then holds the answer as long again as the service took, times
    /// `factor - 1`: a service `factor` times slower.
    Slower(u32),
    /// Forwards every request and plants a difference in its JSON answer: `price_cents` one
    /// cent more, wherever it stands.
    Plant,
}

struct Shared {
    target: String,
    client: reqwest::Client,
    mode: AtomicU8,
    /// The mode's figure: the delay of `Late` (ms), the n of `FailEvery`, the factor of
    /// `Slower`.
    late_ms: AtomicU64,
    /// Requests the hop received (in every mode).
    received: AtomicU64,
    /// Requests it passed on to the service.
    forwarded: AtomicU64,
}

pub struct FaultyHop {
    /// Where the proxy should send what is meant for the service.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    /// The accept loop, which owns every connection: aborting it closes the port and each
    /// socket.
    accept: Option<JoinHandle<()>>,
}

const PASS: u8 = 0;
const UNAVAILABLE: u8 = 1;
const LATE: u8 = 2;
const FAIL_EVERY: u8 = 3;
const SLOWER: u8 = 4;
const PLANT: u8 = 5;

impl FaultyHop {
    /// Listens on a free loopback port in front of `target` (`http://host:port`), passing
    /// everything on.
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shared = Arc::new(Shared {
            target: target.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            mode: AtomicU8::new(PASS),
            late_ms: AtomicU64::new(0),
            received: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        });
        let mut hop = FaultyHop {
            addr: listener.local_addr().unwrap(),
            shared,
            accept: None,
        };
        hop.serve(listener);
        hop
    }

    pub fn set(&self, fault: Fault) {
        let mode = match fault {
            Fault::Pass => PASS,
            Fault::Unavailable => UNAVAILABLE,
            Fault::Late(d) => {
                self.shared
                    .late_ms
                    .store(d.as_millis() as u64, Ordering::SeqCst);
                LATE
            }
            Fault::FailEvery(n) => {
                self.shared.late_ms.store(n.max(1), Ordering::SeqCst);
                FAIL_EVERY
            }
            Fault::Slower(factor) => {
                self.shared
                    .late_ms
                    .store(u64::from(factor.max(1)), Ordering::SeqCst);
                SLOWER
            }
            Fault::Plant => PLANT,
        };
        self.shared.mode.store(mode, Ordering::SeqCst);
    }

    /// Requests received so far, whatever the mode.
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::SeqCst)
    }

    /// Requests passed on to the service so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Closes the port and every open connection: a connection attempt is refused, as it is
    /// by a host whose process died.
    pub fn refuse(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebinding the hop's port");
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let shared = Arc::clone(&self.shared);
        // The connections live in the accept loop's own set: aborting the loop drops the set,
        // and dropping a set aborts its tasks, so `refuse` ends every socket at once.
        self.accept = Some(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                while conns.try_join_next().is_some() {}
                let shared = Arc::clone(&shared);
                let service = hyper::service::service_fn(move |req| {
                    let shared = Arc::clone(&shared);
                    async move { Ok::<_, Infallible>(answer(&shared, req).await) }
                });
                conns.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }
}

impl Drop for FaultyHop {
    fn drop(&mut self) {
        self.refuse();
    }
}

async fn answer(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let n = shared.received.fetch_add(1, Ordering::SeqCst) + 1;
    let mode = shared.mode.load(Ordering::SeqCst);
    let figure = shared.late_ms.load(Ordering::SeqCst);
    let refuse = |status: u16, code: &str, message: &str| {
        let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    match mode {
        UNAVAILABLE => {
            return refuse(503, "unavailable", "the service is down (test fault)");
        }
        FAIL_EVERY if n.is_multiple_of(figure) => {
            return refuse(500, "internal", "test fault");
        }
        LATE => {
            tokio::time::sleep(Duration::from_millis(figure)).await;
        }
        _ => {}
    }
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let resp = match forward(shared, req).await {
        Ok(resp) => resp,
        Err(e) => {
            return Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(format!("hop: {e}"))))
                .unwrap();
        }
    };
    match mode {
        SLOWER => {
            let took = started.elapsed();
            tokio::time::sleep(took * (figure.saturating_sub(1)) as u32).await;
            resp
        }
        PLANT => plant(resp).await,
        _ => resp,
    }
}

/// The answer with `price_cents` one cent more wherever it stands in its JSON.
async fn plant(resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    fn bump(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    match (k.as_str(), v.as_i64()) {
                        ("price_cents", Some(p)) => *v = serde_json::json!(p + 1),
                        _ => bump(v),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(bump),
            _ => {}
        }
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Full::new(bytes));
    };
    bump(&mut json);
    let out = serde_json::to_vec(&json).unwrap();
    parts.headers.remove("content-length");
    Response::from_parts(parts, Full::new(Bytes::from(out)))
}

async fn forward(shared: &Shared, req: Request<Incoming>) -> anyhow::Result<Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = shared
        .client
        .request(parts.method, format!("{}{path}", shared.target));
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name.as_str()) {
            out = out.header(name, value);
        }
    }
    let resp = out.body(body).send().await?;
    let mut back = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if !is_hop_by_hop(name.as_str()) {
            back = back.header(name, value);
        }
    }
    Ok(back.body(Full::new(resp.bytes().await?))?)
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "host" | "te"
    )
}
