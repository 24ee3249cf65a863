//! Orders: the part of the monolith that is not being migrated yet, and the reason product data
//! must stay consistent across the migration (it reads prices and writes stock and sales).
//!
//! Placing an order decrements stock and counts sales in one transaction with a conditional
//! `UPDATE ... WHERE stock >= quantity`: the database, not a read-then-write in the application,
//! decides who gets the last unit, so two concurrent orders can never oversell. Rows are locked
//! in product-id order, so concurrent orders over the same products cannot deadlock each other;
//! a deadlock or busy database reported anyway is retried.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use service_kit::ErrorResponse;
use service_kit::clock;
use service_kit::error::FieldErrors;
use service_kit::extract::{JsonObject, QueryParams, parse_id};
use sqlx::{Any, QueryBuilder, Row};

use crate::app::ApiContext;
use crate::auth::CurrentUser;
use crate::error::{Error, Result};
use crate::products::{self, Page};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/orders", get(list).post(place))
        .route("/api/orders/{id}", get(fetch))
}

#[derive(Debug, Serialize)]
pub struct Order {
    pub id: i64,
    pub user_id: i64,
    pub items: Vec<OrderItem>,
    pub total_cents: i64,
    pub currency: String,
    pub created_at: String,
}

#[derive(Debug, Serialize)]
pub struct OrderItem {
    pub product_id: i64,
    pub name: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

const MAX_ITEMS: usize = 50;
const MAX_QUANTITY: i64 = 1_000;
const MAX_ATTEMPTS: usize = 3;

/// Validates `items` into product id -> quantity (lines for the same product are added up).
fn parse_items(body: &JsonObject) -> Result<BTreeMap<i64, i64>> {
    let mut f = body.fields();
    f.reject_unknown(&["items"], &[]);
    let mut errors = FieldErrors::new();
    let mut wanted = BTreeMap::new();
    match f.raw("items") {
        None | Some(Value::Null) => {
            errors.insert("items".into(), "is required".into());
        }
        Some(Value::Array(lines)) if lines.is_empty() || lines.len() > MAX_ITEMS => {
            errors.insert("items".into(), format!("must hold 1 to {MAX_ITEMS} items"));
        }
        Some(Value::Array(lines)) => {
            for (i, line) in lines.iter().enumerate() {
                let Some(obj) = line.as_object() else {
                    errors.insert(format!("items[{i}]"), "must be an object".into());
                    continue;
                };
                let mut lf = service_kit::validate::Fields::new(obj);
                lf.reject_unknown(&["product_id", "quantity"], &[]);
                let product = lf.int("product_id", 1..=i64::MAX);
                let quantity = lf.int("quantity", 1..=MAX_QUANTITY);
                if let Err(e) = lf.finish() {
                    for (field, problem) in e.fields.unwrap_or_default() {
                        errors.insert(format!("items[{i}].{field}"), problem);
                    }
                    continue;
                }
                // Lines for the same product add up (at most 50 lines of 1,000: no overflow).
                // The stock check, not a cap across lines, decides how many can be had: a
                // rule between array items is one the document could not state.
                *wanted.entry(product.unwrap()).or_insert(0) += quantity.unwrap();
            }
        }
        Some(_) => {
            errors.insert("items".into(), "must be an array".into());
        }
    }
    if let Err(e) = f.finish() {
        errors.extend(e.fields.unwrap_or_default());
    }
    if errors.is_empty() {
        Ok(wanted)
    } else {
        Err(ErrorResponse::validation(errors).into())
    }
}

/// Deadlocks (MySQL, SQLSTATE 40001) and a busy SQLite file are worth another try.
fn is_transient(e: &Error) -> bool {
    match e {
        Error::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40001" | "5" | "6" | "517"))
        }
        _ => false,
    }
}

async fn place(
    State(ctx): State<ApiContext>,
    CurrentUser(user): CurrentUser,
    body: JsonObject,
) -> Result<Response> {
    let wanted = parse_items(&body)?;
    let mut attempt = 0;
    let id = loop {
        attempt += 1;
        match place_once(&ctx, user.user_id, &wanted).await {
            Err(e) if attempt < MAX_ATTEMPTS && is_transient(&e) => {
                tracing::warn!(attempt, error = %e, "order transaction retried");
            }
            other => break other?,
        }
    };
    products::invalidate_caches(&ctx).await;
    let order = order_by_id(&ctx, user.user_id, id)
        .await?
        .ok_or_else(|| Error::not_found(format!("order {id} does not exist")))?;
    Ok((
        StatusCode::CREATED,
        [(LOCATION, format!("/api/orders/{id}"))],
        Json(order),
    )
        .into_response())
}

