//! The legacy monolith: the whole product catalog API of an online store in one process, on one
//! database schema, with sessions in Redis. It is what a Banyan migration starts from, so it is
//! deliberately built the way such monoliths are (search is SQL `LIKE`, every module reads the
//! same tables) while still being correct under concurrency and bad input.
//!
//! The API contract it defines is `shared/design/catalog-api.md`, published as OpenAPI by
//! [`service_kit::openapi`]; the extracted services keep it.
//!
//! # Layout
//! - [`config`]: command line and environment (`DATABASE_URL`, `REDIS_URL`, ...).
//! - [`app`]: the [`app::ApiContext`] every handler shares, the router, startup and serving.
//! - [`error`]: the monolith's error enum and how it maps to HTTP.
//! - [`auth`]: users, password hashing, sessions, the `CurrentUser`/`AdminUser` extractors.
//! - [`products`]: products, categories, bestsellers (cached).
//! - [`search`]: full-text-ish search in SQL.
//! - [`analytics`]: event ingestion and the summary.
//! - [`orders`]: orders, which decrement stock and count sales in one transaction.
//! - [`seed`]: the deterministic demo-data generator.
//! - [`positions`]: each successful write tells the client how far the change streams got, so
//!   the extracted services can answer its next read with the write in it.

pub mod analytics;
pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod orders;
pub mod positions;
pub mod products;
pub mod search;
pub mod seed;

pub use error::Error;

/// Migrations, one folder per dialect (kept in step by hand; the contract tests run on both).
pub static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");
pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
