//! Products and categories: listing with filters and sorting, lookup, bestsellers (cached for
//! five minutes, dropped on every write that can change them), and admin writes.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use service_kit::clock;
use service_kit::contract::products::{self as contract, Category, ListQuery, ProductInput};
use service_kit::extract::{JsonObject, QueryParams, parse_id};
use sqlx::any::AnyRow;
use sqlx::{Any, QueryBuilder, Row};

use crate::app::ApiContext;
use crate::auth::AdminUser;
use crate::error::{Error, Result};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/products", get(list).post(create))
        .route("/api/products/bestsellers", get(bestsellers))
        .route(
            "/api/products/{id}",
            get(fetch).put(replace).patch(patch).delete(remove),
        )
        .route("/api/categories", get(categories))
}

/// The cache key of the bestseller list (the top [`contract::BESTSELLERS_MAX`]; any `limit` is
/// a prefix).
pub const BESTSELLERS_KEY: &str = "bestsellers";
const BESTSELLERS_TTL: Duration = Duration::from_secs(300);

pub use service_kit::contract::Page;
pub use service_kit::contract::products::Product;

pub fn product_from_row(row: &AnyRow) -> Result<Product> {
    Ok(Product {
        id: row.try_get("id")?,
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        category: row.try_get("category")?,
        price_cents: row.try_get("price_cents")?,
        currency: row.try_get("currency")?,
        stock: row.try_get("stock")?,
        sales: row.try_get("sales")?,
        created_at: clock::rfc3339(row.try_get("created_at")?),
        updated_at: clock::rfc3339(row.try_get("updated_at")?),
    })
}

async fn list(State(ctx): State<ApiContext>, query: QueryParams) -> Result<Json<Page<Product>>> {
    let q = ListQuery::parse(query)?;
    let filter = |qb: &mut QueryBuilder<Any>| {
        if let Some(c) = &q.category {
            qb.push(" AND category = ").push_bind(c.clone());
        }
        if let Some(lo) = q.min_price {
            qb.push(" AND price_cents >= ").push_bind(lo);
        }
        if let Some(hi) = q.max_price {
            qb.push(" AND price_cents <= ").push_bind(hi);
        }
    };
    let mut count = QueryBuilder::<Any>::new("SELECT COUNT(*) FROM products WHERE 1 = 1");
    filter(&mut count);
    let total: i64 = count.build_query_scalar().fetch_one(&ctx.db.pool).await?;

    let mut select = QueryBuilder::<Any>::new(
        "SELECT id, sku, name, description, category, price_cents, currency, stock, sales, created_at, updated_at \
         FROM products WHERE 1 = 1",
    );
    filter(&mut select);
    select.push(q.sort.order_by());
    select
        .push(" LIMIT ")
        .push_bind(q.per_page)
        .push(" OFFSET ")
        .push_bind(q.offset());
    let rows = select.build().fetch_all(&ctx.db.pool).await?;
    let items = rows.iter().map(product_from_row).collect::<Result<_>>()?;
    Ok(Json(Page {
        items,
        page: q.page,
        per_page: q.per_page,
        total,
    }))
}

