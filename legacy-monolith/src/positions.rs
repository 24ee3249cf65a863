//! Stamping each successful write with how far the change streams had got, so the services
//! that copy this database can answer the writer's next request with the write in it
//! ([`service_kit::read_your_writes`]).
//!
//! Writes to products and orders (which take stock) reach `product_changes` through triggers,
//! registrations reach `user_changes`. After such a write succeeds, the highest sequence number
//! of each stream is at least the write's own, and goes to the client in the `banyan_after`
//! cookie (merged with the position the client already carried). Other requests are untouched.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use service_kit::read_your_writes::After;

use crate::app::ApiContext;

/// Whether a request may change a stream the services follow.
fn changes_a_stream(method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        && (path.starts_with("/api/products")
            || path.starts_with("/api/orders")
            || path == "/api/auth/register")
}

async fn stream_head(ctx: &ApiContext, table: &str) -> Result<i64, sqlx::Error> {
    let q = format!("SELECT COALESCE(MAX(seq), 0) FROM {table}");
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(q))
        .fetch_one(&ctx.db.pool)
        .await
}

/// The middleware (see the module docs).
pub async fn stamp(State(ctx): State<ApiContext>, request: Request, next: Next) -> Response {
    if !changes_a_stream(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let carried = After::from_headers(request.headers());
    let mut response = next.run(request).await;
    if !response.status().is_success() {
        return response;
    }
    let (products, users) = tokio::join!(
        stream_head(&ctx, "product_changes"),
        stream_head(&ctx, "user_changes")
    );
    match (products, users) {
        (Ok(products), Ok(users)) => {
            let after = carried.max(After { products, users });
            if let Ok(v) = HeaderValue::from_str(&after.set_cookie()) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        // The write is done; without a position the writer's next read may merely lag.
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot read the change streams' positions")
        }
    }
    response
}
