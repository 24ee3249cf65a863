//! Connecting to a service's database by URL.
//!
//! Production runs the monolith on MySQL/MariaDB and the extracted services on PostgreSQL; the
//! embedded default is a SQLite file under the data directory, so a newcomer needs no server.
//! Services write their SQL once against sqlx's `Any` driver (portable SQL, `?` placeholders,
//! integer and text columns) and keep one migration folder per dialect.

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

/// Which database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    MySql,
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let scheme = url.split(':').next().unwrap_or("");
        match scheme {
            "mysql" | "mariadb" => Ok(Backend::MySql),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "sqlite" => Ok(Backend::Sqlite),
            _ => anyhow::bail!(
                "unsupported database URL scheme {scheme:?}: expected mysql://, postgres:// or sqlite://"
            ),
        }
    }
}

/// A pool plus what it is connected to.
#[derive(Clone, Debug)]
pub struct Database {
    pub pool: AnyPool,
    pub backend: Backend,
}

/// The embedded default for a service: `sqlite://<data_dir>/<name>.db`, created when missing.
pub fn embedded_url(data_dir: &Path, name: &str) -> anyhow::Result<String> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let path = data_dir.join(format!("{name}.db"));
    Ok(format!("sqlite://{}?mode=rwc", path.display()))
}

fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

impl Database {
    /// Connects, failing fast (10 s) when the server is not there.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        install_drivers();
        let backend = Backend::from_url(url)?;
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            // WAL lets readers proceed while one writer writes, and several processes share the
            // file safely; the busy timeout queues writers instead of failing them at once.
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            });
        }
        let pool = options
            .connect(url)
            .await
            .with_context(|| format!("connecting to the {backend:?} database"))?;
        Ok(Self { pool, backend })
    }

    /// Runs the migrations for this backend.
    pub async fn migrate(
        &self,
        mysql: &Migrator,
        sqlite: &Migrator,
        postgres: Option<&Migrator>,
    ) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::MySql => mysql,
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres.context("this service has no PostgreSQL migrations")?,
        };
        migrator
            .run(&self.pool)
            .await
            .context("running database migrations")?;
        Ok(())
    }

    /// `SELECT 1`, for health checks.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// Opens an extracted service's own database: `DATABASE_URL`, or `<data-dir>/<name>.db`
/// embedded; PostgreSQL or SQLite (never MySQL, which is the monolith's), migrated.
pub async fn open_service_db(
    storage: &crate::config::StorageArgs,
    name: &str,
    postgres: &Migrator,
    sqlite: &Migrator,
) -> anyhow::Result<Database> {
    let url = match &storage.database_url {
        Some(url) => url.clone(),
        None => embedded_url(&storage.data_dir, name)?,
    };
    let db = Database::connect(&url, storage.max_connections).await?;
    match db.backend {
        Backend::Postgres => postgres.run(&db.pool).await,
        Backend::Sqlite => sqlite.run(&db.pool).await,
        Backend::MySql => {
            anyhow::bail!("the {name} service runs on PostgreSQL or SQLite, not MySQL")
        }
    }
    .context("running database migrations")?;
    Ok(db)
}

/// True when a database error is a unique-constraint violation (a duplicate sku or email).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// Moves PostgreSQL's id sequence of `table` past the ids copied into it from another database,
/// so rows created here never reuse one (SQLite picks `MAX(id) + 1` by itself). Only forward,
/// and only when the sequence is behind: sequences are not transactional, and setting one back
/// to `MAX(id)` while an insert holds an id handed out above it (not committed yet) handed that
/// id out a second time (a create answered 409 for a sku it had never seen).
pub async fn advance_id_sequence(db: &Database, table: &str) -> Result<(), sqlx::Error> {
    if db.backend == Backend::Postgres {
        let q = format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), t.m) FROM (SELECT MAX(id) AS m FROM {table}) AS t \
             WHERE t.m > COALESCE(pg_sequence_last_value(pg_get_serial_sequence('{table}', 'id')::regclass), 0)"
        );
        sqlx::query(sqlx::AssertSqlSafe(q))
            .execute(&db.pool)
            .await?;
    }
    Ok(())
}

/// A row refers to one that does not exist (yet: during a migration, the row may still be on
/// its way from the other side).
pub fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
}

