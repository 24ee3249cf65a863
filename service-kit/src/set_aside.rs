//! Rows a follower cannot apply are set aside, so they never hold back the rows after them.
//!
//! A follower applies the monolith's changes batch by batch, each batch in one transaction with
//! its checkpoint. One row the copy cannot take (a NUL in a product name, written into the
//! monolith by hand: MySQL and SQLite store it, PostgreSQL text cannot) used to fail its batch
//! on every round, forever, and every later change with it. Now a batch that fails while both
//! databases answer is applied row by row: the rows that go in go in, each one that fails is
//! set aside (logged with its id and the cause, counted, listed in `/health`), and the
//! checkpoint moves past the batch. Set-aside rows are tried again every few seconds, and leave
//! the set once they apply (the cause fixed in the monolith, by an edit of the row, or here).
//!
//! The set lives in the follower's own `sync_state`, as `set-aside:<stream>:<id>` rows, so it
//! survives a restart. When the databases do not answer, nothing is set aside: the batch fails
//! as before and is retried whole.

use std::collections::BTreeSet;
use std::future::Future;

use crate::db::{Database, Sql};
use crate::outbox::Changes;

/// How many rounds pass between retries of the set-aside rows (25 rounds of 200 ms: 5 s).
pub const RETRY_EVERY: u64 = 25;

/// The set-aside rows of one stream (named like its checkpoint, e.g. `sync:products`).
#[derive(Debug, Clone, Copy)]
pub struct SetAside {
    pub stream: &'static str,
}

impl SetAside {
    fn name(&self, id: i64) -> String {
        format!("set-aside:{}:{id}", self.stream)
    }

    /// The ids set aside now, lowest first.
    pub async fn ids(&self, db: &Database) -> Result<Vec<i64>, sqlx::Error> {
        let mut q = Sql::for_backend(
            db.backend,
            "SELECT position FROM sync_state WHERE name LIKE ",
        );
        q.bind(format!("set-aside:{}:%", self.stream))
            .push(" ORDER BY position");
        q.build_scalar().fetch_all(&db.pool).await
    }

    async fn put(&self, db: &Database, id: i64) -> Result<(), sqlx::Error> {
        let mut conn = db.pool.acquire().await?;
        crate::outbox::save_checkpoint(&mut conn, db.backend, &self.name(id), id).await
    }

    async fn clear(&self, db: &Database, id: i64) -> Result<(), sqlx::Error> {
        let mut q = Sql::for_backend(db.backend, "DELETE FROM sync_state WHERE name = ");
        q.bind(self.name(id));
        q.build().execute(&db.pool).await?;
        Ok(())
    }

    /// Applies `changes` with `apply(keys, checkpoint)`, which must apply the rows of `keys` and,
    /// when `checkpoint` is given, save it, all in one transaction. When the whole batch fails
    /// while both databases answer, applies it key by key, sets aside the keys that fail, and
    /// saves the checkpoint on its own. Returns the rows applied.
    pub async fn apply<F, Fut>(
        &self,
        source: &Database,
        target: &Database,
        changes: &Changes,
        checkpoint: i64,
        apply: F,
    ) -> anyhow::Result<usize>
    where
        F: Fn(BTreeSet<i64>, Option<i64>) -> Fut,
        Fut: Future<Output = anyhow::Result<usize>>,
    {
        let advance = (changes.advance_to > checkpoint).then_some(changes.advance_to);
        let whole = match apply(changes.keys.clone(), advance).await {
            Ok(n) => return Ok(n),
            Err(e) => e,
        };
        let mut applied = 0;
        let mut failed = Vec::new();
        for key in &changes.keys {
            match apply(BTreeSet::from([*key]), None).await {
                Ok(n) => applied += n,
                Err(e) => failed.push((*key, e)),
            }
        }
        // A database that went away mid-batch fails every key: that is not the rows' fault.
        if !self.answering(source, target).await {
            return Err(whole);
        }
        for (key, e) in &failed {
            tracing::error!(stream = self.stream, id = key, error = %format!("{e:#}"), "a row could not be applied; set aside (retried every few seconds, listed in /health)");
            self.put(target, *key).await?;
        }
        if let Some(to) = advance {
            let mut conn = target.pool.acquire().await?;
            crate::outbox::save_checkpoint(&mut conn, target.backend, self.stream, to).await?;
        }
        Ok(applied)
    }

    /// Tries the set-aside rows again with `apply` (as in [`SetAside::apply`], never with a
    /// checkpoint); the ones that apply leave the set. Returns how many did.
    pub async fn retry<F, Fut>(&self, target: &Database, apply: F) -> anyhow::Result<usize>
    where
        F: Fn(BTreeSet<i64>, Option<i64>) -> Fut,
        Fut: Future<Output = anyhow::Result<usize>>,
    {
        let mut recovered = 0;
        for id in self.ids(target).await? {
            if apply(BTreeSet::from([id]), None).await.is_ok() {
                self.clear(target, id).await?;
                tracing::info!(
                    stream = self.stream,
                    id,
                    "a set-aside row applied; it leaves the set"
                );
                recovered += 1;
            }
        }
        Ok(recovered)
    }

    /// What `/health` shows of `streams`: `{"set_aside": {"<stream>": [ids]}}` for the streams
    /// that have rows set aside; `None` when none has.
    pub async fn report(db: &Database, streams: &[SetAside]) -> Option<serde_json::Value> {
        let mut set = serde_json::Map::new();
        for s in streams {
            match s.ids(db).await {
                Ok(ids) if ids.is_empty() => {}
                Ok(ids) => {
                    set.insert(s.stream.to_owned(), serde_json::json!(ids));
                }
                Err(e) => {
                    tracing::warn!(stream = s.stream, error = %e, "cannot read the set-aside rows");
                }
            }
        }
        (!set.is_empty()).then(|| serde_json::json!({ "set_aside": set }))
    }

    async fn answering(&self, source: &Database, target: &Database) -> bool {
        let (a, b) = tokio::join!(source.ping(), target.ping());
        a && b
    }
}
