//! Cross-cutting plumbing for every HTTP service in the Banyan repository: the legacy monolith
//! and the services extracted from it.
//!
//! Clients must never notice which process answered them, so everything a client can observe
//! apart from business data lives here and is shared: the error body, how bad input is reported,
//! the session cookie and the session store format, request ids and the access log, and how a
//! server starts and stops. Business logic does *not* live here: an extracted service is a new
//! implementation on its own database, not a re-export of the monolith.
//!
//! # Layout
//! - [`error`]: the catalog API's error body (`{"error": {"code", "message", "fields"?}}`).
//! - [`extract`]: axum extractors that turn malformed JSON, bodies that are too large and broken
//!   query strings into that body instead of axum's plain-text rejections.
//! - [`validate`]: field-by-field validation that reports every bad field at once (422).
//! - [`session`]: the session store shared by every process (Redis, or an embedded SQLite file).
//! - [`cache`]: a TTL cache (Redis, or in-process) for the read caches the seeds ask for.
//! - [`config`]: the storage options every service's command line shares.
//! - [`db`]: connecting to MySQL/MariaDB, PostgreSQL or the embedded SQLite default by URL.
//! - [`outbox`]: following another database's changes through an outbox (sync and handoff).
//! - [`read_your_writes`]: a monolith write's position, carried by a cookie, waited for by the services.
//! - [`set_aside`]: a row a follower cannot apply, set aside so the rows after it go on.
//! - [`write_back`]: a service's own writes carried into the monolith before they are answered.
//! - [`telemetry`]: logging setup, request ids, one access-log line per request.
//! - [`log_line`]: the access log's fast path: lines formatted by hand, written in batches.
//! - [`server`]: serving a router on a listener until a shutdown signal, and readiness output.
//! - [`password`]: argon2 password hashes in the one format every user store shares.
//! - [`openapi`]: the contract document, served by every process.
//! - [`contract`]: shapes, rules and messages of the catalog API that every implementation shares.
//! - [`clock`]: timestamps as stored (Unix milliseconds) and as shown (RFC 3339 UTC).

pub mod cache;
pub mod clock;
pub mod config;
pub mod contract;
pub mod db;
pub mod error;
pub mod extract;
pub mod log_line;
pub mod openapi;
pub mod outbox;
pub mod password;
pub mod priority;
pub mod read_your_writes;
pub mod server;
pub mod session;
pub mod set_aside;
pub mod telemetry;
pub mod validate;
pub mod write_back;

pub use error::ErrorResponse;
