//! Read caches that never serve a value older than this service's own last write.
//!
//! Every cached value (a product by id, a listing page, the bestseller list) is stored under
//! the current *generation*, a counter in the cache, and every write bumps the generation
//! after it commits. A reader that raced a write can only have cached under the old generation,
//! which no later reader looks at, so after a write returns, no reader sees an older value.
//! If the bump fails (Redis unreachable), this process bypasses the cache until the longest
//! TTL has passed, so stale entries written before the failure expire before it trusts the
//! cache again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use service_kit::cache::Cache;

pub const PRODUCT_TTL: Duration = Duration::from_secs(60);
pub const LIST_TTL: Duration = Duration::from_secs(60);
pub const BESTSELLERS_TTL: Duration = Duration::from_secs(300);
const LONGEST_TTL: Duration = BESTSELLERS_TTL;
const GENERATION_KEY: &str = "generation";

#[derive(Clone, Debug)]
pub struct ReadCache {
    cache: Cache,
    started: Instant,
    /// Milliseconds since `started` until which the cache is bypassed; 0: not bypassed.
    bypass_until_ms: Arc<AtomicU64>,
}

impl ReadCache {
    pub fn new(cache: Cache) -> Self {
        Self {
            cache,
            started: Instant::now(),
            bypass_until_ms: Arc::default(),
        }
    }

    fn bypassed(&self) -> bool {
        let until = self.bypass_until_ms.load(Ordering::Relaxed);
        until != 0 && (self.started.elapsed().as_millis() as u64) < until
    }

    async fn generation(&self) -> Option<String> {
        if self.bypassed() {
            return None;
        }
        Some(
            self.cache
                .get(GENERATION_KEY)
                .await
                .unwrap_or_else(|| "0".to_owned()),
        )
    }

    /// The cached value of `key`, or `load()`'s result, cached for `ttl`.
    pub async fn get_or_load<T, E, F>(&self, key: &str, ttl: Duration, load: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: std::future::Future<Output = Result<T, E>>,
    {
        let Some(generation) = self.generation().await else {
            return load.await;
        };
        let full_key = format!("g{generation}:{key}");
        if let Some(hit) = self.cache.get(&full_key).await
            && let Ok(value) = serde_json::from_str(&hit)
        {
            return Ok(value);
        }
        let value = load.await?;
        if let Ok(json) = serde_json::to_string(&value) {
            self.cache.set(&full_key, json, ttl).await;
        }
        Ok(value)
    }

    /// After a committed write: everything cached so far is stale.
    pub async fn invalidate(&self) {
        if self.cache.incr(GENERATION_KEY).await.is_none() {
            let until = self.started.elapsed() + LONGEST_TTL;
            self.bypass_until_ms
                .store(until.as_millis() as u64, Ordering::Relaxed);
            tracing::error!("cache invalidation failed; bypassing the cache for {LONGEST_TTL:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_hides_everything_cached_before_it() {
        let c = ReadCache::new(Cache::local());
        let v: Result<i64, ()> = c.get_or_load("k", PRODUCT_TTL, async { Ok(1) }).await;
        assert_eq!(v, Ok(1));
        let cached: Result<i64, ()> = c.get_or_load("k", PRODUCT_TTL, async { Ok(2) }).await;
        assert_eq!(cached, Ok(1), "served from the cache");
        c.invalidate().await;
        let fresh: Result<i64, ()> = c.get_or_load("k", PRODUCT_TTL, async { Ok(3) }).await;
        assert_eq!(fresh, Ok(3));
    }
}