pub async fn product_by_id(ctx: &ApiContext, id: i64) -> Result<Option<Product>> {
    let row = sqlx::query(
        "SELECT id, sku, name, description, category, price_cents, currency, stock, sales, created_at, updated_at \
         FROM products WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(&ctx.db.pool)
    .await?;
    row.as_ref().map(product_from_row).transpose()
}

fn missing(raw_id: &str) -> Error {
    contract::not_found(raw_id).into()
}

async fn fetch(State(ctx): State<ApiContext>, Path(raw): Path<String>) -> Result<Json<Product>> {
    let id = parse_id(&raw).ok_or_else(|| missing(&raw))?;
    product_by_id(&ctx, id)
        .await?
        .map(Json)
        .ok_or_else(|| missing(&raw))
}

async fn bestsellers(
    State(ctx): State<ApiContext>,
    query: QueryParams,
) -> Result<Json<Vec<Product>>> {
    let limit = contract::bestsellers_limit(query)?;

    if let Some(cached) = ctx.cache.get(BESTSELLERS_KEY).await
        && let Ok(mut list) = serde_json::from_str::<Vec<Product>>(&cached)
    {
        list.truncate(limit);
        return Ok(Json(list));
    }
    let rows = sqlx::query(
        "SELECT id, sku, name, description, category, price_cents, currency, stock, sales, created_at, updated_at \
         FROM products ORDER BY sales DESC, id ASC LIMIT ?",
    )
    .bind(contract::BESTSELLERS_MAX)
    .fetch_all(&ctx.db.pool)
    .await?;
    let mut list = rows
        .iter()
        .map(product_from_row)
        .collect::<Result<Vec<_>>>()?;
    if let Ok(json) = serde_json::to_string(&list) {
        ctx.cache.set(BESTSELLERS_KEY, json, BESTSELLERS_TTL).await;
    }
    list.truncate(limit);
    Ok(Json(list))
}

/// Drops caches that a change to products can make stale.
pub async fn invalidate_caches(ctx: &ApiContext) {
    ctx.cache.delete(BESTSELLERS_KEY).await;
}

async fn categories(State(ctx): State<ApiContext>) -> Result<Json<Vec<Category>>> {
    let rows = sqlx::query(
        "SELECT category, COUNT(*) AS product_count FROM products GROUP BY category ORDER BY category",
    )
    .fetch_all(&ctx.db.pool)
    .await?;
    let list = rows
        .iter()
        .map(|r| {
            Ok(Category {
                name: r.try_get("category")?,
                product_count: r.try_get("product_count")?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Json(list))
}

fn write_error(e: sqlx::Error) -> Error {
    if service_kit::db::is_unique_violation(&e) {
        contract::duplicate_sku().into()
    } else {
        e.into()
    }
}

async fn create(
    State(ctx): State<ApiContext>,
    _admin: AdminUser,
    body: JsonObject,
) -> Result<Response> {
    let input = ProductInput::parse(&body, false)?;
    let now = clock::now_ms();
    let mut conn = ctx.db.pool.acquire().await?;
    let result = sqlx::query(
        "INSERT INTO products (sku, name, description, category, price_cents, currency, stock, sales, created_at, updated_at, edited_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
    )
    .bind(input.sku)
    .bind(input.name)
    .bind(input.description)
    .bind(input.category)
    .bind(input.price_cents)
    .bind(input.currency)
    .bind(input.stock)
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    let id = service_kit::db::inserted_id(&result, &mut conn).await?;
    drop(conn);
    invalidate_caches(&ctx).await;
    let product = product_by_id(&ctx, id)
        .await?
        .ok_or_else(|| missing(&id.to_string()))?;
    Ok((
        StatusCode::CREATED,
        [(LOCATION, format!("/api/products/{id}"))],
        Json(product),
    )
        .into_response())
}

async fn replace(
    State(ctx): State<ApiContext>,
    _admin: AdminUser,
    Path(raw): Path<String>,
    body: JsonObject,
) -> Result<Json<Product>> {
    let id = parse_id(&raw).ok_or_else(|| missing(&raw))?;
    let input = ProductInput::parse(&body, false)?;
    update(&ctx, id, input).await
}

async fn patch(
    State(ctx): State<ApiContext>,
    _admin: AdminUser,
    Path(raw): Path<String>,
    body: JsonObject,
) -> Result<Json<Product>> {
    let id = parse_id(&raw).ok_or_else(|| missing(&raw))?;
    let input = ProductInput::parse(&body, true)?;
    update(&ctx, id, input).await
}

async fn update(ctx: &ApiContext, id: i64, input: ProductInput) -> Result<Json<Product>> {
    let now = clock::now_ms();
    let mut qb = QueryBuilder::<Any>::new("UPDATE products SET updated_at = ");
    qb.push_bind(now).push(", edited_at = ").push_bind(now);
    for (column, value) in input.text_columns() {
        qb.push(format!(", {column} = ")).push_bind(value);
    }
    for (column, value) in input.int_columns() {
        qb.push(format!(", {column} = ")).push_bind(value);
    }
    qb.push(" WHERE id = ").push_bind(id);
    qb.build()
        .execute(&ctx.db.pool)
        .await
        .map_err(write_error)?;
    // Affected-row counts differ by backend (MySQL counts changed rows only), so existence is
    // decided by reading the row back.
    let product = product_by_id(ctx, id)
        .await?
        .ok_or_else(|| missing(&id.to_string()))?;
    invalidate_caches(ctx).await;
    Ok(Json(product))
}

async fn remove(
    State(ctx): State<ApiContext>,
    _admin: AdminUser,
    Path(raw): Path<String>,
) -> Result<StatusCode> {
    let id = parse_id(&raw).ok_or_else(|| missing(&raw))?;
    let result = sqlx::query("DELETE FROM products WHERE id = ?")
        .bind(id)
        .execute(&ctx.db.pool)
        .await?;
    if result.rows_affected() == 0 {
        return Err(missing(&raw));
    }
    invalidate_caches(&ctx).await;
    Ok(StatusCode::NO_CONTENT)
}
