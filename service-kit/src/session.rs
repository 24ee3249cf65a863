//! Sessions shared by every process that needs to know who the caller is.
//!
//! The monolith and the extracted services resolve the same `sid` cookie against the same store,
//! so a login made through one is valid in all of them; that is what lets the proxy move
//! `/api/auth/*` to a new service without logging anybody out. The store is Redis in production
//! and an embedded SQLite file under the data directory otherwise (several processes on one
//! machine can share it).
//!
//! The cookie carries 256 random bits; the store keys sessions by the SHA-256 of that value, so
//! a dump of the store holds no usable session id. Session ids are never logged.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use crate::clock;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "sid";
/// How long a session lives after login.
pub const SESSION_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Length of an encoded session id (32 bytes, base64url without padding).
const SID_LEN: usize = 43;

/// What a session says about its user. Serialized as JSON in the store: this is the shared
/// format every service reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user_id: i64,
    pub role: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

/// Longest a request waits on Redis for its session before answering 503. Bounds the whole
/// call, including any reconnect the client library decides to wait for.
pub const REDIS_DEADLINE: Duration = Duration::from_millis(1500);

/// Runs a Redis operation under [`REDIS_DEADLINE`].
pub(crate) async fn within_deadline<T>(
    op: impl std::future::Future<Output = redis::RedisResult<T>>,
    deadline: Duration,
) -> Result<T, SessionError> {
    match tokio::time::timeout(deadline, op).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SessionError::Timeout),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session store (redis): {0}")]
    Redis(#[from] redis::RedisError),
    #[error("session store (redis) did not answer in time")]
    Timeout,
    #[error("session store (embedded): {0}")]
    Embedded(#[from] sqlx::Error),
    #[error("session store holds an unreadable session: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// The session store: Redis or the embedded file.
#[derive(Clone)]
pub enum SessionStore {
    Redis {
        conn: ConnectionManager,
        prefix: String,
    },
    Embedded {
        pool: SqlitePool,
    },
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionStore::Redis { prefix, .. } => write!(f, "SessionStore::Redis({prefix:?})"),
            SessionStore::Embedded { .. } => write!(f, "SessionStore::Embedded"),
        }
    }
}

/// Opens a Redis connection manager (reconnects by itself), failing fast when the server is not
/// there at start.
pub async fn connect_redis(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("invalid REDIS_URL: {e}"))?;
    let conn = tokio::time::timeout(Duration::from_secs(10), ConnectionManager::new(client))
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting to redis"))?
        .map_err(|e| anyhow::anyhow!("connecting to redis: {e}"))?;
    Ok(conn)
}

/// The session store and a read cache for a service, from its configuration: both in Redis
/// when `redis_url` is set (the cache under `<prefix><namespace>:cache:`), otherwise the
/// embedded session file under `data_dir` and an in-process cache.
pub async fn open_with_cache(
    redis_url: Option<&str>,
    prefix: &str,
    data_dir: &Path,
    namespace: &str,
) -> anyhow::Result<(SessionStore, crate::cache::Cache)> {
    Ok(match redis_url {
        Some(url) => {
            let conn = connect_redis(url).await?;
            let sessions =
                SessionStore::open(Some((conn.clone(), prefix.to_owned())), data_dir).await?;
            let cache = crate::cache::Cache::Redis {
                conn,
                prefix: format!("{prefix}{namespace}:cache:"),
            };
            (sessions, cache)
        }
        None => (
            SessionStore::open(None, data_dir).await?,
            crate::cache::Cache::local(),
        ),
    })
}

/// The session store a service's storage options name: Redis when `REDIS_URL` is set, else the
/// embedded file every process of the stack shares.
pub async fn open_from(storage: &crate::config::StorageArgs) -> anyhow::Result<SessionStore> {
    let redis = match &storage.redis_url {
        Some(url) => Some((connect_redis(url).await?, storage.redis_key_prefix.clone())),
        None => None,
    };
    SessionStore::open(redis, &storage.data_dir).await
}

