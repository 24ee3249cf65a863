//! Products and categories: `/api/products*` and `/api/categories`.

use serde::{Deserialize, Serialize};

use crate::error::ErrorResponse;
use crate::extract::{JsonObject, QueryParams};
use crate::validate::Fields;

/// A product as clients see it (timestamps RFC 3339 UTC).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Category {
    pub name: String,
    pub product_count: i64,
}

pub const MAX_PAGE: i64 = 100_000;
pub const MAX_PRICE: i64 = 1_000_000_000_000;
pub const MAX_STOCK: i64 = 1_000_000_000;
/// The bestseller list holds this many; `limit` takes a prefix.
pub const BESTSELLERS_MAX: i64 = 100;
pub const SORTS: &[&str] = &["price", "-price", "name", "-created_at", "-sales"];

/// The 404 for a product id (raw, as the client wrote it).
pub fn not_found(raw_id: &str) -> ErrorResponse {
    ErrorResponse::not_found(format!("product {raw_id} does not exist"))
}

/// The 409 for a duplicate sku.
pub fn duplicate_sku() -> ErrorResponse {
    ErrorResponse::conflict("a product with this sku already exists")
}

/// How a listing is ordered. Every order ends in the id so pages never overlap or skip rows;
/// names compare case-insensitively (as MySQL's default collation does), so every backend
/// returns the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Id,
    Price,
    PriceDesc,
    Name,
    NewestFirst,
    BestSelling,
}

impl Sort {
    /// The `ORDER BY` clause (portable SQL).
    pub fn order_by(self) -> &'static str {
        match self {
            Sort::Id => " ORDER BY id ASC",
            Sort::Price => " ORDER BY price_cents ASC, id ASC",
            Sort::PriceDesc => " ORDER BY price_cents DESC, id ASC",
            Sort::Name => " ORDER BY LOWER(name) ASC, id ASC",
            Sort::NewestFirst => " ORDER BY created_at DESC, id DESC",
            Sort::BestSelling => " ORDER BY sales DESC, id ASC",
        }
    }
}

/// `GET /api/products` parameters, validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListQuery {
    pub category: Option<String>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub sort: Sort,
    pub page: i64,
    pub per_page: i64,
}

impl std::hash::Hash for Sort {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (*self as u8).hash(state);
    }
}

impl ListQuery {
    pub fn parse(query: QueryParams) -> Result<Self, ErrorResponse> {
        let mut p = query.params();
        let category = p.opt_string("category", 100);
        let min_price = p.opt_int("min_price", 0..=MAX_PRICE);
        let max_price = p.opt_int("max_price", 0..=MAX_PRICE);
        let sort = match p.one_of("sort", SORTS, "") {
            "price" => Sort::Price,
            "-price" => Sort::PriceDesc,
            "name" => Sort::Name,
            "-created_at" => Sort::NewestFirst,
            "-sales" => Sort::BestSelling,
            _ => Sort::Id,
        };
        let page = p.int("page", 1..=MAX_PAGE, 1);
        let per_page = p.int("per_page", 1..=100, 20);
        // A `max_price` below `min_price` is a range nothing is in: an empty page, not an error
        // (the document cannot state a rule between two parameters).
        p.finish()?;
        Ok(ListQuery {
            category,
            min_price,
            max_price,
            sort,
            page,
            per_page,
        })
    }

    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.per_page
    }
}

/// `GET /api/products/bestsellers?limit=` (1..=100, default 10).
pub fn bestsellers_limit(query: QueryParams) -> Result<usize, ErrorResponse> {
    let mut p = query.params();
    let limit = p.int("limit", 1..=BESTSELLERS_MAX, 10) as usize;
    p.finish()?;
    Ok(limit)
}

/// The writable fields of a product, validated. `None` means "not given" (PATCH).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProductInput {
    pub sku: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    pub stock: Option<i64>,
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
/// Fields a client may echo back from a GET; server-managed, ignored on write.
const READ_ONLY: &[&str] = &["id", "sales", "created_at", "updated_at"];

impl ProductInput {
    /// `partial`: PATCH semantics (absent fields stay as they are); otherwise (POST, PUT) every
    /// writable field is required except `description` (default empty) and `currency`
    /// (default USD).
    pub fn parse(body: &JsonObject, partial: bool) -> Result<Self, ErrorResponse> {
        let mut f = body.fields();
        f.reject_unknown(WRITABLE, READ_ONLY);
        let input = if partial {
            ProductInput {
                sku: f.opt_string("sku", 1..=64),
                name: f.opt_string("name", 1..=200),
                description: f.opt_string("description", 0..=5000),
                category: f.opt_string("category", 1..=100),
                price_cents: f.opt_int("price_cents", 0..=MAX_PRICE),
                currency: f.opt_string("currency", 3..=3),
                stock: f.opt_int("stock", 0..=MAX_STOCK),
            }
        } else {
            ProductInput {
                sku: f.string("sku", 1..=64),
                name: f.string("name", 1..=200),
                description: f
                    .opt_string("description", 0..=5000)
                    .or(Some(String::new())),
                category: f.string("category", 1..=100),
                price_cents: f.int("price_cents", 0..=MAX_PRICE),
                currency: f.opt_string("currency", 3..=3).or(Some("USD".to_owned())),
                stock: f.int("stock", 0..=MAX_STOCK),
            }
        };
        check_formats(&mut f, &input);
        f.finish()?;
        Ok(input)
    }

    /// `(column, value)` pairs of the text fields that were given, then of the integer fields;
    /// for building an `UPDATE`.
    pub fn text_columns(&self) -> Vec<(&'static str, String)> {
        [
            ("sku", &self.sku),
            ("name", &self.name),
            ("description", &self.description),
            ("category", &self.category),
            ("currency", &self.currency),
        ]
        .into_iter()
        .filter_map(|(c, v)| v.clone().map(|v| (c, v)))
        .collect()
    }

    pub fn int_columns(&self) -> Vec<(&'static str, i64)> {
        [("price_cents", self.price_cents), ("stock", self.stock)]
            .into_iter()
            .filter_map(|(c, v)| v.map(|v| (c, v)))
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: serde_json::Value) -> JsonObject {
        JsonObject(v.as_object().unwrap().clone())
    }

    #[test]
    fn full_and_partial_inputs() {
        let full = ProductInput::parse(&body(json!({"sku": "A-1", "name": "N", "category": "c", "price_cents": 5, "stock": 1, "id": 9})), false).unwrap();
        assert_eq!(full.currency.as_deref(), Some("USD"));
        assert_eq!(full.description.as_deref(), Some(""));
        let patch = ProductInput::parse(&body(json!({"stock": 3})), true).unwrap();
        assert_eq!(patch.int_columns(), vec![("stock", 3)]);
        assert!(patch.text_columns().is_empty());
        let err =
            ProductInput::parse(&body(json!({"sku": "a b", "currency": "usd"})), true).unwrap_err();
        assert_eq!(err.fields.unwrap().len(), 2);
    }

    #[test]
    fn list_queries() {
        let q = ListQuery::parse(QueryParams::parse("sort=-price&page=3&per_page=10").unwrap())
            .unwrap();
        assert_eq!((q.sort, q.offset()), (Sort::PriceDesc, 20));
        assert!(
            ListQuery::parse(QueryParams::parse("min_price=9&max_price=1").unwrap()).is_ok(),
            "an empty range, not an error"
        );
    }
}
