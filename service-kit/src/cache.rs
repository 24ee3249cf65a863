//! A small TTL cache for the read caches the seeds ask for (bestsellers for 5 minutes, ...).
//!
//! Redis when configured, so several instances of a service share one cache and one
//! invalidation; otherwise an in-process map, which is right for a single embedded process.
//! Values are strings (JSON); a cache error is never a request error: callers fall back to the
//! database and the error is logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::session::within_deadline;

/// Upper bound on in-process entries; past it, expired entries are dropped, then everything.
const LOCAL_MAX_ENTRIES: usize = 10_000;
/// A cache that does not answer quickly is worse than none: the database is the fallback.
const REDIS_DEADLINE: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub enum Cache {
    Redis {
        conn: ConnectionManager,
        /// e.g. `banyan:monolith:cache:`
        prefix: String,
    },
    Local(Arc<Mutex<HashMap<String, (Instant, String)>>>),
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cache::Redis { prefix, .. } => write!(f, "Cache::Redis({prefix:?})"),
            Cache::Local(_) => write!(f, "Cache::Local"),
        }
    }
}

impl Cache {
    pub fn local() -> Self {
        Cache::Local(Arc::default())
    }

    pub async fn get(&self, key: &str) -> Option<String> {
        match self {
            Cache::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                match conn
                    .get::<_, Option<String>>(format!("{prefix}{key}"))
                    .await
                {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "cache read failed; using the database");
                        None
                    }
                }
            }
            Cache::Local(map) => {
                let map = map.lock().unwrap();
                map.get(key)
                    .filter(|(expires, _)| *expires > Instant::now())
                    .map(|(_, v)| v.clone())
            }
        }
    }

    pub async fn set(&self, key: &str, value: String, ttl: Duration) {
        match self {
            Cache::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let set =
                    conn.set_ex::<_, _, ()>(format!("{prefix}{key}"), value, ttl.as_secs().max(1));
                let result = within_deadline(set, REDIS_DEADLINE).await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "cache write failed");
                }
            }
            Cache::Local(map) => {
                let mut map = map.lock().unwrap();
                if map.len() >= LOCAL_MAX_ENTRIES {
                    let now = Instant::now();
                    map.retain(|_, (expires, _)| *expires > now);
                    if map.len() >= LOCAL_MAX_ENTRIES {
                        map.clear();
                    }
                }
                map.insert(key.to_owned(), (Instant::now() + ttl, value));
            }
        }
    }

    /// Atomically increments the counter at `key` (created at 0) and returns the new value;
    /// `None` when the cache cannot be reached.
    pub async fn incr(&self, key: &str) -> Option<i64> {
        match self {
            Cache::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let op = conn.incr::<_, _, i64>(format!("{prefix}{key}"), 1);
                match within_deadline(op, crate::session::REDIS_DEADLINE).await {
                    Ok(n) => Some(n),
                    Err(e) => {
                        tracing::error!(error = %e, key, "cache counter update failed");
                        None
                    }
                }
            }
            Cache::Local(map) => {
                let mut map = map.lock().unwrap();
                let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
                let entry = map.entry(key.to_owned()).or_insert((far, "0".to_owned()));
                let n = entry.1.parse::<i64>().unwrap_or(0) + 1;
                entry.1 = n.to_string();
                Some(n)
            }
        }
    }

    /// Drops `key`. Returns false when the invalidation could not be made (Redis down): the
    /// caller should treat the cache as unreliable and log it.
    pub async fn delete(&self, key: &str) -> bool {
        match self {
            Cache::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                // Invalidation gets the session deadline: it matters more than a cache read.
                let del = conn.del::<_, ()>(format!("{prefix}{key}"));
                let result = within_deadline(del, crate::session::REDIS_DEADLINE).await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, key, "cache invalidation failed");
                }
                result.is_ok()
            }
            Cache::Local(map) => {
                map.lock().unwrap().remove(key);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_cache_expires_and_deletes() {
        let c = Cache::local();
        c.set("a", "1".into(), Duration::from_secs(60)).await;
        c.set("b", "2".into(), Duration::ZERO).await;
        assert_eq!(c.get("a").await.as_deref(), Some("1"));
        assert_eq!(c.get("b").await, None);
        assert!(c.delete("a").await);
        assert_eq!(c.get("a").await, None);
        assert_eq!(c.incr("gen").await, Some(1));
        assert_eq!(c.incr("gen").await, Some(2));
        assert_eq!(c.get("gen").await.as_deref(), Some("2"));
    }
}
