//! Keeping the two user tables in agreement while `/api/auth/*` moves.
//!
//! A session names a user by id, and every process resolves it against its own user table, so
//! the monolith's users and this service's must agree, id for id, whichever side takes
//! registrations. With `--sync-from`, three loops run ([`start`]):
//! - **backfill**: the monolith's existing users copied here in batches by id, resumable
//!   (checkpoint `backfill:users`);
//! - **forward**: the monolith's `user_changes` outbox (triggers on its `users`) followed every
//!   200 ms ([`service_kit::outbox`]), the current rows copied here, deleted users deleted;
//! - **handoff**: registrations made here (`user_outbox`, written with the registration)
//!   written back into the monolith's `users`, with the checkpoint committed in the monolith's
//!   own `sync_state`, so orders placed there find their user; a registration is answered only
//!   once it is there ([`service_kit::write_back`]), so a user who registers, logs in and orders
//!   at once is known to the monolith by then.
//!
//! A user with a registration here not yet written back keeps this side's row. Nothing but a
//! registration appends to `user_outbox`, so the write-back's own echo through the monolith's
//! triggers copies equal values and ends there.

use std::collections::BTreeSet;
use std::sync::Arc;

use service_kit::db::{Backend, Database, Sql};
use service_kit::outbox::{self, Follower, Outbox};
use service_kit::read_your_writes::Progress;
use service_kit::set_aside::SetAside;
use service_kit::write_back::{Round, WriteBack, WriteThrough};
use sqlx::Row;

pub const BACKFILL: &str = "backfill:users";
pub const FORWARD: &str = "sync:users";
/// The write-back checkpoint's name in the monolith's `sync_state`.
pub const HANDOFF: &str = "handoff:auth-users";
const MONOLITH_OUTBOX: Outbox = Outbox {
    table: "user_changes",
    seq: "seq",
    key: "user_id",
};
const OWN_OUTBOX: Outbox = Outbox {
    table: "user_outbox",
    seq: "seq",
    key: "user_id",
};
const COLUMNS: &str = "id, email, name, password_hash, role, created_at";
const BATCH: i64 = 500;

/// Records a registration made here, on its transaction. Returns its outbox sequence number,
/// for [`WriteThrough::written_back`].
pub async fn record(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: i64,
) -> Result<i64, sqlx::Error> {
    let mut q = Sql::new("INSERT INTO user_outbox (user_id) VALUES (");
    q.bind(user_id).push(") RETURNING seq");
    q.build_scalar().fetch_one(&mut **tx).await
}

/// The write-back of registrations, driven by the requests that made them and by a background
/// loop ([`service_kit::write_back`]).
pub type UsersBack = WriteThrough<Users>;

/// This service's database and the monolith's, between which registrations are written back.
pub struct Users {
    pub own: Database,
    pub monolith: Database,
}

impl WriteBack for Users {
    fn round<'a>(
        &'a self,
        follower: &'a mut Follower,
    ) -> impl std::future::Future<Output = anyhow::Result<Round>> + Send + 'a {
        handoff(&self.own, &self.monolith, follower)
    }
}

struct UserRow {
    id: i64,
    email: String,
    name: String,
    password_hash: String,
    role: String,
    created_at: i64,
}

impl UserRow {
    fn read(r: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get("id")?,
            email: r.try_get("email")?,
            name: r.try_get("name")?,
            password_hash: r.try_get("password_hash")?,
            role: r.try_get("role")?,
            created_at: r.try_get("created_at")?,
        })
    }

    fn insert(&self, backend: Backend, suffix: &str) -> Sql {
        let mut q = Sql::for_backend(backend, &format!("INSERT INTO users ({COLUMNS}) VALUES ("));
        q.bind(self.id).push(", ").bind(self.email.clone());
        q.push(", ").bind(self.name.clone());
        q.push(", ").bind(self.password_hash.clone());
        q.push(", ").bind(self.role.clone());
        q.push(", ").bind(self.created_at).push(")").push(suffix);
        q
    }

    fn update(&self, backend: Backend) -> Sql {
        let mut q = Sql::for_backend(backend, "UPDATE users SET email = ");
        q.bind(self.email.clone());
        q.push(", name = ").bind(self.name.clone());
        q.push(", password_hash = ")
            .bind(self.password_hash.clone());
        q.push(", role = ").bind(self.role.clone());
        q.push(", created_at = ").bind(self.created_at);
        q.push(" WHERE id = ").bind(self.id);
        q
    }
}

