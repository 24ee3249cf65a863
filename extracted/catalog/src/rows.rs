//! The product rows as the three copies of them move: the columns, reading the current rows of
//! a set of ids, and the upsert that applies monolith rows here by field ownership.
//!
//! The backfill ([`crate::backfill`]), the continuous sync ([`crate::sync`]) and the write
//! handoff ([`crate::handoff`]) all move whole product rows between the monolith's database and
//! this service's; the column list and the ownership rule must be the same for all three, or one
//! of them would quietly drop a column or undo an edit the others keep.

use std::collections::BTreeSet;

use service_kit::db::{Database, Sql};
use sqlx::Row;

/// Every column of a product row, in the order the statements below bind them.
pub(crate) const PRODUCT_COLUMNS: &str = "id, sku, name, description, category, price_cents, currency, stock, sales, created_at, updated_at, edited_at";

/// The current rows of `ids` in `table` of `db` (which may be the monolith's MySQL database).
pub(crate) async fn read(
    db: &Database,
    ids: &BTreeSet<i64>,
    table: &str,
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    let mut q = Sql::for_backend(
        db.backend,
        &format!("SELECT {PRODUCT_COLUMNS} FROM {table} WHERE id IN "),
    );
    q.bind_list(ids);
    q.build().fetch_all(&db.pool).await
}

/// One multi-row upsert of monolith `rows` into this service's `products`, by field ownership:
/// - stock and sales always take the monolith's values: orders, which live there, own them;
/// - the product's own fields (the descriptive ones and the price) take the monolith's values
///   only from a newer *edit* (`edited_at`; orders bump `updated_at` but not `edited_at`), so
///   an edit made here is never undone by an older one made there, whichever side writes back
///   first. The same rule runs the other way in [`crate::handoff`], so both sides converge on
///   the latest edit.
///
/// Rows that would not change are left alone, so applying the same rows twice writes nothing.
pub(crate) fn upsert(rows: &[sqlx::any::AnyRow]) -> anyhow::Result<Sql> {
    let mut insert = Sql::new(&format!(
        "INSERT INTO products ({}) VALUES ",
        PRODUCT_COLUMNS
    ));
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            insert.push(", ");
        }
        insert.push("(");
        insert.bind(r.try_get::<i64, _>("id")?).push(", ");
        for col in ["sku", "name", "description", "category"] {
            insert.bind(r.try_get::<String, _>(col)?).push(", ");
        }
        insert.bind(r.try_get::<i64, _>("price_cents")?).push(", ");
        insert.bind(r.try_get::<String, _>("currency")?).push(", ");
        for col in ["stock", "sales", "created_at", "updated_at"] {
            insert.bind(r.try_get::<i64, _>(col)?).push(", ");
        }
        insert.bind(r.try_get::<i64, _>("edited_at")?).push(")");
    }
    let edited = "excluded.edited_at > products.edited_at";
    insert.push(" ON CONFLICT (id) DO UPDATE SET stock = excluded.stock, sales = excluded.sales");
    for col in [
        "sku",
        "name",
        "description",
        "category",
        "price_cents",
        "currency",
        "created_at",
        "edited_at",
    ] {
        insert.push(&format!(
            ", {col} = CASE WHEN {edited} THEN excluded.{col} ELSE products.{col} END"
        ));
    }
    insert.push(
        ", updated_at = CASE WHEN excluded.updated_at > products.updated_at THEN excluded.updated_at ELSE products.updated_at END",
    );
    insert.push(&format!(
        " WHERE {edited} OR excluded.stock <> products.stock OR excluded.sales <> products.sales \
         OR excluded.updated_at > products.updated_at"
    ));
    Ok(insert)
}
