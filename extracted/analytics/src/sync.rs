//! Copying the monolith's events here, so summaries over the last 30 days include what the
//! monolith recorded before (and while) `/api/analytics/*` moves.
//!
//! `analytics_events` is append-only, so the table is its own outbox: rows are followed by id
//! ([`service_kit::outbox`], with its patience for ids that commit out of order) and inserted
//! here under their `monolith_id`, which is unique, so a row copied twice is inserted once.
//! The first rounds are the backfill; the same loop then keeps up, every 200 ms.
//!
//! Events flow one way: events accepted by this service are not written back, so after a
//! rollback the monolith's summary lacks them (the README says so).

use std::collections::BTreeSet;

use service_kit::db::{Database, Sql};
use service_kit::outbox::{self, Follower, Outbox};
use service_kit::set_aside::SetAside;
use sqlx::Row;

pub const CHECKPOINT: &str = "sync:events";
const MONOLITH_EVENTS: Outbox = Outbox {
    table: "analytics_events",
    seq: "id",
    key: "id",
};

/// Events this service could not take, kept apart ([`service_kit::set_aside`]).
pub const SET_ASIDE: SetAside = SetAside { stream: CHECKPOINT };

/// One round: returns the events copied.
pub async fn round(
    own: &Database,
    monolith: &Database,
    follower: &mut Follower,
) -> anyhow::Result<usize> {
    let checkpoint = outbox::checkpoint(own, CHECKPOINT).await?;
    let Some(changes) = follower.next(monolith, checkpoint).await? else {
        return Ok(0);
    };
    SET_ASIDE
        .apply(monolith, own, &changes, checkpoint, |keys, to| {
            apply(own, monolith, keys, to)
        })
        .await
}

/// Copies the events `keys` (and saves the checkpoint `to`, when given), in one transaction.
async fn apply(
    own: &Database,
    monolith: &Database,
    keys: BTreeSet<i64>,
    to: Option<i64>,
) -> anyhow::Result<usize> {
    let mut q = Sql::for_backend(
        monolith.backend,
        "SELECT id, type, product_id, user_id, at FROM analytics_events WHERE id IN ",
    );
    q.bind_list(&keys);
    let rows = q.build().fetch_all(&monolith.pool).await?;
    let mut tx = own.pool.begin().await?;
    let mut copied = 0;
    for chunk in rows.chunks(200) {
        let mut insert =
            Sql::new("INSERT INTO events (monolith_id, type, product_id, user_id, at) VALUES ");
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                insert.push(", ");
            }
            insert.push("(").bind(r.try_get::<i64, _>("id")?);
            insert.push(", ").bind(r.try_get::<String, _>("type")?);
            insert.push(", ").bind(r.try_get::<i64, _>("product_id")?);
            insert
                .push(", ")
                .bind(r.try_get::<Option<i64>, _>("user_id")?);
            insert.push(", ").bind(r.try_get::<i64, _>("at")?).push(")");
        }
        insert.push(" ON CONFLICT (monolith_id) DO NOTHING");
        copied += insert.build().execute(&mut *tx).await?.rows_affected() as usize;
    }
    if let Some(to) = to {
        outbox::save_checkpoint(&mut tx, own.backend, CHECKPOINT, to).await?;
    }
    tx.commit().await?;
    Ok(copied)
}

/// The monolith's events followed into this service ([`outbox::follow`] drives it).
struct FromMonolith {
    own: Database,
    monolith: Database,
}

impl outbox::Follow for FromMonolith {
    fn what(&self) -> &'static str {
        "events from the monolith"
    }

    async fn round(&self, follower: &mut Follower) -> anyhow::Result<usize> {
        round(&self.own, &self.monolith, follower).await
    }

    async fn retry_set_aside(&self) -> anyhow::Result<usize> {
        SET_ASIDE
            .retry(&self.own, |keys, to| {
                apply(&self.own, &self.monolith, keys, to)
            })
            .await
    }

    async fn applied(&self) -> Result<i64, sqlx::Error> {
        outbox::checkpoint(&self.own, CHECKPOINT).await
    }
}

/// Follows the monolith's events until the process stops.
pub async fn run(own: Database, monolith: Database) {
    outbox::follow(FromMonolith { own, monolith }, MONOLITH_EVENTS, None).await;
}