async fn read_users(db: &Database, ids: &BTreeSet<i64>) -> Result<Vec<UserRow>, sqlx::Error> {
    let mut q = Sql::for_backend(
        db.backend,
        &format!("SELECT {COLUMNS} FROM users WHERE id IN "),
    );
    q.bind_list(ids);
    q.build()
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(UserRow::read)
        .collect()
}

/// Applies monolith rows here (inside `tx`), leaving users with a registration here after
/// `written_back` alone. Returns the rows written.
async fn apply_here(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rows: &[UserRow],
    written_back: i64,
) -> Result<usize, sqlx::Error> {
    let mut written = 0;
    for row in rows {
        let inserted = row
            .insert(Backend::Postgres, " ON CONFLICT DO NOTHING")
            .build()
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if inserted > 0 {
            written += 1;
            continue;
        }
        let mut q = row.update(Backend::Postgres);
        q.push(
            " AND NOT EXISTS (SELECT 1 FROM user_outbox o WHERE o.user_id = users.id AND o.seq > ",
        )
        .bind(written_back)
        .push(") AND (email <> ")
        .bind(row.email.clone())
        .push(" OR name <> ")
        .bind(row.name.clone())
        .push(" OR password_hash <> ")
        .bind(row.password_hash.clone())
        .push(" OR role <> ")
        .bind(row.role.clone())
        .push(")");
        written += q.build().execute(&mut **tx).await?.rows_affected() as usize;
    }
    Ok(written)
}

/// Copies the monolith's users here, batch by batch from the last checkpoint. Returns the rows
/// written.
pub async fn backfill(own: &Database, monolith: &Database) -> anyhow::Result<u64> {
    let mut last = outbox::checkpoint(own, BACKFILL).await?;
    let mut total = 0;
    loop {
        let mut q = Sql::for_backend(
            monolith.backend,
            &format!("SELECT {COLUMNS} FROM users WHERE id > "),
        );
        q.bind(last).push(" ORDER BY id LIMIT ").bind(BATCH);
        let rows: Vec<UserRow> = q
            .build()
            .fetch_all(&monolith.pool)
            .await?
            .iter()
            .map(UserRow::read)
            .collect::<Result<_, _>>()?;
        let Some(end) = rows.last().map(|r| r.id) else {
            break;
        };
        let written_back = outbox::checkpoint(monolith, HANDOFF).await?;
        let mut tx = own.pool.begin().await?;
        total += apply_here(&mut tx, &rows, written_back).await? as u64;
        outbox::save_checkpoint(&mut tx, own.backend, BACKFILL, end).await?;
        tx.commit().await?;
        last = end;
    }
    service_kit::db::advance_id_sequence(own, "users").await?;
    Ok(total)
}

/// Users this service could not take, kept apart ([`service_kit::set_aside`]).
pub const SET_ASIDE: SetAside = SetAside { stream: FORWARD };

/// One forward round: the monolith's user changes after the checkpoint, applied here.
pub async fn forward(
    own: &Database,
    monolith: &Database,
    follower: &mut Follower,
) -> anyhow::Result<usize> {
    let checkpoint = outbox::checkpoint(own, FORWARD).await?;
    let Some(changes) = follower.next(monolith, checkpoint).await? else {
        return Ok(0);
    };
    let written = SET_ASIDE
        .apply(monolith, own, &changes, checkpoint, |keys, to| {
            apply_forward(own, monolith, keys, to)
        })
        .await?;
    if changes.advance_to > checkpoint {
        outbox::report_consumed(monolith, &MONOLITH_OUTBOX, "auth", changes.advance_to).await?;
    }
    if written > 0 {
        service_kit::db::advance_id_sequence(own, "users").await?;
    }
    Ok(written)
}

/// Applies the monolith's current rows of `keys` here (and the checkpoint `to`, when given), in
/// one transaction.
async fn apply_forward(
    own: &Database,
    monolith: &Database,
    keys: BTreeSet<i64>,
    to: Option<i64>,
) -> anyhow::Result<usize> {
    let written_back = outbox::checkpoint(monolith, HANDOFF).await?;
    let rows = read_users(monolith, &keys).await?;
    let present: BTreeSet<i64> = rows.iter().map(|r| r.id).collect();
    let mut tx = own.pool.begin().await?;
    let mut written = apply_here(&mut tx, &rows, written_back).await?;
    for gone in keys.difference(&present) {
        let mut del = Sql::new("DELETE FROM users WHERE id = ");
        del.bind(*gone).push(
            " AND NOT EXISTS (SELECT 1 FROM user_outbox o WHERE o.user_id = users.id AND o.seq > ",
        );
        del.bind(written_back).push(")");
        written += del.build().execute(&mut *tx).await?.rows_affected() as usize;
    }
    if let Some(to) = to {
        outbox::save_checkpoint(&mut tx, own.backend, FORWARD, to).await?;
    }
    tx.commit().await?;
    Ok(written)
}

