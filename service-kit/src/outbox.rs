//! Following another database's changes through an outbox table.
//!
//! During a migration the same data lives in two databases: the monolith's and an extracted
//! service's. Whoever owns the writes appends the id of every row it changes to an outbox
//! (`product_changes`, `user_changes` in the monolith, filled by triggers; a service's own outbox
//! written in the same transaction as the change). The other side follows that outbox: it reads
//! the ids after its checkpoint, re-reads the *current* rows, applies them, and advances the
//! checkpoint. Applying a change twice is harmless because the current row is what gets copied,
//! so delivery is at least once and the checkpoint may lag without harm.
//!
//! Auto-increment sequence numbers are handed out at insert but become visible at commit, so a
//! lower number can appear after a higher one. The checkpoint therefore never passes a gap
//! younger than [`GAP_PATIENCE`]; a gap older than that is a rolled-back transaction.
//!
//! Checkpoints live in a `sync_state (name, position, updated_at)` table of the database the
//! changes are applied to, written in the same transaction as the changes themselves.
//!
//! Retention: an outbox must not grow forever, and must not lose a change a follower has not
//! applied. Each follower reports its position into the *source's* `sync_state` as
//! `consumer:<outbox table>:<name>` ([`report_consumed`]), registering before it starts copying;
//! the owner of the outbox deletes what every registered consumer has passed ([`prune`]). A
//! consumer that is gone for good holds pruning back until its row is deleted (the README says
//! how).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Row;

use crate::db::{Backend, Database, Sql};
use crate::read_your_writes::Progress;

/// How often followers look for new changes.
pub const POLL: Duration = Duration::from_millis(200);
/// How long a hole in the sequence is waited for before it counts as a rollback.
pub const GAP_PATIENCE: Duration = Duration::from_secs(5);

/// An outbox table: a sequence column (ascending, assigned at insert) and the changed row's id.
/// An append-only table is its own outbox (sequence and key are both its id).
#[derive(Debug, Clone, Copy)]
pub struct Outbox {
    pub table: &'static str,
    pub seq: &'static str,
    pub key: &'static str,
}

/// One batch of changes: the ids changed (each once), and how far the checkpoint may move once
/// they are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub keys: BTreeSet<i64>,
    /// The highest sequence number seen in this batch (for callers that read extra columns).
    pub last_seq: i64,
    pub advance_to: i64,
}

/// Reads an outbox batch by batch, never moving past a young gap.
#[derive(Debug)]
pub struct Follower {
    outbox: Outbox,
    batch: i64,
    gaps: GapTracker,
    /// When a read last reached the end of the outbox (fewer rows than a batch).
    caught_up_at: Option<Instant>,
}

impl Follower {
    pub fn new(outbox: Outbox) -> Self {
        Self {
            outbox,
            batch: 1000,
            gaps: GapTracker::default(),
            caught_up_at: None,
        }
    }

    /// When this follower last read to the end of the outbox.
    pub fn caught_up_at(&self) -> Option<Instant> {
        self.caught_up_at
    }

