//! The catalog service: products and categories, carved out of the legacy monolith.
//!
//! It serves `/api/products*` and `/api/categories` with the same contract as the monolith
//! ([`service_kit::contract::products`]), on its own database (PostgreSQL in production, SQLite
//! embedded), with the read caches the seeds ask for. Identity comes from the shared session
//! store: a user logged in through the monolith (or the auth service) is recognised here.
//!
//! # Layout
//! - [`config`]: command line and environment.
//! - [`app`]: the shared context, router, startup and serving.
//! - [`error`]: the service's error enum and its HTTP mapping.
//! - [`auth`]: the `AdminUser` extractor over the shared session store.
//! - [`cache`]: generation-keyed read caches that never outlive this service's last write.
//! - [`products`]: the endpoints.
//! - [`rows`]: the product columns, reading rows by id, and the ownership upsert that backfill,
//!   sync and handoff share.
//! - [`backfill`]: copying the monolith's products here (idempotent, resumable).
//! - [`sync`]: following the monolith's changes (all of them while it owns product writes; stock
//!   and sales, which orders own, always).
//! - [`handoff`]: writing this service's own product writes back into the monolith's database.

pub mod app;
pub mod auth;
pub mod backfill;
pub mod cache;
pub mod config;
pub mod error;
pub mod handoff;
pub mod products;
pub mod rows;
pub mod sync;

pub use error::Error;

pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
