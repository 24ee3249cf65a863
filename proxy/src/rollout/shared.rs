//! Several proxies running one rollout, through Redis (`banyan run --rollout-redis URL`).
//!
//! Behind a load balancer every proxy serves a part of a route's traffic, and each must give the
//! route the same share. So, with Redis configured:
//! - the rollout's state (phase, step, the judging window) lives in Redis, and every proxy
//!   adopts what it reads there at each tick (every 250 ms), so all follow within a tick of a
//!   decision;
//! - one proxy decides: the holder of a lease (a key that expires 2 s after its holder stops
//!   renewing it, so another takes over when it dies). It judges each step on every proxy's
//!   traffic summed: each proxy publishes what its sides served so far (cumulative counters,
//!   under its own instance id, so a proxy that restarts adds a new entry and the sum never
//!   goes back);
//! - a state is written only over the revision it was derived from (a compare-and-set in one
//!   script), so an operator's action taken on any proxy and the decider's check never
//!   overwrite each other: the loser re-reads at the next tick;
//! - the history is one Redis list, which every proxy appends its events to.
//!
//! Keys, under a prefix `P`: `P:lease`, `P:state:<route>` (JSON), `P:observed:<route>:<plan>`
//! (hash: instance -> JSON), `P:history` (list of JSON entries, the newest 10,000).
//!
//! Without Redis nobody decides: a proxy that cannot reach it holds every share where it is
//! (traffic is served as before) and says so in its log, rather than judge alone on part of
//! the traffic while another proxy does the same.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::control::{Changes, Inputs, Observed, Rollouts, now_ms};
use super::store::{Entry, Saved};
use crate::reload::LiveTable;
use crate::shadow::results::Results;

const TICK: Duration = Duration::from_millis(250);
const LEASE_MS: u64 = 2_000;
const HISTORY_KEPT: isize = 10_000;

/// Takes or renews the lease: 1 when this instance holds it.
const LEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// Writes a state only over the revision it was derived from (ARGV[1]; empty: only where the
/// plan has no state yet). A state of another plan is replaced: the rollout was edited.
const WRITE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local c = cjson.decode(cur)
  if c['plan'] == ARGV[2] and (ARGV[1] == '' or tostring(c['rev']) ~= ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
";

#[derive(Clone)]
pub(crate) struct Shared {
    conn: ConnectionManager,
    prefix: String,
    /// This process, among the proxies sharing the rollouts.
    instance: String,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .finish()
    }
}

/// A state another write got to first: the change was not made.
#[derive(Debug)]
pub(crate) struct Conflict(pub(crate) String);