/// The id an `INSERT` just generated. MySQL reports it with the result; SQLite through the `Any`
/// driver does not, so it is asked on the same connection (`last_insert_rowid()` is
/// per-connection, which is why the caller must pass the connection that ran the insert).
pub async fn inserted_id(
    result: &sqlx::any::AnyQueryResult,
    conn: &mut sqlx::AnyConnection,
) -> Result<i64, sqlx::Error> {
    if let Some(id) = result.last_insert_id().filter(|id| *id > 0) {
        return Ok(id);
    }
    sqlx::query_scalar("SELECT last_insert_rowid()")
        .fetch_one(conn)
        .await
}

/// Builds SQL with numbered placeholders (`$1`, `$2`, ...) and its arguments together.
///
/// `QueryBuilder<Any>` writes `?`, which PostgreSQL rejects; `$N` is understood by PostgreSQL
/// and by SQLite (sqlx binds `$N` by number there too), so services that run on both write
/// their dynamic SQL with this. MySQL knows only `?`: code that may talk to the monolith's
/// MySQL database starts with [`Sql::for_backend`]. Values only ever travel as bound arguments.
#[derive(Default)]
pub struct Sql {
    text: String,
    args: sqlx::any::AnyArguments,
    count: usize,
    question_marks: bool,
}

impl Sql {
    pub fn new(start: &str) -> Self {
        Self {
            text: start.to_owned(),
            ..Self::default()
        }
    }

    /// Like [`Sql::new`], with the placeholders `backend` understands (`?` for MySQL).
    pub fn for_backend(backend: Backend, start: &str) -> Self {
        Self {
            question_marks: backend == Backend::MySql,
            ..Self::new(start)
        }
    }

    /// Appends SQL text (never a value: see [`bind`](Self::bind)).
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    /// Appends a placeholder for `value`.
    pub fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any> + Send + 'static,
    {
        use sqlx::Arguments;
        self.count += 1;
        if self.question_marks {
            self.text.push('?');
        } else {
            self.text.push('$');
            self.text.push_str(&self.count.to_string());
        }
        self.args
            .add(value)
            .expect("encoding a bound value cannot fail for the types we bind");
        self
    }

    /// Appends `(v1, v2, …)`, a placeholder for each of `values`: the list of an `IN`.
    pub fn bind_list<'v>(&mut self, values: impl IntoIterator<Item = &'v i64>) -> &mut Self {
        self.text.push('(');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(*v);
        }
        self.text.push(')');
        self
    }

    pub fn sql(&self) -> &str {
        &self.text
    }

    /// The query, ready to execute or fetch.
    pub fn build(self) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
        // Safe: the text is ours; every value went through `bind`.
        sqlx::query_with(sqlx::AssertSqlSafe(self.text), self.args)
    }

    /// The query, for a single scalar result.
    pub fn build_scalar<O>(
        self,
    ) -> sqlx::query::QueryScalar<'static, sqlx::Any, O, sqlx::any::AnyArguments>
    where
        (O,): for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        sqlx::query_scalar_with(sqlx::AssertSqlSafe(self.text), self.args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered() {
        let mut q = Sql::new("SELECT * FROM t WHERE a = ");
        q.bind(1_i64).push(" AND b = ").bind("x".to_owned());
        assert_eq!(q.sql(), "SELECT * FROM t WHERE a = $1 AND b = $2");
        let mut q = Sql::for_backend(Backend::MySql, "SELECT * FROM t WHERE a = ");
        q.bind(1_i64).push(" AND b = ").bind("x".to_owned());
        assert_eq!(q.sql(), "SELECT * FROM t WHERE a = ? AND b = ?");
    }

    #[tokio::test]
    async fn numbered_placeholders_run_on_sqlite() {
        let dir = std::env::temp_dir().join(format!("banyan-sql-{}", std::process::id()));
        let db = Database::connect(&embedded_url(&dir, "t").unwrap(), 1)
            .await
            .unwrap();
        let mut q = Sql::new("SELECT ");
        q.bind(40_i64).push(" + ").bind(2_i64);
        let n: i64 = q.build_scalar().fetch_one(&db.pool).await.unwrap();
        assert_eq!(n, 42);
        let _ = std::fs::remove_dir_all(dir);
    }
}
