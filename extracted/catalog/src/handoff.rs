//! The handoff: once product writes are routed to this service, its changes flow back into the
//! monolith's database, so the parts still living there (orders) see current prices and stock.
//!
//! Who owns what (see the README's operator guide):
//! - existence, the descriptive fields and the price belong to whoever takes product writes: the
//!   monolith until the write routes move here, this service afterwards;
//! - stock and sales belong to orders, which stay in the monolith. An admin may still *set* a
//!   stock level through this service; that explicit value is carried back, and otherwise the
//!   monolith's stock always wins.
//!
//! Every API write here appends to `product_outbox` in the same transaction ([`record`]), and
//! is answered once it is in the monolith too ([`service_kit::write_back`]: an admin who creates
//! a product, or changes a price, and orders at once finds it there). A round follows that
//! outbox ([`service_kit::outbox`]), re-reads the current rows here, and writes
//! them into the monolith's `products` where they are the newer edit (`edited_at`: when writes
//! move back and forth, the last edit wins on both sides, whichever direction delivers first), committing its checkpoint in the monolith's own
//! `sync_state` in the same transaction, so a change is written back exactly once. Those writes
//! fire the monolith's change triggers, and the forward sync ([`crate::sync`]) reads them back
//! as no-ops: copies are equal, and nothing but an API write appends to this outbox, so the two
//! directions never chase each other.
//!
//! Both directions run whenever the service is started with `--sync-from`: ownership moves by
//! editing the route table alone, and so does moving it back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use service_kit::db::{Backend, Database, Sql};
use service_kit::outbox::{self, Follower, Outbox};
use service_kit::write_back::{Round, WriteBack, WriteThrough};
use sqlx::Row;

/// The checkpoint's name in the monolith's `sync_state`.
pub const CHECKPOINT: &str = "handoff:catalog-products";
pub const OUTBOX: Outbox = Outbox {
    table: "product_outbox",
    seq: "seq",
    key: "product_id",
};

/// Records an API write of product `id` (with the stock an admin set explicitly, if any), on the
/// transaction that made it. Returns its outbox sequence number, for
/// [`WriteThrough::written_back`].
pub async fn record(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
    stock: Option<i64>,
) -> Result<i64, sqlx::Error> {
    let mut q = Sql::new("INSERT INTO product_outbox (product_id, stock) VALUES (");
    q.bind(id).push(", ").bind(stock).push(") RETURNING seq");
    q.build_scalar().fetch_one(&mut **tx).await
}

/// The write-back of product writes, driven by the requests that made them and by a background
/// loop ([`service_kit::write_back`]).
pub type ProductsBack = WriteThrough<Products>;

/// This service's database and the monolith's, between which products are written back.
pub struct Products {
    pub own: Database,
    pub monolith: Database,
}

impl WriteBack for Products {
    fn round<'a>(
        &'a self,
        follower: &'a mut Follower,
    ) -> impl std::future::Future<Output = anyhow::Result<Round>> + Send + 'a {
        round(&self.own, &self.monolith, follower)
    }
}

/// Starts writing products back: the background loop, and the handle requests wait on.
pub fn start(own: Database, monolith: Database) -> Arc<ProductsBack> {
    let back = WriteThrough::new(
        Products { own, monolith },
        OUTBOX,
        "products back to the monolith",
    );
    tokio::spawn(back.clone().run());
    back
}

