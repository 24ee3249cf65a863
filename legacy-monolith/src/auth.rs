//! Users and sessions: register, login, logout, me; and the extractors that tell handlers who
//! is calling.
//!
//! Passwords are hashed with argon2 on the blocking pool (a hash takes tens of milliseconds and
//! must not stall the async workers). Login answers the same 401 for an unknown email and a wrong
//! password, and spends the same hashing work on both, so neither the message nor the timing
//! tells which emails are registered.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{FromRequestParts, State};
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::Serialize;
use service_kit::ErrorResponse;
use service_kit::clock;
use service_kit::extract::JsonObject;
use service_kit::session::{self, Session};
use sqlx::Row;

use crate::app::ApiContext;
use crate::error::{Error, Result};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/me", get(me))
}

/// A user as the API shows it (never with the password hash).
#[derive(Debug, Serialize)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
}

impl User {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<Self> {
        Ok(User {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            role: row.try_get("role")?,
            created_at: clock::rfc3339(row.try_get("created_at")?),
        })
    }
}

/// The caller's session; rejects with 401 when there is none.
pub struct CurrentUser(pub Session);

/// The caller's session when it is an admin's; 401 without a session, 403 for anybody else.
pub struct AdminUser(pub Session);

/// The caller's session if there is one; never rejects (anonymous callers are fine).
pub struct MaybeUser(pub Option<Session>);

async fn session_of(parts: &Parts, ctx: &ApiContext) -> Result<Option<Session>> {
    match session::sid_from_headers(&parts.headers) {
        Some(sid) => Ok(ctx.sessions.get(sid).await?),
        None => Ok(None),
    }
}

impl FromRequestParts<ApiContext> for CurrentUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, ctx: &ApiContext) -> Result<Self> {
        match session_of(parts, ctx).await? {
            Some(s) => Ok(CurrentUser(s)),
            None => Err(ErrorResponse::unauthorized().into()),
        }
    }
}

impl FromRequestParts<ApiContext> for AdminUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, ctx: &ApiContext) -> Result<Self> {
        let CurrentUser(s) = CurrentUser::from_request_parts(parts, ctx).await?;
        if s.is_admin() {
            Ok(AdminUser(s))
        } else {
            Err(ErrorResponse::forbidden().into())
        }
    }
}

impl FromRequestParts<ApiContext> for MaybeUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, ctx: &ApiContext) -> Result<Self> {
        Ok(MaybeUser(session_of(parts, ctx).await?))
    }
}

/// Checks the shape of an email address: one `@`, a non-empty local part, a dotted domain,
/// no whitespace. Deliverability is not our business.
pub fn email_problem(email: &str) -> Option<&'static str> {
    if email.len() > 254 {
        return Some("must be at most 254 characters long");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Some("must be an email address");
    };
    let ok = !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace);
    (!ok).then_some("must be an email address")
}

async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Hashing(e.to_string()))
    })
    .await?
}

async fn verify_password(password: String, hash: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| Error::Hashing(e.to_string()))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await?
}

/// A hash nobody's password matches, verified against for unknown emails so that login takes
/// as long for them as for a wrong password.
async fn decoy_hash() -> Result<String> {
    static DECOY: OnceLock<String> = OnceLock::new();
    if let Some(h) = DECOY.get() {
        return Ok(h.clone());
    }
    let h = hash_password(random_password()).await?;
    Ok(DECOY.get_or_init(|| h).clone())
}

/// 24 random characters, for generated demo credentials.
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..24)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

async fn user_by_id(ctx: &ApiContext, id: i64) -> Result<Option<User>> {
    let row = sqlx::query("SELECT id, email, name, role, created_at FROM users WHERE id = ?")
        .bind(id)
        .fetch_optional(&ctx.db.pool)
        .await?;
    row.as_ref().map(User::from_row).transpose()
}

