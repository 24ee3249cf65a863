//! Continuous sync: keep this service's products current with the monolith's database.
//!
//! The monolith's database records every change to `products` in `product_changes` (triggers,
//! so every writer is captured: the API, orders taking stock, hand-written SQL, and the handoff
//! writing this service's changes back). Each round follows that outbox
//! ([`service_kit::outbox`]), re-reads the *current* rows of the changed products, applies them
//! here by field ownership ([`crate::rows::upsert`]: stock and sales from the monolith,
//! the product's own fields only from a newer edit), deletes the ones that are gone (unless
//! this service has a write of that product still to hand back), and advances the checkpoint,
//! in one transaction here. A product this copy cannot take is set aside rather than holding
//! back the changes after it ([`service_kit::set_aside`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use service_kit::db::{Database, Sql};
use service_kit::outbox::{self, Follower, Outbox};
use service_kit::read_your_writes::Progress;
use service_kit::set_aside::SetAside;
use sqlx::Row;

use crate::cache::ReadCache;

pub const CHECKPOINT: &str = "sync:products";
/// How this service is named among the consumers of the monolith's outbox.
pub const CONSUMER: &str = "catalog";
pub const MONOLITH_OUTBOX: Outbox = Outbox {
    table: "product_changes",
    seq: "seq",
    key: "product_id",
};

/// Products this service could not take, kept apart ([`service_kit::set_aside`]).
pub const SET_ASIDE: SetAside = SetAside { stream: CHECKPOINT };

/// One round: returns how many product rows were applied.
pub async fn round(
    source: &Database,
    target: &Database,
    cache: &ReadCache,
    follower: &mut Follower,
) -> anyhow::Result<usize> {
    let checkpoint = outbox::checkpoint(target, CHECKPOINT).await?;
    let Some(changes) = follower.next(source, checkpoint).await? else {
        return Ok(0);
    };
    let applied = SET_ASIDE
        .apply(source, target, &changes, checkpoint, |keys, to| {
            apply(source, target, keys, to)
        })
        .await?;
    if changes.advance_to > checkpoint {
        outbox::report_consumed(source, &MONOLITH_OUTBOX, CONSUMER, changes.advance_to).await?;
    }
    if applied > 0 {
        service_kit::db::advance_id_sequence(target, "products").await?;
        cache.invalidate().await;
    }
    Ok(applied)
}

/// Tries the set-aside products again; returns how many applied.
pub async fn retry_set_aside(
    source: &Database,
    target: &Database,
    cache: &ReadCache,
) -> anyhow::Result<usize> {
    let recovered = SET_ASIDE
        .retry(target, |keys, to| apply(source, target, keys, to))
        .await?;
    if recovered > 0 {
        service_kit::db::advance_id_sequence(target, "products").await?;
        cache.invalidate().await;
    }
    Ok(recovered)
}

/// Applies the current rows of `keys` here (and the checkpoint `to`, when given), in one
/// transaction.
async fn apply(
    source: &Database,
    target: &Database,
    keys: BTreeSet<i64>,
    to: Option<i64>,
) -> anyhow::Result<usize> {
    let rows = crate::rows::read(source, &keys, "products").await?;
    let present: BTreeSet<i64> = rows
        .iter()
        .map(|r| r.try_get::<i64, _>("id"))
        .collect::<Result<_, _>>()?;
    let mut tx = target.pool.begin().await?;
    // Products this service deleted and has not handed back yet: the monolith's copy may have
    // been read before the delete reached it, and must not bring them back here (the contract
    // fuzzer's DELETE then GET found a deleted product served again). Once the delete is in
    // the monolith, the change it makes there removes them for good.
    let deleted_here: BTreeSet<i64> = Sql::new(
        "SELECT o.product_id FROM product_outbox o \
         LEFT JOIN products p ON p.id = o.product_id WHERE p.id IS NULL",
    )
    .build_scalar::<i64>()
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows {
        if !deleted_here.contains(&row.try_get::<i64, _>("id")?) {
            kept.push(row);
        }
    }
    let rows = kept;
    let mut applied = 0;
    if !rows.is_empty() {
        applied += crate::rows::upsert(&rows)?
            .build()
            .execute(&mut *tx)
            .await?
            .rows_affected() as usize;
    }
    for gone in keys.difference(&present) {
        let mut del = Sql::new("DELETE FROM products WHERE id = ");
        del.bind(*gone).push(
            " AND NOT EXISTS (SELECT 1 FROM product_outbox o WHERE o.product_id = products.id)",
        );
        applied += del.build().execute(&mut *tx).await?.rows_affected() as usize;
    }
    if let Some(to) = to {
        outbox::save_checkpoint(&mut tx, target.backend, CHECKPOINT, to).await?;
    }
    tx.commit().await?;
    Ok(applied)
}

/// Registers this service as a consumer of the monolith's outbox at its current checkpoint, so
/// the monolith keeps every change it has not applied yet.
pub async fn register(source: &Database, target: &Database) -> anyhow::Result<()> {
    outbox::register(target, CHECKPOINT, source, &MONOLITH_OUTBOX, CONSUMER).await?;
    Ok(())
}

/// The monolith's products followed into this service ([`outbox::follow`] drives it).
struct FromMonolith {
    source: Database,
    target: Database,
    cache: ReadCache,
}

impl outbox::Follow for FromMonolith {
    fn what(&self) -> &'static str {
        "products from the monolith"
    }

    async fn start(&self) -> anyhow::Result<()> {
        register(&self.source, &self.target).await
    }

    async fn round(&self, follower: &mut Follower) -> anyhow::Result<usize> {
        round(&self.source, &self.target, &self.cache, follower).await
    }

    async fn retry_set_aside(&self) -> anyhow::Result<usize> {
        retry_set_aside(&self.source, &self.target, &self.cache).await
    }

    async fn applied(&self) -> Result<i64, sqlx::Error> {
        outbox::checkpoint(&self.target, CHECKPOINT).await
    }
}

/// Follows the monolith's outbox until the process stops, publishing how far it has applied it
/// (`progress`: requests that carry the position of their own write wait on it).
pub async fn run(source: Database, target: Database, cache: ReadCache, progress: Arc<Progress>) {
    let job = FromMonolith {
        source,
        target,
        cache,
    };
    outbox::follow(job, MONOLITH_OUTBOX, Some(progress)).await;
}
