//! The auth service: register, login, logout and me, carved out of the legacy monolith.
//!
//! Users live in this service's own database (PostgreSQL in production, SQLite embedded);
//! sessions live in the store every process shares ([`service_kit::session`]), in the same
//! format, so a login made here is valid in the monolith and every other service, and the other
//! way round. Validation, messages and password hashes are the monolith's
//! ([`service_kit::contract::auth`], [`service_kit::password`]), so clients cannot tell which
//! process answered.
//!
//! A session only names a user id, so both user tables must agree on ids: [`sync`] keeps this
//! one current with the monolith's users and writes registrations made here back into the
//! monolith (whose orders need the user row).
//!
//! # Layout
//! - [`config`]: command line and environment.
//! - [`app`]: the shared context, router, startup and serving.
//! - [`error`]: the service's error enum and its HTTP mapping.
//! - [`users`]: the endpoints.
//! - [`sync`]: the monolith's users copied here, and registrations made here written back.

pub mod app;
pub mod config;
pub mod error;
pub mod sync;
pub mod users;

pub use error::Error;

pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
