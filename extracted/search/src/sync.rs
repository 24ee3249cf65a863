//! Keeping `documents` and the index current with the monolith's products.
//!
//! The monolith's database records every product change in `product_changes` (triggers; this
//! holds in every migration step, since the catalog's handoff writes its changes back there
//! too). With `--sync-from`, [`run`] first copies every product (batches by id, resumable,
//! checkpoint `backfill:documents`), then follows the outbox every 200 ms
//! ([`service_kit::outbox`]): the changed products' current rows are written to `documents`
//! with the checkpoint in one transaction, then applied to the index.
//!
//! The index is rebuilt from `documents` at start ([`load_index`]), so a crash between the two
//! steps loses nothing.

use std::collections::BTreeSet;
use std::sync::Arc;

use service_kit::db::{Database, Sql};
use service_kit::outbox::{self, Follower, Outbox};
use service_kit::read_your_writes::Progress;
use service_kit::set_aside::SetAside;
use sqlx::Row;

use crate::index::{Document, SearchIndex};

pub const BACKFILL: &str = "backfill:documents";
pub const FORWARD: &str = "sync:documents";
const MONOLITH_OUTBOX: Outbox = Outbox {
    table: "product_changes",
    seq: "seq",
    key: "product_id",
};
const BATCH: i64 = 1000;
const SOURCE_COLUMNS: &str = "id, name, description, category, price_cents, updated_at";

fn read(r: &sqlx::any::AnyRow) -> Result<(Document, i64), sqlx::Error> {
    Ok((
        Document {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            category: r.try_get("category")?,
            price_cents: r.try_get("price_cents")?,
        },
        r.try_get("updated_at")?,
    ))
}