/// One round: writes this service's changes after the checkpoint back into the monolith.
pub async fn round(
    own: &Database,
    monolith: &Database,
    follower: &mut Follower,
) -> anyhow::Result<Round> {
    let checkpoint = outbox::checkpoint(monolith, CHECKPOINT).await?;
    let Some(changes) = follower.next(own, checkpoint).await? else {
        return Ok(Round::default());
    };
    // The stock each product was explicitly set to, latest first wins.
    let mut q = Sql::new("SELECT product_id, stock FROM product_outbox WHERE seq > ");
    q.bind(checkpoint)
        .push(" AND seq <= ")
        .bind(changes.last_seq)
        .push(" AND stock IS NOT NULL ORDER BY seq");
    let mut set_stock = BTreeMap::new();
    for r in q.build().fetch_all(&own.pool).await? {
        set_stock.insert(
            r.try_get::<i64, _>("product_id")?,
            r.try_get::<i64, _>("stock")?,
        );
    }
    let rows = crate::rows::read(own, &changes.keys, "products").await?;

    let mut tx = monolith.pool.begin().await?;
    let mut existing = Sql::for_backend(monolith.backend, "SELECT id FROM products WHERE id IN ");
    existing.bind_list(&changes.keys);
    let existing: BTreeSet<i64> = existing
        .build_scalar::<i64>()
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    let mut written = 0;
    let mut present = BTreeSet::new();
    for r in &rows {
        let id: i64 = r.try_get("id")?;
        present.insert(id);
        let q = if existing.contains(&id) {
            update_statement(monolith.backend, r, set_stock.get(&id).copied())?
        } else {
            insert_statement(monolith.backend, r)?
        };
        match q.build().execute(&mut *tx).await {
            Ok(_) => written += 1,
            Err(e) if service_kit::db::is_unique_violation(&e) => {
                // Someone wrote the same sku into the monolith directly: a person must decide.
                tracing::error!(product_id = id, error = %e, "handoff: product conflicts with a row in the monolith; skipped");
            }
            Err(e) => return Err(e.into()),
        }
    }
    for gone in changes.keys.difference(&present) {
        let mut del = Sql::for_backend(monolith.backend, "DELETE FROM products WHERE id = ");
        del.bind(*gone);
        written += del.build().execute(&mut *tx).await?.rows_affected() as usize;
    }
    if changes.advance_to > checkpoint {
        outbox::save_checkpoint(&mut tx, monolith.backend, CHECKPOINT, changes.advance_to).await?;
    }
    tx.commit().await?;
    // What the monolith has is no longer needed here (nor by the forward sync's guard).
    let mut trim = Sql::new("DELETE FROM product_outbox WHERE seq <= ");
    trim.bind(changes.advance_to);
    trim.build().execute(&own.pool).await?;
    Ok(Round {
        written,
        read_up_to: Some(changes.last_seq),
    })
}

const OWNED_TEXT: [&str; 4] = ["sku", "name", "description", "category"];

fn update_statement(
    backend: Backend,
    r: &sqlx::any::AnyRow,
    stock: Option<i64>,
) -> anyhow::Result<Sql> {
    // Only over an older edit: a newer one made in the monolith (writes moved back meanwhile)
    // wins, and the forward sync brings it here.
    let edited_at: i64 = r.try_get("edited_at")?;
    let mut q = Sql::for_backend(backend, "UPDATE products SET price_cents = ");
    q.bind(r.try_get::<i64, _>("price_cents")?);
    q.push(", currency = ")
        .bind(r.try_get::<String, _>("currency")?);
    for col in OWNED_TEXT {
        q.push(&format!(", {col} = "))
            .bind(r.try_get::<String, _>(col)?);
    }
    q.push(", edited_at = ").bind(edited_at);
    // `updated_at` only moves forward (an order may have bumped it past this edit).
    let updated_at: i64 = r.try_get("updated_at")?;
    q.push(", updated_at = CASE WHEN updated_at < ")
        .bind(updated_at)
        .push(" THEN ")
        .bind(updated_at)
        .push(" ELSE updated_at END");
    if let Some(stock) = stock {
        q.push(", stock = ").bind(stock);
    }
    q.push(" WHERE id = ").bind(r.try_get::<i64, _>("id")?);
    q.push(" AND edited_at < ").bind(edited_at);
    Ok(q)
}

fn insert_statement(backend: Backend, r: &sqlx::any::AnyRow) -> anyhow::Result<Sql> {
    let mut q = Sql::for_backend(
        backend,
        &format!(
            "INSERT INTO products ({}) VALUES (",
            crate::rows::PRODUCT_COLUMNS
        ),
    );
    q.bind(r.try_get::<i64, _>("id")?);
    for col in OWNED_TEXT {
        q.push(", ").bind(r.try_get::<String, _>(col)?);
    }
    q.push(", ").bind(r.try_get::<i64, _>("price_cents")?);
    q.push(", ").bind(r.try_get::<String, _>("currency")?);
    for col in ["stock", "sales", "created_at", "updated_at", "edited_at"] {
        q.push(", ").bind(r.try_get::<i64, _>(col)?);
    }
    q.push(")");
    Ok(q)
}
