//! Products and categories: listing with filters and sorting, lookup, bestsellers (cached for
//! five minutes, dropped on every write that can change them), and admin writes.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use service_kit::clock;
use service_kit::extract::{JsonObject, QueryParams, parse_id};
use service_kit::validate::Fields;
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

/// The cache key of the bestseller list (the top [`BESTSELLERS_CACHED`], any `limit` is a prefix).
pub const BESTSELLERS_KEY: &str = "bestsellers";
const BESTSELLERS_CACHED: i64 = 100;
const BESTSELLERS_TTL: Duration = Duration::from_secs(300);

pub const COLUMNS: &str = "id, sku, name, description, category, price_cents, currency, stock, sales, created_at, updated_at";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Product {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price_cents: i64,
    pub currency: String,
    pub stock: i64,
    pub sales: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl Product {
    pub fn from_row(row: &AnyRow) -> Result<Self> {
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
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: i64,
    pub per_page: i64,
    pub total: i64,
}

const SORTS: &[&str] = &["price", "-price", "name", "-created_at", "-sales"];

fn order_by(sort: &str) -> &'static str {
    // Every order ends in a unique column so pages never overlap or skip rows.
    match sort {
        "price" => " ORDER BY price_cents ASC, id ASC",
        "-price" => " ORDER BY price_cents DESC, id ASC",
        "name" => " ORDER BY name ASC, id ASC",
        "-created_at" => " ORDER BY created_at DESC, id DESC",
        "-sales" => " ORDER BY sales DESC, id ASC",
        _ => " ORDER BY id ASC",
    }
}

/// Largest page number accepted; deeper offsets are a scraping pattern, not a use case.
const MAX_PAGE: i64 = 100_000;
const MAX_PRICE: i64 = 1_000_000_000_000;

async fn list(State(ctx): State<ApiContext>, query: QueryParams) -> Result<Json<Page<Product>>> {
    let mut p = query.params();
    let category = p.opt_string("category", 100);
    let min_price = p.opt_int("min_price", 0..=MAX_PRICE);
    let max_price = p.opt_int("max_price", 0..=MAX_PRICE);
    let sort = p.one_of("sort", SORTS, "id");
    let page = p.int("page", 1..=MAX_PAGE, 1);
    let per_page = p.int("per_page", 1..=100, 20);
    if let (Some(lo), Some(hi)) = (min_price, max_price)
        && lo > hi
    {
        p.fail("max_price", "must not be less than min_price");
    }
    p.finish()?;

    let filter = |qb: &mut QueryBuilder<Any>| {
        if let Some(c) = &category {
            qb.push(" AND category = ").push_bind(c.clone());
        }
        if let Some(lo) = min_price {
            qb.push(" AND price_cents >= ").push_bind(lo);
        }
        if let Some(hi) = max_price {
            qb.push(" AND price_cents <= ").push_bind(hi);
        }
    };
    let mut count = QueryBuilder::<Any>::new("SELECT COUNT(*) FROM products WHERE 1 = 1");
    filter(&mut count);
    let total: i64 = count.build_query_scalar().fetch_one(&ctx.db.pool).await?;

    let mut select =
        QueryBuilder::<Any>::new(format!("SELECT {COLUMNS} FROM products WHERE 1 = 1"));
    filter(&mut select);
    select.push(order_by(sort));
    select
        .push(" LIMIT ")
        .push_bind(per_page)
        .push(" OFFSET ")
        .push_bind((page - 1) * per_page);
    let rows = select.build().fetch_all(&ctx.db.pool).await?;
    let items = rows.iter().map(Product::from_row).collect::<Result<_>>()?;
    Ok(Json(Page {
        items,
        page,
        per_page,
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
    row.as_ref().map(Product::from_row).transpose()
}

fn missing(raw_id: &str) -> Error {
    Error::not_found(format!("product {raw_id} does not exist"))
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
    let mut p = query.params();
    let limit = p.int("limit", 1..=BESTSELLERS_CACHED, 10) as usize;
    p.finish()?;

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
    .bind(BESTSELLERS_CACHED)
    .fetch_all(&ctx.db.pool)
    .await?;
    let mut list = rows
        .iter()
        .map(Product::from_row)
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

#[derive(Debug, Serialize)]
struct Category {
    name: String,
    product_count: i64,
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

/// The writable fields of a product, validated.
#[derive(Debug, Default)]
struct ProductInput {
    sku: Option<String>,
    name: Option<String>,
    description: Option<String>,
    category: Option<String>,
    price_cents: Option<i64>,
    currency: Option<String>,
    stock: Option<i64>,
}

const WRITABLE: &[&str] = &[
    "sku",
    "name",
    "description",
    "category",
    "price_cents",
    "currency",
    "stock",
];
/// Fields a client may echo back from a GET; they are server-managed and ignored on write.
const READ_ONLY: &[&str] = &["id", "sales", "created_at", "updated_at"];

impl ProductInput {
    /// `partial`: PATCH semantics (absent fields stay as they are); otherwise every writable
    /// field except `description` (default empty) and `currency` (default USD) is required.
    fn parse(body: &JsonObject, partial: bool) -> Result<Self> {
        let mut f = body.fields();
        f.reject_unknown(WRITABLE, READ_ONLY);
        let mut input = ProductInput::default();
        if partial {
            input.sku = f.opt_string("sku", 1..=64);
            input.name = f.opt_string("name", 1..=200);
            input.description = f.opt_string("description", 0..=5000);
            input.category = f.opt_string("category", 1..=100);
            input.price_cents = f.opt_int("price_cents", 0..=MAX_PRICE);
            input.currency = f.opt_string("currency", 3..=3);
            input.stock = f.opt_int("stock", 0..=1_000_000_000);
        } else {
            input.sku = f.string("sku", 1..=64);
            input.name = f.string("name", 1..=200);
            input.description = f
                .opt_string("description", 0..=5000)
                .or(Some(String::new()));
            input.category = f.string("category", 1..=100);
            input.price_cents = f.int("price_cents", 0..=MAX_PRICE);
            input.currency = f.opt_string("currency", 3..=3).or(Some("USD".to_owned()));
            input.stock = f.int("stock", 0..=1_000_000_000);
        }
        check_formats(&mut f, &input);
        f.finish()?;
        Ok(input)
    }
}

fn check_formats(f: &mut Fields<'_>, input: &ProductInput) {
    if let Some(sku) = &input.sku
        && !sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        f.fail("sku", "may contain only letters, digits, '-' and '_'");
    }
    if let Some(c) = &input.currency
        && !c.bytes().all(|b| b.is_ascii_uppercase())
    {
        f.fail("currency", "must be an ISO 4217 code such as USD");
    }
}

fn write_error(e: sqlx::Error) -> Error {
    if service_kit::db::is_unique_violation(&e) {
        Error::conflict("a product with this sku already exists")
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
        "INSERT INTO products (sku, name, description, category, price_cents, currency, stock, sales, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
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
    let mut qb = QueryBuilder::<Any>::new("UPDATE products SET updated_at = ");
    qb.push_bind(clock::now_ms());
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = input.$field {
                qb.push(concat!(", ", stringify!($field), " = "))
                    .push_bind(v);
            }
        };
    }
    set!(sku);
    set!(name);
    set!(description);
    set!(category);
    set!(price_cents);
    set!(currency);
    set!(stock);
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
