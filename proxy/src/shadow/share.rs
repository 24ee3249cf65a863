//! Sharing results between proxy instances through Redis.
//!
//! Behind a load balancer several Banyan instances shadow the same route; a report must add them
//! up. Each instance keeps counting locally ([`super::results`]) and, every second, adds what it
//! counted since the last time to Redis in one `MULTI`/`EXEC` transaction (all or nothing, so a
//! failed flush is retried whole and never counted twice). Reports then read the sum.
//!
//! Keys, under a configurable prefix `P`:
//! - `P:routes` (set) and `P:endpoints:<route>` (set): what exists;
//! - `P:stats:<route>:<endpoint>` (hash): `c|<counter>`, and per field template `m|<field>`
//!   (mismatches), `n|<field>` (noise), `p|<field>` (primary pairs that differed);
//! - `P:examples:<route>:<endpoint>` (hash): field template -> latest example (JSON);
//! - `P:samples:<route>` (list, newest first, trimmed to [`MAX_SAMPLES`]).
//!
//! Redis being down never affects traffic: the delta stays in memory and is retried.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::results::{EndpointStats, Example, MAX_SAMPLES, Results, RouteStats, Sample, Snapshot};

/// Where shared results live.
#[derive(Clone)]
pub(crate) struct Shared {
    conn: ConnectionManager,
    prefix: String,
}

impl Shared {
    pub(crate) async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let conn = service_kit::session::connect_redis(url).await?;
        Ok(Self {
            conn,
            prefix: prefix.trim_end_matches(':').to_owned(),
        })
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// Adds a delta to the shared totals, atomically.
    pub(crate) async fn add(&self, delta: &Snapshot) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (route, r) in delta {
            pipe.sadd(self.key(&["routes"]), route).ignore();
            for (ep, e) in &r.endpoints {
                pipe.sadd(self.key(&["endpoints", route]), ep).ignore();
                let stats = self.key(&["stats", route, ep]);
                for (name, n) in e.counts.named() {
                    if n > 0 {
                        pipe.hincr(&stats, format!("c|{name}"), n).ignore();
                    }
                }
                for (field, f) in &e.fields {
                    for (tag, n) in [
                        ("m", f.mismatches),
                        ("n", f.noise),
                        ("p", f.primary_differed),
                    ] {
                        if n > 0 {
                            pipe.hincr(&stats, format!("{tag}|{field}"), n).ignore();
                        }
                    }
                    if let Some(ex) = &f.example {
                        let json = serde_json::to_string(ex).unwrap_or_default();
                        pipe.hset(self.key(&["examples", route, ep]), field, json)
                            .ignore();
                    }
                }
            }
            if !r.samples.is_empty() {
                let list = self.key(&["samples", route]);
                // Oldest first, so the newest ends up at the head.
                for s in r.samples.iter().rev() {
                    pipe.lpush(&list, serde_json::to_string(s).unwrap_or_default())
                        .ignore();
                }
                pipe.ltrim(&list, 0, MAX_SAMPLES as isize - 1).ignore();
            }
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await
    }

    /// The shared totals of every instance.
    pub(crate) async fn read(&self) -> redis::RedisResult<Snapshot> {
        use redis::AsyncCommands;
        let mut conn = self.conn.clone();
        let mut out = Snapshot::new();
        let routes: Vec<String> = conn.smembers(self.key(&["routes"])).await?;
        for route in routes {
            let mut r = RouteStats::default();
            let endpoints: Vec<String> = conn.smembers(self.key(&["endpoints", &route])).await?;
            for ep in endpoints {
                let stats: Vec<(String, u64)> =
                    conn.hgetall(self.key(&["stats", &route, &ep])).await?;
                let examples: Vec<(String, String)> =
                    conn.hgetall(self.key(&["examples", &route, &ep])).await?;
                let mut e = EndpointStats::default();
                for (k, n) in stats {
                    let Some((tag, name)) = k.split_once('|') else {
                        continue;
                    };
                    match tag {
                        "c" => {
                            e.counts.add_named(name, n);
                        }
                        "m" => e.fields.entry(name.to_owned()).or_default().mismatches += n,
                        "n" => e.fields.entry(name.to_owned()).or_default().noise += n,
                        "p" => {
                            e.fields
                                .entry(name.to_owned())
                                .or_default()
                                .primary_differed += n
                        }
                        _ => {}
                    }
                }
                for (field, json) in examples {
                    if let Ok(ex) = serde_json::from_str::<Example>(&json) {
                        e.fields.entry(field).or_default().example = Some(ex);
                    }
                }
                r.endpoints.insert(ep, e);
            }
            let samples: Vec<String> = conn.lrange(self.key(&["samples", &route]), 0, -1).await?;
            r.samples = samples
                .iter()
                .filter_map(|s| serde_json::from_str::<Sample>(s).ok())
                .collect();
            out.insert(route, r);
        }
        Ok(out)
    }

    /// Deletes every shared result under the prefix.
    pub(crate) async fn reset(&self) -> redis::RedisResult<()> {
        use redis::AsyncCommands;
        let mut conn = self.conn.clone();
        let routes: Vec<String> = conn.smembers(self.key(&["routes"])).await?;
        let mut keys = vec![self.key(&["routes"])];
        for route in routes {
            let endpoints: Vec<String> = conn.smembers(self.key(&["endpoints", &route])).await?;
            for ep in endpoints {
                keys.push(self.key(&["stats", &route, &ep]));
                keys.push(self.key(&["examples", &route, &ep]));
            }
            keys.push(self.key(&["endpoints", &route]));
            keys.push(self.key(&["samples", &route]));
        }
        conn.del::<_, ()>(keys).await
    }
}

/// Moves this instance's new results to Redis every `every` until the process stops. A failed
/// flush keeps the delta for the next one (logged once per outage, not every second).
pub(crate) async fn keep_flushing(results: Arc<Results>, shared: Shared, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let delta = results.take_pending();
        if delta.is_empty() {
            continue;
        }
        match shared.add(&delta).await {
            Ok(()) => {
                if failing {
                    tracing::info!("shadow results reach Redis again");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot add shadow results to Redis; keeping them until it is back");
                }
                failing = true;
                results.restore_pending(delta);
            }
        }
    }
}
