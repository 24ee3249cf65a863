//! Continuous sync: keep this service's products current with the monolith's while the
//! monolith still owns product writes.
//!
//! The monolith's database records every change to `products` in `product_changes` (triggers,
//! so every writer is captured: the API, orders taking stock, hand-written SQL). This loop reads
//! that outbox after its checkpoint every [`POLL`], re-reads the *current* rows of the changed
//! products, upserts them here (only when the source row is newer, the same rule as the
//! backfill) or deletes the ones that are gone, bumps the cache generation, and advances the
//! checkpoint, all in one transaction here per round.
//!
//! Auto-increment sequence numbers are assigned at insert but become visible at commit, so a
//! lower number can appear after a higher one. The checkpoint therefore never passes a gap
//! younger than [`GAP_PATIENCE`]; a gap older than that is a rolled-back transaction. Applying
//! a change twice is harmless (it re-reads the current row), so waiting costs nothing but lag.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use service_kit::db::{Database, Sql};
use sqlx::{Any, QueryBuilder, Row};

use crate::cache::ReadCache;

pub const CHECKPOINT: &str = "sync:products";
pub const POLL: Duration = Duration::from_millis(200);
pub const GAP_PATIENCE: Duration = Duration::from_secs(5);
const BATCH: i64 = 1000;

/// One round: returns how many product rows were applied.
pub async fn round(
    source: &Database,
    target: &Database,
    cache: &ReadCache,
    gaps: &mut GapTracker,
) -> anyhow::Result<usize> {
    let mut q = Sql::new("SELECT position FROM sync_state WHERE name = ");
    q.bind(CHECKPOINT.to_owned());
    let checkpoint: i64 = q
        .build_scalar()
        .fetch_optional(&target.pool)
        .await?
        .unwrap_or(0);
    let changes = sqlx::query(
        "SELECT seq, product_id FROM product_changes WHERE seq > ? ORDER BY seq LIMIT ?",
    )
    .bind(checkpoint)
    .bind(BATCH)
    .fetch_all(&source.pool)
    .await?;
    if changes.is_empty() {
        return Ok(0);
    }
    let mut seqs = Vec::with_capacity(changes.len());
    let mut ids = BTreeSet::new();
    for c in &changes {
        seqs.push(c.try_get::<i64, _>("seq")?);
        ids.insert(c.try_get::<i64, _>("product_id")?);
    }
    let safe = gaps.safe_position(checkpoint, &seqs, Instant::now());

    let mut read = QueryBuilder::<Any>::new(
        "SELECT id, sku, name, description, category, price_cents, currency, stock, sales, created_at, updated_at FROM products WHERE id IN (",
    );
    let mut list = read.separated(", ");
    for id in &ids {
        list.push_bind(*id);
    }
    read.push(")");
    let rows = read.build().fetch_all(&source.pool).await?;
    let present: BTreeSet<i64> = rows
        .iter()
        .map(|r| r.try_get::<i64, _>("id"))
        .collect::<Result<_, _>>()?;

    let mut tx = target.pool.begin().await?;
    let mut applied = 0;
    if !rows.is_empty() {
        applied += crate::backfill::upsert(&rows)?
            .build()
            .execute(&mut *tx)
            .await?
            .rows_affected() as usize;
    }
    for gone in ids.difference(&present) {
        let mut del = Sql::new("DELETE FROM products WHERE id = ");
        del.bind(*gone);
        applied += del.build().execute(&mut *tx).await?.rows_affected() as usize;
    }
    if safe > checkpoint {
        let mut cp = Sql::new("INSERT INTO sync_state (name, position, updated_at) VALUES (");
        cp.bind(CHECKPOINT.to_owned())
            .push(", ")
            .bind(safe)
            .push(", ")
            .bind(service_kit::clock::now_ms())
            .push(") ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at");
        cp.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    if applied > 0 {
        cache.invalidate().await;
    }
    Ok(applied)
}

/// Decides how far the checkpoint may advance over sequence numbers with holes in them.
#[derive(Debug, Default)]
pub struct GapTracker {
    /// Missing sequence number -> when it was first seen missing.
    first_seen: std::collections::HashMap<i64, Instant>,
}

impl GapTracker {
    /// The highest position such that every number up to it was seen, or is a gap older than
    /// [`GAP_PATIENCE`].
    pub fn safe_position(&mut self, checkpoint: i64, seqs: &[i64], now: Instant) -> i64 {
        let mut safe = checkpoint;
        let mut expected = checkpoint + 1;
        let mut blocked = false;
        for &s in seqs {
            while expected < s {
                let seen = *self.first_seen.entry(expected).or_insert(now);
                if now.duration_since(seen) < GAP_PATIENCE {
                    blocked = true;
                }
                if !blocked {
                    safe = expected;
                }
                expected += 1;
            }
            if !blocked {
                safe = s;
            }
            expected = s + 1;
        }
        self.first_seen.retain(|&seq, _| seq > safe);
        safe
    }
}

/// Runs rounds until the process stops; errors are logged and retried.
pub async fn run(source: Database, target: Database, cache: ReadCache) {
    let mut gaps = GapTracker::default();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match round(&source, &target, &cache, &mut gaps).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(applied = n, "synced product changes from the monolith"),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "product sync round failed; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_waits_at_young_gaps_and_passes_old_ones() {
        let mut g = GapTracker::default();
        let t0 = Instant::now();
        assert_eq!(g.safe_position(0, &[1, 2, 3], t0), 3);
        // 5 is missing: stop at 4 until the gap is old.
        assert_eq!(g.safe_position(3, &[4, 6, 7], t0), 4);
        assert_eq!(g.safe_position(4, &[6, 7], t0 + Duration::from_secs(1)), 4);
        assert_eq!(
            g.safe_position(4, &[5, 6, 7], t0 + Duration::from_secs(1)),
            7,
            "the late commit arrived"
        );
        assert_eq!(g.safe_position(7, &[9], t0), 7);
        assert_eq!(
            g.safe_position(7, &[9], t0 + GAP_PATIENCE),
            9,
            "an old gap is a rollback"
        );
    }
}
