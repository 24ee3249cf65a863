//! Users and sessions: register, login, logout, me; and the extractors that tell handlers who
//! is calling.
//!
//! Validation, messages and password hashing are shared with the auth service
//! ([`service_kit::contract::auth`], [`service_kit::password`]). Login answers the same 401 for
//! an unknown email and a wrong password, and spends the same hashing work on both, so neither
//! the message nor the timing tells which emails are registered.
use axum::extract::{FromRequestParts, State};
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use service_kit::ErrorResponse;
use service_kit::clock;
use service_kit::contract::auth::{self as contract, Login, Registration, User, email_problem};
use service_kit::extract::JsonObject;
use service_kit::password;
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

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        created_at: clock::rfc3339(row.try_get("created_at")?),
    })
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

async fn user_by_id(ctx: &ApiContext, id: i64) -> Result<Option<User>> {
    let row = sqlx::query("SELECT id, email, name, role, created_at FROM users WHERE id = ?")
        .bind(id)
        .fetch_optional(&ctx.db.pool)
        .await?;
    row.as_ref().map(user_from_row).transpose()
}

async fn register(State(ctx): State<ApiContext>, body: JsonObject) -> Result<Response> {
    let Registration {
        email,
        password,
        name,
    } = Registration::parse(&body)?;
    let hash = password::hash(password).await?;
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
            return Err(contract::email_taken().into());
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
    let Login { email, password } = Login::parse(&body)?;

    let row = sqlx::query(
        "SELECT id, email, name, role, created_at, password_hash FROM users WHERE email = ?",
    )
    .bind(&email)
    .fetch_optional(&ctx.db.pool)
    .await?;
    let (user, valid) = match row {
        Some(row) => {
            let hash: String = row.try_get("password_hash")?;
            let valid = password::verify(password, hash).await?;
            (Some(user_from_row(&row)?), valid)
        }
        None => {
            password::verify_decoy(password).await?;
            (None, false)
        }
    };
    let Some(user) = user.filter(|_| valid) else {
        return Err(contract::bad_credentials().into());
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
    let hash = password::hash(password.to_owned()).await?;
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
