//! Backfill: copy the monolith's products into the catalog service's database.
//!
//! Batches are read from the monolith by ascending id (`WHERE id > last ORDER BY id LIMIT n`,
//! which stays fast at any depth) and upserted here together with the checkpoint, in one
//! transaction per batch. So:
//! - an interrupted run loses at most the batch in flight, and the next run resumes after the
//!   last committed batch;
//! - running it again changes nothing: an existing row is only overwritten by a source row that
//!   is newer (`updated_at`), and a finished run resumes at the end;
//! - `--restart` rescans everything, still overwriting only rows that changed since.
//!
//! Deletions are not the backfill's business: the continuous sync carries them.

use std::time::Instant;

use anyhow::Context;
use service_kit::db::{Database, Sql};
use sqlx::Row;

pub const CHECKPOINT: &str = "backfill:products";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Rows read from the monolith.
    pub scanned: u64,
    /// Rows inserted or changed here.
    pub written: u64,
}

/// Copies products from `source` (the monolith's database) into `target`, `batch` rows per
/// transaction; `progress` is called after each batch with the rows scanned and the total.
pub async fn run(
    source: &Database,
    target: &Database,
    batch: i64,
    restart: bool,
    mut progress: impl FnMut(u64, i64),
) -> anyhow::Result<Report> {
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
        .fetch_one(&source.pool)
        .await
        .context("counting the monolith's products")?;
    let mut last: i64 = if restart {
        0
    } else {
        let mut q = Sql::new("SELECT position FROM sync_state WHERE name = ");
        q.bind(CHECKPOINT.to_owned());
        q.build_scalar()
            .fetch_optional(&target.pool)
            .await?
            .unwrap_or(0)
    };
    let mut report = Report::default();
    if last > 0 {
        report.scanned = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM products WHERE id <= ?")
            .bind(last)
            .fetch_one(&source.pool)
            .await? as u64;
    }
    let started = Instant::now();
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM products WHERE id > ? ORDER BY id LIMIT ?",
            crate::rows::PRODUCT_COLUMNS
        )))
        .bind(last)
        .bind(batch)
        .fetch_all(&source.pool)
        .await
        .context("reading a batch from the monolith")?;
        if rows.is_empty() {
            break;
        }
        let insert = crate::rows::upsert(&rows)?;
        last = rows
            .last()
            .map(|r| r.try_get::<i64, _>("id"))
            .transpose()?
            .unwrap_or(last);
        let mut tx = target.pool.begin().await?;
        let written = insert
            .build()
            .execute(&mut *tx)
            .await
            .context("writing a batch")?
            .rows_affected();
        let mut checkpoint =
            Sql::new("INSERT INTO sync_state (name, position, updated_at) VALUES (");
        checkpoint
            .bind(CHECKPOINT.to_owned())
            .push(", ")
            .bind(last)
            .push(", ")
            .bind(service_kit::clock::now_ms())
            .push(") ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at");
        checkpoint.build().execute(&mut *tx).await?;
        tx.commit().await?;
        report.scanned += rows.len() as u64;
        report.written += written;
        progress(report.scanned, total);
    }
    service_kit::db::advance_id_sequence(target, "products").await?;
    tracing::info!(
        scanned = report.scanned,
        written = report.written,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "backfill finished"
    );
    Ok(report)
}
