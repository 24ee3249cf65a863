//! Continuous sync: keep this service's products current with the monolith's database.
//!
//! The monolith's database records every change to `products` in `product_changes` (triggers,
//! so every writer is captured: the API, orders taking stock, hand-written SQL, and the handoff
//! writing this service's changes back). Each round follows that outbox
//! ([`service_kit::outbox`]), re-reads the *current* rows of the changed products, applies them
//! here by field ownership ([`crate::backfill::upsert`]: stock and sales from the monolith,
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
pub(crate) const PRODUCT_COLUMNS: &str = "id, sku, name, description, category, price_cents, currency, stock, sales, created_at, updated_at, edited_at";

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
    let rows = read_rows(source, &keys, "products").await?;
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

/// The current rows of `ids` in `table` of `db` (which may be the monolith's MySQL database).
pub(crate) async fn read_rows(
    db: &Database,
    ids: &BTreeSet<i64>,
    table: &str,
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    let mut q = Sql::for_backend(
        db.backend,
        &format!("SELECT {PRODUCT_COLUMNS} FROM {table} WHERE id IN ("),
    );
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.bind(*id);
    }
    q.push(")");
    q.build().fetch_all(&db.pool).await
}

/// Registers this service as a consumer of the monolith's outbox at its current checkpoint, so
/// the monolith keeps every change it has not applied yet.
pub async fn register(source: &Database, target: &Database) -> anyhow::Result<()> {
    let checkpoint = outbox::checkpoint(target, CHECKPOINT).await?;
    outbox::report_consumed(source, &MONOLITH_OUTBOX, CONSUMER, checkpoint).await?;
    Ok(())
}

/// Follows the monolith's outbox until the process stops, publishing how far it has applied it
/// (`progress`: requests that carry the position of their own write wait on it).
pub async fn run(source: Database, target: Database, cache: ReadCache, progress: Arc<Progress>) {
    let mut follower = Follower::new(MONOLITH_OUTBOX);
    let mut tick = outbox::ticker();
    loop {
        tick.tick().await;
        match register(&source, &target).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "registering with the monolith's product outbox failed; retrying")
            }
        }
    }
    for rounds in 1u64.. {
        progress.next_round(&mut tick).await;
        let result = round(&source, &target, &cache, &mut follower).await;
        outbox::log_round("products from the monolith", result);
        if rounds % service_kit::set_aside::RETRY_EVERY == 0 {
            let result = retry_set_aside(&source, &target, &cache).await;
            outbox::log_round("set-aside products", result);
        }
        if let Ok(position) = outbox::checkpoint(&target, CHECKPOINT).await {
            progress.applied(position);
        }
    }
}