impl Shared {
    pub(crate) async fn connect(url: &str, prefix: &str) -> anyhow::Result<Shared> {
        let conn = service_kit::session::connect_redis(url).await?;
        let instance = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        Ok(Shared {
            conn,
            prefix: prefix.trim_end_matches(':').to_owned(),
            instance,
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

    async fn lease(&self) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let held: i64 = redis::Script::new(LEASE)
            .key(self.key(&["lease"]))
            .arg(&self.instance)
            .arg(LEASE_MS)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    /// Publishes what this proxy's rolling routes served so far.
    async fn publish(
        &self,
        plans: &[(String, String)],
        observed: &BTreeMap<String, Observed>,
    ) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for (route, plan) in plans {
            let Some(o) = observed.get(route) else {
                continue;
            };
            let key = self.key(&["observed", route, plan]);
            let json = serde_json::to_string(o).unwrap_or_default();
            pipe.hset(&key, &self.instance, json).ignore();
            pipe.expire(&key, 7 * 24 * 3600).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await
    }

    /// Every proxy's traffic, summed per route.
    async fn summed(
        &self,
        plans: &[(String, String)],
    ) -> redis::RedisResult<BTreeMap<String, Observed>> {
        let mut conn = self.conn.clone();
        let mut out = BTreeMap::new();
        for (route, plan) in plans {
            let all: BTreeMap<String, String> =
                conn.hgetall(self.key(&["observed", route, plan])).await?;
            let sum = all
                .values()
                .filter_map(|j| serde_json::from_str::<Observed>(j).ok())
                .fold(Observed::default(), |acc, o| acc.plus(&o));
            out.insert(route.clone(), sum);
        }
        Ok(out)
    }

    async fn states(
        &self,
        plans: &[(String, String)],
    ) -> redis::RedisResult<BTreeMap<String, Saved>> {
        let mut conn = self.conn.clone();
        let mut out = BTreeMap::new();
        for (route, _) in plans {
            let json: Option<String> = conn.get(self.key(&["state", route])).await?;
            match json.map(|j| serde_json::from_str::<Saved>(&j)) {
                Some(Ok(saved)) => {
                    out.insert(route.clone(), saved);
                }
                Some(Err(e)) => {
                    tracing::error!(route, error = %e, "the rollout state in Redis does not read; the decider writes a new one at its next change");
                }
                None => {}
            }
        }
        Ok(out)
    }

    /// Writes what a tick or an action decided: each state over its revision, and the history
    /// entries of the states that were written (or that carry no state). Returns the routes
    /// whose write lost to another.
    pub(crate) async fn keep(
        &self,
        changes: Changes,
        rollouts: &Rollouts,
    ) -> redis::RedisResult<Vec<Conflict>> {
        let mut conn = self.conn.clone();
        let mut lost = Vec::new();
        for (route, saved, expected) in &changes.states {
            let json = serde_json::to_string(saved).unwrap_or_default();
            let written: i64 = redis::Script::new(WRITE)
                .key(self.key(&["state", route]))
                .arg(expected.map(|r| r.to_string()).unwrap_or_default())
                .arg(&saved.plan)
                .arg(json)
                .invoke_async(&mut conn)
                .await?;
            if written == 0 {
                lost.push(Conflict(route.clone()));
            }
        }
        let entries: Vec<&Entry> = changes
            .entries
            .iter()
            .filter(|e| !lost.iter().any(|c| c.0 == e.route))
            .collect();
        if !entries.is_empty() {
            let key = self.key(&["history"]);
            let mut pipe = redis::pipe();
            for e in &entries {
                pipe.rpush(&key, serde_json::to_string(e).unwrap_or_default())
                    .ignore();
            }
            pipe.ltrim(&key, -HISTORY_KEPT, -1).ignore();
            pipe.query_async::<()>(&mut conn).await?;
        }
        for e in entries {
            rollouts.record(e);
        }
        Ok(lost)
    }

    /// The shared history, oldest first, and how many entries did not read.
    pub(crate) async fn history(&self) -> redis::RedisResult<(Vec<Entry>, usize)> {
        self.history_from(0).await
    }

    /// The newest `n` entries of the shared history, oldest first.
    pub(crate) async fn recent_history(&self, n: isize) -> redis::RedisResult<Vec<Entry>> {
        Ok(self.history_from(-n.max(1)).await?.0)
    }

    async fn history_from(&self, start: isize) -> redis::RedisResult<(Vec<Entry>, usize)> {
        let mut conn = self.conn.clone();
        let lines: Vec<String> = conn.lrange(self.key(&["history"]), start, -1).await?;
        let mut skipped = 0;
        let entries = lines
            .iter()
            .filter_map(|l| {
                let e = serde_json::from_str(l).ok();
                skipped += usize::from(e.is_none());
                e
            })
            .collect();
        Ok((entries, skipped))
    }

    /// One tick: publish, take the lease, read, decide (if this proxy holds the lease), write.
    async fn tick(&self, live: &LiveTable, results: &Results) -> redis::RedisResult<bool> {
        let table = live.current();
        let rollouts = live.rollouts();
        let plans = Rollouts::plans(&table);
        self.publish(&plans, &rollouts.observe(&table, results))
            .await?;
        let decides = self.lease().await?;
        let states = self.states(&plans).await?;
        let observed = self.summed(&plans).await?;
        let inputs = Inputs { decides, states };
        let mut changes = rollouts.tick(&table, now_ms(), Some(&inputs), &observed);
        changes.entries.extend(rollouts.take_outbox());
        self.keep(changes, rollouts).await?;
        Ok(decides)
    }
}

/// The controller's loop when rollouts are shared: connects (retrying while Redis is down;
/// no share moves meanwhile), then ticks every [`TICK`].
pub(crate) async fn run(live: Arc<LiveTable>, results: Arc<Results>, url: String, prefix: String) {
    let shared = loop {
        match Shared::connect(&url, &prefix).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the Redis rollouts are shared through; no rollout moves until it answers");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    live.rollouts().share(shared.clone());
    tracing::info!(
        prefix,
        instance = shared.instance,
        "rollouts are shared through Redis"
    );
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut failing, mut deciding) = (false, false);
    loop {
        tick.tick().await;
        match shared.tick(&live, &results).await {
            Ok(decides) => {
                if failing {
                    tracing::info!("the Redis rollouts are shared through answers again");
                    failing = false;
                }
                if decides != deciding {
                    tracing::info!(
                        decides,
                        "rollout lease {}",
                        if decides {
                            "taken: this proxy decides"
                        } else {
                            "held by another proxy: this one follows"
                        }
                    );
                    deciding = decides;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot reach the Redis rollouts are shared through; every share holds until it answers");
                    failing = true;
                }
            }
        }
    }
}
