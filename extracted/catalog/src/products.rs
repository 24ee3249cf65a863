//! `/api/products*` and `/api/categories` on the catalog service's own database.
//!
//! Same contract as the monolith (shapes, rules, messages from
//! [`service_kit::contract::products`]); a separate implementation: PostgreSQL/SQLite SQL with
//! numbered placeholders, `INSERT ... RETURNING`, and generation-keyed caches
//! ([`crate::cache`]) on every read.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use service_kit::clock;
use service_kit::contract::Page;
use service_kit::contract::products::{
    self as contract, Category, ListQuery, Product, ProductInput,
};
use service_kit::db::Sql;
use service_kit::extract::{JsonObject, QueryParams, parse_id};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::app::ApiContext;
use crate::auth::AdminUser;
use crate::cache::{BESTSELLERS_TTL, LIST_TTL, PRODUCT_TTL};
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

const SELECT: &str = "SELECT id, sku, name, description, category, price_cents, currency, stock, sales, created_at, updated_at FROM products";

fn from_row(row: &AnyRow) -> Result<Product> {
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

fn missing(raw: &str) -> Error {
    contract::not_found(raw).into()
}

fn write_error(e: sqlx::Error) -> Error {
    if service_kit::db::is_unique_violation(&e) {
        contract::duplicate_sku().into()
    } else {
        e.into()
    }
}

fn filtered(start: &str, q: &ListQuery) -> Sql {
    let mut sql = Sql::new(start);
    sql.push(" WHERE 1 = 1");
    if let Some(c) = &q.category {
        sql.push(" AND category = ").bind(c.clone());
    }
    if let Some(lo) = q.min_price {
        sql.push(" AND price_cents >= ").bind(lo);
    }
    if let Some(hi) = q.max_price {
        sql.push(" AND price_cents <= ").bind(hi);
    }
    sql
}

async fn list(State(ctx): State<ApiContext>, query: QueryParams) -> Result<Json<Page<Product>>> {
    let q = ListQuery::parse(query)?;
    let key = format!(
        "list:{:?}:{:?}:{:?}:{:?}:{}:{}",
        q.category, q.min_price, q.max_price, q.sort, q.page, q.per_page
    );
    let page = ctx
        .cache
        .get_or_load(&key, LIST_TTL, async {
            let total: i64 = filtered("SELECT COUNT(*) FROM products", &q)
                .build_scalar()
                .fetch_one(&ctx.db.pool)
                .await?;
            let mut select = filtered(SELECT, &q);
            select
                .push(q.sort.order_by())
                .push(" LIMIT ")
                .bind(q.per_page)
                .push(" OFFSET ")
                .bind(q.offset());
            let rows = select.build().fetch_all(&ctx.db.pool).await?;
            let items = rows.iter().map(from_row).collect::<Result<_>>()?;
            Ok::<_, Error>(Page {
                items,
                page: q.page,
                per_page: q.per_page,
                total,
            })
        })
        .await?;
    Ok(Json(page))
}

async fn load_product(ctx: &ApiContext, id: i64) -> Result<Option<Product>> {
    let mut sql = Sql::new(SELECT);
    sql.push(" WHERE id = ").bind(id);
    let row = sql.build().fetch_optional(&ctx.db.pool).await?;
    row.as_ref().map(from_row).transpose()
}

async fn fetch(State(ctx): State<ApiContext>, Path(raw): Path<String>) -> Result<Json<Product>> {
    let id = parse_id(&raw).ok_or_else(|| missing(&raw))?;
    let product = ctx
        .cache
        .get_or_load(
            &format!("product:{id}"),
            PRODUCT_TTL,
            load_product(&ctx, id),
        )
        .await?;
    product.map(Json).ok_or_else(|| missing(&raw))
}

async fn bestsellers(
    State(ctx): State<ApiContext>,
    query: QueryParams,
) -> Result<Json<Vec<Product>>> {
    let limit = contract::bestsellers_limit(query)?;
    let mut list = ctx
        .cache
        .get_or_load("bestsellers", BESTSELLERS_TTL, async {
            let mut sql = Sql::new(SELECT);
            sql.push(" ORDER BY sales DESC, id ASC LIMIT ")
                .bind(contract::BESTSELLERS_MAX);
            let rows = sql.build().fetch_all(&ctx.db.pool).await?;
            rows.iter().map(from_row).collect::<Result<Vec<_>>>()
        })
        .await?;
    list.truncate(limit);
    Ok(Json(list))
}

async fn categories(State(ctx): State<ApiContext>) -> Result<Json<Vec<Category>>> {
    let list = ctx
        .cache
        .get_or_load("categories", LIST_TTL, async {
            let rows = sqlx::query("SELECT category, COUNT(*) AS product_count FROM products GROUP BY category ORDER BY category")
                .fetch_all(&ctx.db.pool)
                .await?;
            rows.iter()
                .map(|r| Ok(Category { name: r.try_get("category")?, product_count: r.try_get("product_count")? }))
                .collect::<Result<Vec<_>>>()
        })
        .await?;
    Ok(Json(list))
}

async fn create(
    State(ctx): State<ApiContext>,
    _admin: AdminUser,
    body: JsonObject,
) -> Result<Response> {
    let input = ProductInput::parse(&body, false)?;
    let now = clock::now_ms();
    let mut sql = Sql::new(
        "INSERT INTO products (sku, name, description, category, price_cents, currency, stock, sales, created_at, updated_at, edited_at) VALUES (",
    );
    sql.bind(input.sku.unwrap_or_default()).push(", ");
    sql.bind(input.name.unwrap_or_default()).push(", ");
    sql.bind(input.description.unwrap_or_default()).push(", ");
    sql.bind(input.category.unwrap_or_default()).push(", ");
    sql.bind(input.price_cents.unwrap_or_default()).push(", ");
    sql.bind(input.currency.unwrap_or_default()).push(", ");
    sql.bind(input.stock.unwrap_or_default()).push(", 0, ");
    sql.bind(now).push(", ").bind(now).push(", ").bind(now);
    sql.push(") RETURNING id");
    let mut tx = ctx.db.pool.begin().await?;
    let id: i64 = sql
        .build_scalar()
        .fetch_one(&mut *tx)
        .await
        .map_err(write_error)?;
    let seq = crate::handoff::record(&mut tx, id, input.stock).await?;
    tx.commit().await?;
    written_back(&ctx, seq).await;
    ctx.cache.invalidate().await;
    let product = load_product(&ctx, id)
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
    update(&ctx, id, &raw, input).await
}

async fn patch(
    State(ctx): State<ApiContext>,
    _admin: AdminUser,
    Path(raw): Path<String>,
    body: JsonObject,
) -> Result<Json<Product>> {
    let id = parse_id(&raw).ok_or_else(|| missing(&raw))?;
    let input = ProductInput::parse(&body, true)?;
    update(&ctx, id, &raw, input).await
}

async fn update(
    ctx: &ApiContext,
    id: i64,
    raw: &str,
    input: ProductInput,
) -> Result<Json<Product>> {
    let now = clock::now_ms();
    let mut sql = Sql::new("UPDATE products SET updated_at = ");
    sql.bind(now).push(", edited_at = ").bind(now);
    for (column, value) in input.text_columns() {
        sql.push(&format!(", {column} = ")).bind(value);
    }
    for (column, value) in input.int_columns() {
        sql.push(&format!(", {column} = ")).bind(value);
    }
    sql.push(" WHERE id = ").bind(id);
    let mut tx = ctx.db.pool.begin().await?;
    let updated = sql.build().execute(&mut *tx).await.map_err(write_error)?;
    if updated.rows_affected() == 0 {
        return Err(missing(raw));
    }
    let seq = crate::handoff::record(&mut tx, id, input.stock).await?;
    tx.commit().await?;
    written_back(ctx, seq).await;
    ctx.cache.invalidate().await;
    load_product(ctx, id)
        .await?
        .map(Json)
        .ok_or_else(|| missing(raw))
}

async fn remove(
    State(ctx): State<ApiContext>,
    _admin: AdminUser,
    Path(raw): Path<String>,
) -> Result<StatusCode> {
    let id = parse_id(&raw).ok_or_else(|| missing(&raw))?;
    let mut sql = Sql::new("DELETE FROM products WHERE id = ");
    sql.bind(id);
    let mut tx = ctx.db.pool.begin().await?;
    if sql.build().execute(&mut *tx).await?.rows_affected() == 0 {
        return Err(missing(&raw));
    }
    let seq = crate::handoff::record(&mut tx, id, None).await?;
    tx.commit().await?;
    written_back(&ctx, seq).await;
    ctx.cache.invalidate().await;
    Ok(StatusCode::NO_CONTENT)
}

/// Waits (bounded) for a committed write to reach the monolith, when writes are carried there.
async fn written_back(ctx: &ApiContext, seq: i64) {
    if let Some(back) = &ctx.write_back {
        back.written_back(seq).await;
    }
}