async fn register(State(ctx): State<ApiContext>, body: JsonObject) -> Result<Response> {
    let mut f = body.fields();
    f.reject_unknown(&["email", "password", "name"], &[]);
    let email = f.string("email", 3..=254).map(|e| e.to_lowercase());
    if let Some(problem) = email.as_deref().and_then(email_problem) {
        f.fail("email", problem);
    }
    let password = f.string("password", 8..=128);
    let name = f.string("name", 1..=100);
    f.finish()?;
    let (email, password, name) = (email.unwrap(), password.unwrap(), name.unwrap());

    let hash = hash_password(password).await?;
    let now = clock::now_ms();
    let mut conn = ctx.db.pool.acquire().await?;
    let inserted = sqlx::query(
        "INSERT INTO users (email, name, password_hash, role, created_at) VALUES (?, ?, ?, 'customer', ?)",
    )
    .bind(&email)
    .bind(&name)
    .bind(&hash)
    .bind(now)
    .execute(&mut *conn)
    .await;
    let id = match inserted {
        Ok(r) => service_kit::db::inserted_id(&r, &mut conn).await?,
        Err(e) if service_kit::db::is_unique_violation(&e) => {
            return Err(Error::conflict("email is already registered"));
        }
        Err(e) => return Err(e.into()),
    };
    drop(conn);
    let user = user_by_id(&ctx, id)
        .await?
        .ok_or_else(|| Error::not_found("user vanished after registration"))?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

async fn login(State(ctx): State<ApiContext>, body: JsonObject) -> Result<Response> {
    let mut f = body.fields();
    f.reject_unknown(&["email", "password"], &[]);
    let email = f.string("email", 1..=254).map(|e| e.to_lowercase());
    let password = f.string("password", 1..=1024);
    f.finish()?;
    let (email, password) = (email.unwrap(), password.unwrap());

    let row = sqlx::query(
        "SELECT id, email, name, role, created_at, password_hash FROM users WHERE email = ?",
    )
    .bind(&email)
    .fetch_optional(&ctx.db.pool)
    .await?;
    let (user, valid) = match row {
        Some(row) => {
            let hash: String = row.try_get("password_hash")?;
            let valid = verify_password(password, hash).await?;
            (Some(User::from_row(&row)?), valid)
        }
        None => {
            verify_password(password, decoy_hash().await?).await?;
            (None, false)
        }
    };
    let Some(user) = user.filter(|_| valid) else {
        return Err(ErrorResponse::unauthorized_with("invalid email or password").into());
    };
    let sid = ctx
        .sessions
        .create(&Session {
            user_id: user.id,
            role: user.role.clone(),
            created_at: clock::now_ms(),
        })
        .await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        SET_COOKIE,
        session::set_cookie(&sid, ctx.settings.cookie_secure),
    );
    Ok((StatusCode::OK, headers, Json(user)).into_response())
}

async fn logout(State(ctx): State<ApiContext>, headers: HeaderMap) -> Result<Response> {
    if let Some(sid) = session::sid_from_headers(&headers) {
        ctx.sessions.delete(sid).await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(
            SET_COOKIE,
            session::clear_cookie(ctx.settings.cookie_secure),
        )],
    )
        .into_response())
}

async fn me(State(ctx): State<ApiContext>, CurrentUser(s): CurrentUser) -> Result<Json<User>> {
    // A session can outlive its user row (deleted by hand): that is no longer a login.
    user_by_id(&ctx, s.user_id)
        .await?
        .map(Json)
        .ok_or_else(|| ErrorResponse::unauthorized().into())
}

/// Creates the configured admin, or brings an existing account to the configured password and
/// the admin role: the configuration is the source of truth for this one account.
pub async fn ensure_admin(ctx: &ApiContext, email: &str, password: &str) -> anyhow::Result<()> {
    let email = email.trim().to_lowercase();
    if let Some(problem) = email_problem(&email) {
        anyhow::bail!("BANYAN_ADMIN_EMAIL {problem}");
    }
    let n = password.chars().count();
    if !(12..=128).contains(&n) {
        anyhow::bail!("BANYAN_ADMIN_PASSWORD must be 12 to 128 characters long");
    }
    let hash = hash_password(password.to_owned())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let updated = sqlx::query("UPDATE users SET password_hash = ?, role = 'admin' WHERE email = ?")
        .bind(&hash)
        .bind(&email)
        .execute(&ctx.db.pool)
        .await?;
    if updated.rows_affected() == 0 {
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE email = ?")
            .bind(&email)
            .fetch_optional(&ctx.db.pool)
            .await?;
        if exists.is_none() {
            sqlx::query(
                "INSERT INTO users (email, name, password_hash, role, created_at) VALUES (?, 'Administrator', ?, 'admin', ?)",
            )
            .bind(&email)
            .bind(&hash)
            .bind(clock::now_ms())
            .execute(&ctx.db.pool)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shapes() {
        assert_eq!(email_problem("a@b.co"), None);
        assert!(email_problem("ab.co").is_some());
        assert!(email_problem("@b.co").is_some());
        assert!(email_problem("a@bco").is_some());
        assert!(email_problem("a@b@c.co").is_some());
        assert!(email_problem("a b@c.co").is_some());
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let a = random_password();
        assert_eq!(a.len(), 24);
        assert_ne!(a, random_password());
    }
}
