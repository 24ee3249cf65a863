//! `/api/auth/*`: register, login, logout, me, with the monolith's contract.

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use service_kit::ErrorResponse;
use service_kit::clock;
use service_kit::contract::auth::{self as contract, Login, Registration, User};
use service_kit::db::Sql;
use service_kit::extract::JsonObject;
use service_kit::password;
use service_kit::session::{self, Session};
use sqlx::Row;

use crate::app::ApiContext;
use crate::error::Result;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/me", get(me))
}

const USER_COLUMNS: &str = "id, email, name, role, created_at";

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        created_at: clock::rfc3339(row.try_get("created_at")?),
    })
}

async fn register(State(ctx): State<ApiContext>, body: JsonObject) -> Result<Response> {
    let Registration {
        email,
        password,
        name,
    } = Registration::parse(&body)?;
    let hash = password::hash(password).await?;
    let mut insert =
        Sql::new("INSERT INTO users (email, name, password_hash, role, created_at) VALUES (");
    insert
        .bind(email)
        .push(", ")
        .bind(name)
        .push(", ")
        .bind(hash)
        .push(", 'customer', ")
        .bind(clock::now_ms())
        .push(&format!(") RETURNING {USER_COLUMNS}"));
    let mut tx = ctx.db.pool.begin().await?;
    let row = match insert.build().fetch_one(&mut *tx).await {
        Ok(row) => row,
        Err(e) if service_kit::db::is_unique_violation(&e) => {
            return Err(contract::email_taken().into());
        }
        Err(e) => return Err(e.into()),
    };
    let user = user_from_row(&row)?;
    let seq = crate::sync::record(&mut tx, user.id).await?;
    tx.commit().await?;
    if let Some(back) = &ctx.write_back {
        // Answered once the monolith knows the user too: an order placed at once finds them.
        back.written_back(seq).await;
    }
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

async fn login(State(ctx): State<ApiContext>, body: JsonObject) -> Result<Response> {
    let Login { email, password } = Login::parse(&body)?;
    let mut q = Sql::new(&format!(
        "SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = "
    ));
    q.bind(email);
    let row = q.build().fetch_optional(&ctx.db.pool).await?;
    let user = match row {
        Some(row) => {
            let hash: String = row.try_get("password_hash")?;
            password::verify(password, hash)
                .await?
                .then(|| user_from_row(&row))
                .transpose()?
        }
        None => {
            password::verify_decoy(password).await?;
            None
        }
    };
    let Some(user) = user else {
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
    Ok((
        StatusCode::OK,
        [(SET_COOKIE, session::set_cookie(&sid, ctx.cookie_secure))],
        Json(user),
    )
        .into_response())
}

async fn logout(State(ctx): State<ApiContext>, headers: HeaderMap) -> Result<Response> {
    if let Some(sid) = session::sid_from_headers(&headers) {
        ctx.sessions.delete(sid).await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(SET_COOKIE, session::clear_cookie(ctx.cookie_secure))],
    )
        .into_response())
}

async fn me(State(ctx): State<ApiContext>, headers: HeaderMap) -> Result<Json<User>> {
    let session = match session::sid_from_headers(&headers) {
        Some(sid) => ctx.sessions.get(sid).await?,
        None => None,
    };
    let Some(session) = session else {
        return Err(ErrorResponse::unauthorized().into());
    };
    let mut q = Sql::new(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = "));
    q.bind(session.user_id);
    // A session can outlive its user row (deleted by hand): that is no longer a login.
    match q.build().fetch_optional(&ctx.db.pool).await? {
        Some(row) => Ok(Json(user_from_row(&row)?)),
        None => Err(ErrorResponse::unauthorized().into()),
    }
}