/// Writes `docs` into `documents` (inside `tx`).
async fn store(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    docs: &[(Document, i64)],
) -> Result<(), sqlx::Error> {
    for chunk in docs.chunks(200) {
        let mut q = Sql::new(&format!("INSERT INTO documents ({SOURCE_COLUMNS}) VALUES "));
        for (i, (d, updated_at)) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(").bind(d.id);
            q.push(", ").bind(d.name.clone());
            q.push(", ").bind(d.description.clone());
            q.push(", ").bind(d.category.clone());
            q.push(", ").bind(d.price_cents);
            q.push(", ").bind(*updated_at).push(")");
        }
        q.push(
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description, \
             category = excluded.category, price_cents = excluded.price_cents, updated_at = excluded.updated_at",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn apply_to_index(
    index: &Arc<SearchIndex>,
    docs: Vec<Document>,
    deletes: Vec<i64>,
) -> anyhow::Result<()> {
    let index = index.clone();
    tokio::task::spawn_blocking(move || index.apply(&docs, &deletes)).await??;
    Ok(())
}

/// Builds the index from this service's `documents`.
pub async fn load_index(db: &Database, index: &Arc<SearchIndex>) -> anyhow::Result<u64> {
    let mut last = 0_i64;
    let mut loaded = 0;
    loop {
        let mut q = Sql::new(&format!(
            "SELECT {SOURCE_COLUMNS} FROM documents WHERE id > "
        ));
        q.bind(last).push(" ORDER BY id LIMIT ").bind(BATCH * 5);
        let docs: Vec<Document> = q
            .build()
            .fetch_all(&db.pool)
            .await?
            .iter()
            .map(|r| read(r).map(|(d, _)| d))
            .collect::<Result<_, _>>()?;
        let Some(end) = docs.last().map(|d| d.id) else {
            break;
        };
        loaded += docs.len() as u64;
        apply_to_index(index, docs, Vec::new()).await?;
        last = end;
    }
    Ok(loaded)
}

/// Copies the monolith's products, from the last checkpoint on. Returns the rows copied.
pub async fn backfill(
    own: &Database,
    monolith: &Database,
    index: &Arc<SearchIndex>,
) -> anyhow::Result<u64> {
    let mut last = outbox::checkpoint(own, BACKFILL).await?;
    let mut copied = 0;
    loop {
        let mut q = Sql::for_backend(
            monolith.backend,
            &format!("SELECT {SOURCE_COLUMNS} FROM products WHERE id > "),
        );
        q.bind(last).push(" ORDER BY id LIMIT ").bind(BATCH);
        let docs: Vec<(Document, i64)> = q
            .build()
            .fetch_all(&monolith.pool)
            .await?
            .iter()
            .map(read)
            .collect::<Result<_, _>>()?;
        let Some(end) = docs.last().map(|(d, _)| d.id) else {
            break;
        };
        let mut tx = own.pool.begin().await?;
        store(&mut tx, &docs).await?;
        outbox::save_checkpoint(&mut tx, own.backend, BACKFILL, end).await?;
        tx.commit().await?;
        copied += docs.len() as u64;
        apply_to_index(
            index,
            docs.into_iter().map(|(d, _)| d).collect(),
            Vec::new(),
        )
        .await?;
        last = end;
    }
    Ok(copied)
}

/// Products this service could not index, kept apart ([`service_kit::set_aside`]).
pub const SET_ASIDE: SetAside = SetAside { stream: FORWARD };

/// One forward round: the monolith's product changes after the checkpoint, stored and indexed.
pub async fn forward(
    own: &Database,
    monolith: &Database,
    index: &Arc<SearchIndex>,
    follower: &mut Follower,
) -> anyhow::Result<usize> {
    let checkpoint = outbox::checkpoint(own, FORWARD).await?;
    let Some(changes) = follower.next(monolith, checkpoint).await? else {
        return Ok(0);
    };
    let applied = SET_ASIDE
        .apply(monolith, own, &changes, checkpoint, |keys, to| {
            apply(own, monolith, index, keys, to)
        })
        .await?;
    if changes.advance_to > checkpoint {
        outbox::report_consumed(monolith, &MONOLITH_OUTBOX, "search", changes.advance_to).await?;
    }
    Ok(applied)
}

/// Stores the monolith's current rows of `keys` (and the checkpoint `to`, when given) in one
/// transaction, then indexes them.
async fn apply(
    own: &Database,
    monolith: &Database,
    index: &Arc<SearchIndex>,
    keys: BTreeSet<i64>,
    to: Option<i64>,
) -> anyhow::Result<usize> {
    let mut q = Sql::for_backend(
        monolith.backend,
        &format!("SELECT {SOURCE_COLUMNS} FROM products WHERE id IN "),
    );
    q.bind_list(&keys);
    let docs: Vec<(Document, i64)> = q
        .build()
        .fetch_all(&monolith.pool)
        .await?
        .iter()
        .map(read)
        .collect::<Result<_, _>>()?;
    let present: BTreeSet<i64> = docs.iter().map(|(d, _)| d.id).collect();
    let gone: Vec<i64> = keys.difference(&present).copied().collect();
    let mut tx = own.pool.begin().await?;
    store(&mut tx, &docs).await?;
    for id in &gone {
        let mut del = Sql::new("DELETE FROM documents WHERE id = ");
        del.bind(*id);
        del.build().execute(&mut *tx).await?;
    }
    if let Some(to) = to {
        outbox::save_checkpoint(&mut tx, own.backend, FORWARD, to).await?;
    }
    tx.commit().await?;
    let applied = docs.len() + gone.len();
    apply_to_index(index, docs.into_iter().map(|(d, _)| d).collect(), gone).await?;
    Ok(applied)
}

/// The monolith's products followed into the index ([`outbox::follow`] drives it).
struct FromMonolith {
    own: Database,
    monolith: Database,
    index: Arc<SearchIndex>,
}

impl outbox::Follow for FromMonolith {
    fn what(&self) -> &'static str {
        "products from the monolith"
    }

    /// Registered first (changes made while copying stay in the monolith's outbox), then the
    /// backfill.
    async fn start(&self) -> anyhow::Result<()> {
        outbox::register(
            &self.own,
            FORWARD,
            &self.monolith,
            &MONOLITH_OUTBOX,
            "search",
        )
        .await?;
        let n = backfill(&self.own, &self.monolith, &self.index).await?;
        tracing::info!(copied = n, "products backfilled from the monolith");
        Ok(())
    }

    async fn round(&self, follower: &mut Follower) -> anyhow::Result<usize> {
        forward(&self.own, &self.monolith, &self.index, follower).await
    }

    async fn retry_set_aside(&self) -> anyhow::Result<usize> {
        SET_ASIDE
            .retry(&self.own, |keys, to| {
                apply(&self.own, &self.monolith, &self.index, keys, to)
            })
            .await
    }

    async fn applied(&self) -> Result<i64, sqlx::Error> {
        outbox::checkpoint(&self.own, FORWARD).await
    }
}

/// Backfills (retrying until it succeeds), then follows the outbox until the process stops.
pub async fn run(
    own: Database,
    monolith: Database,
    index: Arc<SearchIndex>,
    progress: Arc<Progress>,
) {
    let job = FromMonolith {
        own,
        monolith,
        index,
    };
    outbox::follow(job, MONOLITH_OUTBOX, Some(progress)).await;
}