    /// The changes after `checkpoint` in `source`'s outbox, or `None` when there are none.
    pub async fn next(
        &mut self,
        source: &Database,
        checkpoint: i64,
    ) -> Result<Option<Changes>, sqlx::Error> {
        let mut q = Sql::for_backend(
            source.backend,
            &format!(
                "SELECT {seq} AS seq, {key} AS k FROM {table} WHERE {seq} > ",
                seq = self.outbox.seq,
                key = self.outbox.key,
                table = self.outbox.table
            ),
        );
        q.bind(checkpoint)
            .push(&format!(" ORDER BY {} LIMIT ", self.outbox.seq))
            .bind(self.batch);
        let rows = q.build().fetch_all(&source.pool).await?;
        if (rows.len() as i64) < self.batch {
            self.caught_up_at = Some(Instant::now());
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let mut seqs = Vec::with_capacity(rows.len());
        let mut keys = BTreeSet::new();
        for r in &rows {
            seqs.push(r.try_get::<i64, _>("seq")?);
            keys.insert(r.try_get::<i64, _>("k")?);
        }
        let last_seq = *seqs.last().unwrap_or(&checkpoint);
        let advance_to = self.gaps.safe_position(checkpoint, &seqs, Instant::now());
        Ok(Some(Changes {
            keys,
            last_seq,
            advance_to,
        }))
    }
}

/// The position saved under `name` in `db`'s `sync_state` (0 when none).
pub async fn checkpoint(db: &Database, name: &str) -> Result<i64, sqlx::Error> {
    let mut q = Sql::for_backend(db.backend, "SELECT position FROM sync_state WHERE name = ");
    q.bind(name.to_owned());
    Ok(q.build_scalar()
        .fetch_optional(&db.pool)
        .await?
        .unwrap_or(0))
}

/// Saves `position` under `name` on `conn` (pass the transaction that applied the changes).
pub async fn save_checkpoint(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    name: &str,
    position: i64,
) -> Result<(), sqlx::Error> {
    let mut q = Sql::for_backend(
        backend,
        "INSERT INTO sync_state (name, position, updated_at) VALUES (",
    );
    q.bind(name.to_owned())
        .push(", ")
        .bind(position)
        .push(", ")
        .bind(crate::clock::now_ms())
        .push(")");
    q.push(match backend {
        Backend::MySql => {
            " ON DUPLICATE KEY UPDATE position = VALUES(position), updated_at = VALUES(updated_at)"
        }
        _ => {
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at"
        }
    });
    q.build().execute(conn).await?;
    Ok(())
}

fn consumer_name(outbox: &Outbox, consumer: &str) -> String {
    format!("consumer:{}:{consumer}", outbox.table)
}

/// Records in `source` (the outbox's database) that `consumer` has applied `outbox` up to
/// `position`. Called once before a consumer starts copying (with its current checkpoint, so
/// nothing it still needs is pruned meanwhile) and after every round that advanced.
pub async fn report_consumed(
    source: &Database,
    outbox: &Outbox,
    consumer: &str,
    position: i64,
) -> Result<(), sqlx::Error> {
    let mut conn = source.pool.acquire().await?;
    save_checkpoint(
        &mut conn,
        source.backend,
        &consumer_name(outbox, consumer),
        position,
    )
    .await
}

/// Deletes the entries of `outbox` in `db` that every registered consumer has applied, in
/// chunks (short transactions next to live writers). Returns how many were deleted; with no
/// consumer registered, nothing is.
pub async fn prune(db: &Database, outbox: &Outbox) -> Result<u64, sqlx::Error> {
    const CHUNK: i64 = 10_000;
    let mut q = Sql::for_backend(
        db.backend,
        "SELECT MIN(position) FROM sync_state WHERE name LIKE ",
    );
    q.bind(format!("consumer:{}:%", outbox.table));
    let Some(upto) = q.build_scalar::<Option<i64>>().fetch_one(&db.pool).await? else {
        return Ok(0);
    };
    let lowest: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT MIN({}) FROM {}",
        outbox.seq, outbox.table
    )))
    .fetch_one(&db.pool)
    .await?;
    let mut from = lowest.unwrap_or(upto + 1);
    let mut deleted = 0;
    while from <= upto {
        let to = (from + CHUNK - 1).min(upto);
        let mut del = Sql::for_backend(
            db.backend,
            &format!("DELETE FROM {} WHERE {} >= ", outbox.table, outbox.seq),
        );
        del.bind(from)
            .push(&format!(" AND {} <= ", outbox.seq))
            .bind(to);
        deleted += del.build().execute(&db.pool).await?.rows_affected();
        from = to + 1;
    }
    Ok(deleted)
}

/// Decides how far a checkpoint may advance over sequence numbers with holes in them.
#[derive(Debug, Default)]
pub struct GapTracker {
    /// Missing sequence number -> when it was first seen missing.
    first_seen: HashMap<i64, Instant>,
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

/// The pace of a follower's rounds: every [`POLL`], never bunching up after a slow round.
pub fn ticker() -> tokio::time::Interval {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Registers `consumer` in `source`'s `sync_state` at the position saved under `checkpoint` in
/// `own` (see [`report_consumed`]): done before a follower starts copying, so every change it
/// has not applied yet stays in the outbox meanwhile. Returns that position.
pub async fn register(
    own: &Database,
    checkpoint_name: &str,
    source: &Database,
    outbox: &Outbox,
    consumer: &str,
) -> Result<i64, sqlx::Error> {
    let position = checkpoint(own, checkpoint_name).await?;
    report_consumed(source, outbox, consumer, position).await?;
    Ok(position)
}

/// One service's way of following an outbox; [`follow`] is the loop that drives it, the same
/// for every service.
pub trait Follow: Send + Sync + 'static {
    /// What is followed, for the logs ("products from the monolith").
    fn what(&self) -> &'static str;

    /// Runs before the first round and again every [`POLL`] until it succeeds: registering as
    /// a consumer, a backfill.
    fn start(&self) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }

    /// One round: applies what `follower` reads after the checkpoint; returns the rows applied.
    fn round(&self, follower: &mut Follower) -> impl Future<Output = anyhow::Result<usize>> + Send;

    /// Tries the set-aside rows again ([`crate::set_aside`]); returns the rows applied.
    fn retry_set_aside(&self) -> impl Future<Output = anyhow::Result<usize>> + Send;

    /// The position applied so far, published to requests that wait to read their own write.
    fn applied(&self) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
}

/// How far behind each follower of this process is, for `/health` ([`lag_report`]).
static FOLLOWING: std::sync::Mutex<std::collections::BTreeMap<&'static str, Following>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

struct Following {
    since: Instant,
    caught_up_at: Option<Instant>,
    failing: bool,
}

