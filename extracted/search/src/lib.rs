//! The search service: `GET /api/search`, carved out of the legacy monolith.
//!
//! The monolith searches with SQL `LIKE`, which scans every product and ranks by counting
//! words. This service ranks with a real full-text engine, tantivy (BM25, English stemming,
//! name matches weighted over description matches), in-process: no search cluster to run, and
//! one engine on the embedded default and in production alike. PostgreSQL's full-text search
//! was the other candidate; it would rank differently on the embedded SQLite default.
//!
//! The service keeps its own copy of the searchable fields in its database (PostgreSQL, SQLite
//! embedded), following the monolith's `product_changes` outbox; the index is built from that
//! copy at start and updated with it, so the index is a cache of the table and a restart loses
//! nothing.
//!
//! # Layout
//! - [`config`]: command line and environment.
//! - [`app`]: the shared context, router, startup and serving.
//! - [`error`]: the service's error enum and its HTTP mapping.
//! - [`index`]: the tantivy index: schema, building, updating, querying.
//! - [`sync`]: the monolith's products copied into `documents` and the index.
//! - [`search`]: the endpoint.

pub mod app;
pub mod config;
pub mod error;
pub mod index;
pub mod search;
pub mod sync;

pub use error::Error;

pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