/// One handoff round: registrations made here after the checkpoint, written into the monolith.
pub async fn handoff(
    own: &Database,
    monolith: &Database,
    follower: &mut Follower,
) -> anyhow::Result<Round> {
    let checkpoint = outbox::checkpoint(monolith, HANDOFF).await?;
    let Some(changes) = follower.next(own, checkpoint).await? else {
        return Ok(Round::default());
    };
    let rows = read_users(own, &changes.keys).await?;
    let mut tx = monolith.pool.begin().await?;
    let mut written = 0;
    for row in &rows {
        let mut exists =
            Sql::for_backend(monolith.backend, "SELECT COUNT(*) FROM users WHERE id = ");
        exists.bind(row.id);
        let n: i64 = exists.build_scalar().fetch_one(&mut *tx).await?;
        let q = if n > 0 {
            row.update(monolith.backend)
        } else {
            row.insert(monolith.backend, "")
        };
        match q.build().execute(&mut *tx).await {
            Ok(_) => written += 1,
            Err(e) if service_kit::db::is_unique_violation(&e) => {
                // The same email registered on both sides during a cut-over: a person decides.
                tracing::error!(
                    user_id = row.id,
                    "handoff: user's email is taken by another user in the monolith; skipped"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    if changes.advance_to > checkpoint {
        outbox::save_checkpoint(&mut tx, monolith.backend, HANDOFF, changes.advance_to).await?;
    }
    tx.commit().await?;
    let mut trim = Sql::new("DELETE FROM user_outbox WHERE seq <= ");
    trim.bind(changes.advance_to);
    trim.build().execute(&own.pool).await?;
    Ok(Round {
        written,
        read_up_to: Some(changes.last_seq),
    })
}

/// Starts keeping the two user tables in agreement: the write-back of registrations at once
/// (requests wait on the handle it returns), and, once the backfill is done, the forward sync,
/// which publishes how far it got on `progress`.
pub fn start(own: Database, monolith: Database, progress: Arc<Progress>) -> Arc<UsersBack> {
    let back = WriteThrough::new(
        Users {
            own: own.clone(),
            monolith: monolith.clone(),
        },
        OWN_OUTBOX,
        "users back to the monolith",
    );
    tokio::spawn(back.clone().run());
    tokio::spawn(run(own, monolith, progress));
    back
}

/// The monolith's users followed into this service ([`outbox::follow`] drives it).
struct FromMonolith {
    own: Database,
    monolith: Database,
}

impl outbox::Follow for FromMonolith {
    fn what(&self) -> &'static str {
        "users from the monolith"
    }

    /// Registered first (changes made while copying stay in the monolith's outbox), then the
    /// backfill.
    async fn start(&self) -> anyhow::Result<()> {
        outbox::register(&self.own, FORWARD, &self.monolith, &MONOLITH_OUTBOX, "auth").await?;
        let n = backfill(&self.own, &self.monolith).await?;
        tracing::info!(written = n, "users backfilled from the monolith");
        Ok(())
    }

    async fn round(&self, follower: &mut Follower) -> anyhow::Result<usize> {
        forward(&self.own, &self.monolith, follower).await
    }

    async fn retry_set_aside(&self) -> anyhow::Result<usize> {
        SET_ASIDE
            .retry(&self.own, |keys, to| {
                apply_forward(&self.own, &self.monolith, keys, to)
            })
            .await
    }

    async fn applied(&self) -> Result<i64, sqlx::Error> {
        outbox::checkpoint(&self.own, FORWARD).await
    }
}

/// Backfills (retrying until it succeeds), then follows the monolith's users until the process
/// stops.
async fn run(own: Database, monolith: Database, progress: Arc<Progress>) {
    outbox::follow(
        FromMonolith { own, monolith },
        MONOLITH_OUTBOX,
        Some(progress),
    )
    .await;
}