fn following(what: &'static str, update: impl FnOnce(&mut Following)) {
    let mut all = FOLLOWING.lock().unwrap_or_else(|e| e.into_inner());
    let f = all.entry(what).or_insert(Following {
        since: Instant::now(),
        caught_up_at: None,
        failing: false,
    });
    update(f);
}

/// Each follower's lag, by what it follows: `lag_ms` is the time since it last read to the end
/// of its outbox (since it started, when it never has), so a sync that keeps up shows at most
/// a poll interval, and one whose source is down or that is working through a backlog shows
/// how long it has not been current; `failing` when its last round failed. `None` when the
/// process follows nothing.
pub fn lag_report() -> Option<serde_json::Value> {
    let all = FOLLOWING.lock().unwrap_or_else(|e| e.into_inner());
    if all.is_empty() {
        return None;
    }
    let now = Instant::now();
    let map: serde_json::Map<String, serde_json::Value> = all
        .iter()
        .map(|(what, f)| {
            let at = f.caught_up_at.unwrap_or(f.since);
            (
                (*what).to_owned(),
                serde_json::json!({
                    "lag_ms": now.saturating_duration_since(at).as_millis() as u64,
                    "caught_up": f.caught_up_at.is_some(),
                    "failing": f.failing,
                }),
            )
        })
        .collect();
    Some(serde_json::Value::Object(map))
}

/// Follows `outbox` with `job` until the process stops: `start` until it succeeds, then a
/// round every [`POLL`] (sooner when `progress` is nudged by a waiting request), the set-aside
/// rows every [`crate::set_aside::RETRY_EVERY`] rounds, and the position applied published to
/// `progress`. A failed round is logged and the next one carries on.
pub async fn follow(job: impl Follow, outbox: Outbox, progress: Option<Arc<Progress>>) {
    following(job.what(), |_| {});
    let mut tick = ticker();
    loop {
        tick.tick().await;
        match job.start().await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), what = job.what(), "starting to follow failed; retrying")
            }
        }
    }
    let mut follower = Follower::new(outbox);
    for rounds in 1u64.. {
        match &progress {
            Some(progress) => progress.next_round(&mut tick).await,
            None => {
                tick.tick().await;
            }
        }
        let round = job.round(&mut follower).await;
        following(job.what(), |f| {
            f.failing = round.is_err();
            f.caught_up_at = follower.caught_up_at();
        });
        log_round(job.what(), round);
        if rounds % crate::set_aside::RETRY_EVERY == 0 {
            log_round(job.what(), job.retry_set_aside().await);
        }
        if let Some(progress) = &progress
            && let Ok(position) = job.applied().await
        {
            progress.applied(position);
        }
    }
}

/// Logs how a round went. Errors are logged and the follower carries on: a database that is
/// briefly away must not end the sync.
pub fn log_round(what: &'static str, result: anyhow::Result<usize>) {
    match result {
        Ok(0) => {}
        Ok(n) => tracing::debug!(applied = n, what, "applied changes"),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), what, "sync round failed; retrying"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pruning_keeps_what_any_consumer_still_needs() {
        let dir = tempfile_dir();
        let db = Database::connect(&crate::db::embedded_url(&dir, "outbox").unwrap(), 1)
            .await
            .unwrap();
        for ddl in [
            "CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, item INTEGER NOT NULL)",
            "CREATE TABLE sync_state (name TEXT PRIMARY KEY, position INTEGER NOT NULL, updated_at INTEGER NOT NULL)",
        ] {
            sqlx::query(ddl).execute(&db.pool).await.unwrap();
        }
        for i in 0..25_000 {
            sqlx::query("INSERT INTO changes (item) VALUES ($1)")
                .bind(i % 7_i64)
                .execute(&db.pool)
                .await
                .unwrap();
        }
        let outbox = Outbox {
            table: "changes",
            seq: "seq",
            key: "item",
        };
        let count = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM changes")
                .fetch_one(&db.pool)
                .await
                .unwrap()
        };
        assert_eq!(prune(&db, &outbox).await.unwrap(), 0, "no consumer yet");
        report_consumed(&db, &outbox, "fast", 24_000).await.unwrap();
        report_consumed(&db, &outbox, "slow", 12_345).await.unwrap();
        assert_eq!(prune(&db, &outbox).await.unwrap(), 12_345);
        assert_eq!(count().await, 25_000 - 12_345);
        report_consumed(&db, &outbox, "slow", 25_000).await.unwrap();
        assert_eq!(prune(&db, &outbox).await.unwrap(), 24_000 - 12_345);
        assert_eq!(count().await, 1_000, "the fast one's tail stays");
        // A follower still reads what is left, from its checkpoint.
        let mut f = Follower::new(outbox);
        let c = f.next(&db, 24_000).await.unwrap().unwrap();
        assert_eq!(c.last_seq, 25_000);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let n: u64 = rand::random();
        std::env::temp_dir().join(format!("banyan-outbox-{n:x}"))
    }

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
