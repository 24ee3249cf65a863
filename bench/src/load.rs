//! The load generator: `connections` keep-alive HTTP/1.1 connections, one request in flight on
//! each.
//!
//! - Closed loop (`rate: None`): each connection sends its next request as soon as the previous
//!   answer is read. Measures throughput; latency is per request.
//! - Open loop (`rate: Some(r)`): requests are *due* at a fixed total rate, spread over the
//!   connections. Latency is measured from when a request was sent (the timer that releases it
//!   has a millisecond's granularity, which would drown the proxy's own sub-millisecond figures),
//!   and requests sent more than [`LATE`] after they were due are counted: a stall that held
//!   requests back shows there instead of hiding.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub path: String,
    pub connections: usize,
    /// Requests per second over all connections; `None`: closed loop.
    pub rate: Option<f64>,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    /// 2xx answers.
    pub ok: u64,
    /// Transport errors and non-2xx answers.
    pub errors: u64,
    pub elapsed: Duration,
    /// Latency in microseconds, from when the request was sent.
    pub latency: Histogram<u64>,
    /// Open loop: requests sent more than [`LATE`] after they were due (the schedule slipped:
    /// a stall the latency figures alone would hide).
    pub late: u64,
}

pub const LATE: Duration = Duration::from_millis(5);

impl Outcome {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency at quantile `q` (0..1), in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn merge(&mut self, other: &Outcome) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.late += other.late;
        self.elapsed += other.elapsed;
        self.latency
            .add(&other.latency)
            .expect("same histogram bounds");
    }

    pub fn empty() -> Self {
        Outcome {
            ok: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency: histogram(),
            late: 0,
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Option<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn one(sender: &mut Sender, addr: SocketAddr, path: &str) -> bool {
    if sender.ready().await.is_err() {
        return false;
    }
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    match sender.send_request(req).await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            ok && resp.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

/// Runs `plan` and returns what happened.
pub async fn run(plan: &Plan) -> Outcome {
    let start = Instant::now();
    let deadline = start + plan.duration;
    let mut tasks = Vec::new();
    for c in 0..plan.connections {
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::empty();
            let interval = plan
                .rate
                .map(|r| Duration::from_secs_f64(plan.connections as f64 / r));
            // Spread the connections' schedules over one interval.
            let offset =
                interval.map_or(Duration::ZERO, |i| i * c as u32 / plan.connections as u32);
            let mut sender = connect(plan.addr).await;
            let mut k: u32 = 0;
            loop {
                let due = match interval {
                    Some(i) => start + offset + i * k,
                    None => Instant::now(),
                };
                if due >= deadline {
                    break;
                }
                k += 1;
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                let sent = Instant::now();
                if sent.duration_since(due) > LATE {
                    out.late += 1;
                }
                let ok = match &mut sender {
                    Some(s) => one(s, plan.addr, &plan.path).await,
                    None => false,
                };
                let took = sent.elapsed();
                if ok {
                    out.ok += 1;
                    let _ = out.latency.record(took.as_micros().max(1) as u64);
                } else {
                    out.errors += 1;
                    sender = connect(plan.addr).await;
                }
            }
            out
        }));
    }
    let mut total = Outcome::empty();
    for t in tasks {
        if let Ok(o) = t.await {
            total.merge(&o);
        }
    }
    total.elapsed = start.elapsed();
    total
}
