//! Active health checks: one loop for the whole proxy that probes, every interval, each backend
//! of each upstream with a `health` section in the *current* table (so a reload changes what is
//! probed without restarting anything).
//!
//! A probe is a plain `GET <path> HTTP/1.1` with `Connection: close`; a 2xx status line within
//! the timeout is up, anything else is down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::HealthSpec;
use crate::metrics::Metrics;
use crate::reload::LiveTable;

/// One probe. `true` when the backend answered 2xx in time.
pub(crate) async fn probe(addr: SocketAddr, spec: &HealthSpec) -> bool {
    let attempt = async {
        let mut conn = TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: banyan-health-check\r\nConnection: close\r\n\r\n",
            spec.path
        );
        conn.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 16];
        let mut n = 0;
        while n < 12 {
            let read = conn.read(&mut head[n..]).await.ok()?;
            if read == 0 {
                break;
            }
            n += read;
        }
        let line = std::str::from_utf8(&head[..n]).ok()?;
        Some(line.starts_with("HTTP/1.") && line.get(9..10) == Some("2"))
    };
    matches!(
        tokio::time::timeout(spec.timeout, attempt).await,
        Ok(Some(true))
    )
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
                    let up = probe(backend.addr, &spec).await;
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
