//! The analytics service: storefront events and their summary, carved out of the monolith.
//!
//! The monolith writes one row per event request, so its throughput is its database's commit
//! rate. Here an accepted event is still durable before the client hears 202 (a restart, even a
//! crash, loses nothing accepted), but many requests share one commit: [`ingest`] queues events
//! in a bounded channel and one writer inserts whatever has queued up in a single transaction
//! (group commit). When the queue stays full, a request waits a bounded time and then gets 503:
//! back-pressure instead of unbounded memory or silent loss.
//!
//! # Layout
//! - [`config`]: command line and environment.
//! - [`app`]: the shared context, router, startup, serving, and draining on shutdown.
//! - [`error`]: the service's error enum and its HTTP mapping.
//! - [`ingest`]: the bounded queue and the group-commit writer.
//! - [`events`]: the endpoints.
//! - [`sync`]: the monolith's events copied here (history for the summary windows).

pub mod app;
pub mod config;
pub mod error;
pub mod events;
pub mod ingest;
pub mod sync;

pub use error::Error;

pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