async fn place_once(ctx: &ApiContext, user_id: i64, wanted: &BTreeMap<i64, i64>) -> Result<i64> {
    let now = clock::now_ms();
    let mut tx = ctx.db.pool.begin().await?;
    let mut lines = Vec::with_capacity(wanted.len());
    // BTreeMap iterates in product-id order: the lock order every order transaction shares.
    for (&product_id, &quantity) in wanted {
        let taken = sqlx::query(
            "UPDATE products SET stock = stock - ?, sales = sales + ?, updated_at = ? \
             WHERE id = ? AND stock >= ?",
        )
        .bind(quantity)
        .bind(quantity)
        .bind(now)
        .bind(product_id)
        .bind(quantity)
        .execute(&mut *tx)
        .await?;
        let row =
            sqlx::query("SELECT name, price_cents, currency, stock FROM products WHERE id = ?")
                .bind(product_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            // Well formed, but naming a product the catalog does not hold (now): a conflict
            // with its state, like short stock (409, not 422: the request itself is valid).
            return Err(Error::conflict(format!(
                "product {product_id} does not exist"
            )));
        };
        if taken.rows_affected() == 0 {
            let stock: i64 = row.try_get("stock")?;
            return Err(Error::conflict(format!(
                "product {product_id} has only {stock} in stock"
            )));
        }
        let name: String = row.try_get("name")?;
        let price: i64 = row.try_get("price_cents")?;
        let currency: String = row.try_get("currency")?;
        lines.push((product_id, name, quantity, price, currency));
    }
    let currency = lines[0].4.clone();
    if lines.iter().any(|l| l.4 != currency) {
        // A rule about the products' current state, not the request's shape: 409.
        return Err(Error::conflict(
            "all products of one order must share a currency",
        ));
    }
    let total: i64 = lines.iter().map(|l| l.2 * l.3).sum();
    let inserted = sqlx::query(
        "INSERT INTO orders (user_id, total_cents, currency, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(user_id)
    .bind(total)
    .bind(&currency)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(|e| {
        if service_kit::db::is_foreign_key_violation(&e) {
            // A user registered through the auth service whose row has not reached this
            // database yet (it is written back before the registration is answered, so only
            // when that took too long).
            Error::Behind(format!(
                "user {user_id} is not known here yet; try again in a moment"
            ))
        } else {
            e.into()
        }
    })?;
    let order_id = service_kit::db::inserted_id(&inserted, &mut tx).await?;
    let mut items = QueryBuilder::<Any>::new(
        "INSERT INTO order_items (order_id, product_id, name, quantity, unit_price_cents) ",
    );
    items.push_values(lines, |mut b, (product_id, name, quantity, price, _)| {
        b.push_bind(order_id)
            .push_bind(product_id)
            .push_bind(name)
            .push_bind(quantity)
            .push_bind(price);
    });
    items.build().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(order_id)
}

/// Loads orders (already filtered to one user) with their items.
async fn with_items(ctx: &ApiContext, rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<Order>> {
    let mut orders = Vec::with_capacity(rows.len());
    for r in &rows {
        orders.push(Order {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            items: Vec::new(),
            total_cents: r.try_get("total_cents")?,
            currency: r.try_get("currency")?,
            created_at: clock::rfc3339(r.try_get("created_at")?),
        });
    }
    if orders.is_empty() {
        return Ok(orders);
    }
    let mut qb = QueryBuilder::<Any>::new(
        "SELECT order_id, product_id, name, quantity, unit_price_cents FROM order_items WHERE order_id IN (",
    );
    let mut ids = qb.separated(", ");
    for o in &orders {
        ids.push_bind(o.id);
    }
    qb.push(") ORDER BY order_id, product_id");
    for r in qb.build().fetch_all(&ctx.db.pool).await? {
        let order_id: i64 = r.try_get("order_id")?;
        if let Some(o) = orders.iter_mut().find(|o| o.id == order_id) {
            o.items.push(OrderItem {
                product_id: r.try_get("product_id")?,
                name: r.try_get("name")?,
                quantity: r.try_get("quantity")?,
                unit_price_cents: r.try_get("unit_price_cents")?,
            });
        }
    }
    Ok(orders)
}

async fn order_by_id(ctx: &ApiContext, user_id: i64, id: i64) -> Result<Option<Order>> {
    let rows = sqlx::query(
        "SELECT id, user_id, total_cents, currency, created_at FROM orders WHERE id = ? AND user_id = ?",
    )
    .bind(id)
    .bind(user_id)
    .fetch_all(&ctx.db.pool)
    .await?;
    Ok(with_items(ctx, rows).await?.pop())
}

async fn fetch(
    State(ctx): State<ApiContext>,
    CurrentUser(user): CurrentUser,
    Path(raw): Path<String>,
) -> Result<Json<Order>> {
    // Someone else's order is "not found", not "forbidden": its existence is nobody's business.
    let missing = || Error::not_found(format!("order {raw} does not exist"));
    let id = parse_id(&raw).ok_or_else(missing)?;
    order_by_id(&ctx, user.user_id, id)
        .await?
        .map(Json)
        .ok_or_else(missing)
}

async fn list(
    State(ctx): State<ApiContext>,
    CurrentUser(user): CurrentUser,
    query: QueryParams,
) -> Result<Json<Page<Order>>> {
    let mut p = query.params();
    let page = p.int("page", 1..=100_000, 1);
    let per_page = p.int("per_page", 1..=100, 20);
    p.finish()?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE user_id = ?")
        .bind(user.user_id)
        .fetch_one(&ctx.db.pool)
        .await?;
    let rows = sqlx::query(
        "SELECT id, user_id, total_cents, currency, created_at FROM orders WHERE user_id = ? \
         ORDER BY id DESC LIMIT ? OFFSET ?",
    )
    .bind(user.user_id)
    .bind(per_page)
    .bind((page - 1) * per_page)
    .fetch_all(&ctx.db.pool)
    .await?;
    Ok(Json(Page {
        items: with_items(&ctx, rows).await?,
        page,
        per_page,
        total,
    }))
}
