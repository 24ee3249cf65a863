//! Active health checks: one loop for the whole proxy that probes, every interval, each backend
//! of each upstream with a `health` section in the *current* table (so a reload changes what is
//! probed without restarting anything).
//!
//! A probe is a plain `GET <path> HTTP/1.1` with `Connection: close`; a 2xx status line within
//! the timeout is up, anything else is down. The answer is read to its end (at most
//! [`MAX_ANSWER`]): Banyan's services put how far their sync is behind the monolith in it
//! (`sync.lag.<stream>.lag_ms`, from `service_kit::outbox::lag_report`), which becomes
//! `banyan_upstream_sync_lag_seconds` and the dashboard's data section. A backend that says
//! nothing of a sync simply has no such figure.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::HealthSpec;
use crate::metrics::Metrics;
use crate::reload::LiveTable;

/// The most of a health answer that is read.
const MAX_ANSWER: usize = 64 * 1024;

/// What one probe found.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Probed {
    /// The backend answered 2xx in time.
    pub(crate) up: bool,
    /// The sync lags its answer reported: stream -> seconds.
    pub(crate) lags: Vec<(String, f64)>,
}

/// One probe. The answer is judged on what arrived within the timeout: a backend that keeps
/// the connection open after its answer (or sends a head and stalls) is judged by its status
/// line, as a probe that read only the status line judged it.
pub(crate) async fn probe(addr: SocketAddr, spec: &HealthSpec) -> Probed {
    let mut answer = Vec::with_capacity(1024);
    let attempt = async {
        let mut conn = TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: banyan-health-check\r\nConnection: close\r\n\r\n",
            spec.path
        );
        conn.write_all(req.as_bytes()).await.ok()?;
        let mut chunk = [0u8; 4096];
        while answer.len() < MAX_ANSWER && !complete(&answer) {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
        Some(())
    };
    let _ = tokio::time::timeout(spec.timeout, attempt).await;
    read_answer(&answer)
}

/// Whether `answer` holds a whole head and the `Content-Length` bytes it announces.
fn complete(answer: &[u8]) -> bool {
    let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..at]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| answer.len() >= at + 4 + len)
}

/// The status line's verdict and the sync lags of a health answer's JSON body.
fn read_answer(answer: &[u8]) -> Probed {
    let up = answer.starts_with(b"HTTP/1.") && answer.get(9) == Some(&b'2');
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| &answer[at + 4..]);
    let lags = body
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| {
            v["sync"]["lag"].as_object().map(|streams| {
                streams
                    .iter()
                    .filter_map(|(stream, l)| {
                        Some((stream.clone(), l["lag_ms"].as_f64()? / 1000.0))
                    })
                    .collect()
            })
        })
        .unwrap_or_default();
    Probed { up, lags }
}

/// Runs until the process stops.
pub(crate) async fn run(live: Arc<LiveTable>, metrics: Arc<Metrics>) {
    let mut next_due: HashMap<(SocketAddr, HealthSpec), Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let table = live.current();
        let now = Instant::now();
        let mut wanted = Vec::new();
        for pool in table.pools.values() {
            let Some(spec) = &pool.spec.health else {
                continue;
            };
            for backend in &pool.backends {
                let key = (backend.addr, spec.clone());
                let due = next_due.entry(key.clone()).or_insert(now);
                wanted.push(key);
                if *due > now {
                    continue;
                }
                *due = now + spec.interval;
                let (backend, spec, metrics, upstream) = (
                    backend.clone(),
                    spec.clone(),
                    metrics.clone(),
                    pool.name().to_owned(),
                );
                tokio::spawn(async move {
                    let Probed { up, lags } = probe(backend.addr, &spec).await;
                    metrics.sync_lags(&upstream, backend.addr, &lags);
                    if backend.set_probe_result(up) {
                        if up {
                            tracing::info!(upstream, backend = %backend.addr, "backend is healthy again");
                        } else {
                            tracing::warn!(upstream, backend = %backend.addr, "backend failed its health check");
                        }
                    }
                    metrics.backend_health(&upstream, backend.addr, up);
                });
            }
        }
        next_due.retain(|k, _| wanted.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_health_answer_gives_its_status_and_sync_lags() {
        let body = r#"{"status":"ok","sync":{"lag":{"products from the monolith":{"lag_ms":250,"caught_up":true,"failing":false}}}}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let p = read_answer(answer.as_bytes());
        assert!(p.up);
        assert_eq!(
            p.lags,
            vec![("products from the monolith".to_owned(), 0.25)]
        );
        let down = read_answer(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}");
        assert_eq!(down, Probed::default());
        assert_eq!(read_answer(b"garbage"), Probed::default());
    }
}