impl SessionStore {
    /// Redis when `redis` is given, otherwise `<data_dir>/sessions.db`.
    pub async fn open(
        redis: Option<(ConnectionManager, String)>,
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        if let Some((conn, prefix)) = redis {
            return Ok(SessionStore::Redis { conn, prefix });
        }
        std::fs::create_dir_all(data_dir)?;
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(data_dir.join("sessions.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS sessions (\
                 key TEXT PRIMARY KEY NOT NULL, \
                 data TEXT NOT NULL, \
                 expires_at INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await?;
        Ok(SessionStore::Embedded { pool })
    }

    /// Stores `session` under a new random id and returns the id (for the cookie only).
    pub async fn create(&self, session: &Session) -> Result<String, SessionError> {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let sid = URL_SAFE_NO_PAD.encode(raw);
        let data = serde_json::to_string(session)?;
        match self {
            SessionStore::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let key = redis_key(prefix, &sid);
                within_deadline(
                    conn.set_ex::<_, _, ()>(key, data, SESSION_TTL.as_secs()),
                    REDIS_DEADLINE,
                )
                .await?;
            }
            SessionStore::Embedded { pool } => {
                let expires = clock::now_ms() + SESSION_TTL.as_millis() as i64;
                sqlx::query("INSERT INTO sessions (key, data, expires_at) VALUES (?, ?, ?)")
                    .bind(digest(&sid))
                    .bind(data)
                    .bind(expires)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(sid)
    }

    /// The live session for `sid`, if any.
    pub async fn get(&self, sid: &str) -> Result<Option<Session>, SessionError> {
        if !is_well_formed(sid) {
            return Ok(None);
        }
        let data: Option<String> = match self {
            SessionStore::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                within_deadline(conn.get(redis_key(prefix, sid)), REDIS_DEADLINE).await?
            }
            SessionStore::Embedded { pool } => {
                sqlx::query_scalar("SELECT data FROM sessions WHERE key = ? AND expires_at > ?")
                    .bind(digest(sid))
                    .bind(clock::now_ms())
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(match data {
            Some(d) => Some(serde_json::from_str(&d)?),
            None => None,
        })
    }

    /// Ends the session (idempotent).
    pub async fn delete(&self, sid: &str) -> Result<(), SessionError> {
        if !is_well_formed(sid) {
            return Ok(());
        }
        match self {
            SessionStore::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                within_deadline(conn.del::<_, ()>(redis_key(prefix, sid)), REDIS_DEADLINE).await?;
            }
            SessionStore::Embedded { pool } => {
                sqlx::query("DELETE FROM sessions WHERE key = ?")
                    .bind(digest(sid))
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Removes expired sessions from the embedded store (Redis expires keys itself).
    pub async fn purge_expired(&self) -> Result<u64, SessionError> {
        match self {
            SessionStore::Redis { .. } => Ok(0),
            SessionStore::Embedded { pool } => {
                Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
                    .bind(clock::now_ms())
                    .execute(pool)
                    .await?
                    .rows_affected())
            }
        }
    }

    /// Whether the store answers, for health checks.
    pub async fn ping(&self) -> bool {
        match self {
            SessionStore::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            }
            SessionStore::Embedded { pool } => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
        }
    }
}

fn digest(sid: &str) -> String {
    let hash = Sha256::digest(sid.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn redis_key(prefix: &str, sid: &str) -> String {
    format!("{prefix}session:{}", digest(sid))
}

fn is_well_formed(sid: &str) -> bool {
    sid.len() == SID_LEN
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The `sid` cookie of a request, if present.
pub fn sid_from_headers(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
}

/// `Set-Cookie` for a new session. `secure` adds the `Secure` attribute (set it behind TLS).
pub fn set_cookie(sid: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={sid}; HttpOnly; Path=/; SameSite=Lax{secure}"
    ))
    .expect("session cookie is a valid header value")
}

/// `Set-Cookie` that makes the browser forget the session.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; HttpOnly; Path=/; SameSite=Lax; Max-Age=0{secure}"
    ))
    .expect("cookie is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sid_among_other_cookies() {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_static("theme=dark; sid=abc; x=1"),
        );
        assert_eq!(sid_from_headers(&h), Some("abc"));
        h.insert("cookie", HeaderValue::from_static("sidx=1"));
        assert_eq!(sid_from_headers(&h), None);
    }

    #[test]
    fn malformed_ids_are_never_looked_up() {
        assert!(!is_well_formed("abc"));
        assert!(!is_well_formed(&"a".repeat(42)));
        assert!(is_well_formed(&"a".repeat(43)));
        assert!(!is_well_formed(&format!("{}%", "a".repeat(42))));
    }

    #[tokio::test]
    async fn embedded_store_round_trip_and_expiry() {
        let dir = std::env::temp_dir().join(format!("banyan-sess-{}", std::process::id()));
        let store = SessionStore::open(None, &dir).await.unwrap();
        let s = Session {
            user_id: 7,
            role: "customer".into(),
            created_at: 1,
        };
        let sid = store.create(&s).await.unwrap();
        assert_eq!(sid.len(), SID_LEN);
        assert_eq!(store.get(&sid).await.unwrap(), Some(s));
        store.delete(&sid).await.unwrap();
        assert_eq!(store.get(&sid).await.unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
