//! Banyan: a strangler-fig migration proxy on Pingora.
//!
//! Every client talks to the proxy; `routes.toml` says, path by path, whether a request goes to
//! the legacy monolith, to a newly extracted service, or is split between them with sticky
//! users. Editing the file changes the traffic within a second and drops nothing.
//!
//! # Layout
//! - [`config`]: `routes.toml` as written (`file`), as validated (`model`), and the loader with
//!   `file:line:column` errors (`load`).
//! - [`route_table`]: the immutable snapshot a request is routed with: path normalization, the
//!   segment-trie matcher, the upstream pools.
//! - [`split`]: which side of a canary split a request lands on (sticky hashing).
//! - [`upstream`]: pools, round-robin, passive and active health, outlier ejection, retry
//!   budgets.
//! - [`reload`]: the live table, swapped atomically; `settle` (a file is applied once it has
//!   stopped changing) and `triggers` (directory watcher, poll, SIGHUP).
//! - [`forward`]: the Pingora `ProxyHttp` phases, each asking the edge what to do.
//! - [`admin`], [`metrics`]: what operators see (the admin API checks Host and a token; its
//!   `GET /status` feeds `banyan status` and the dashboard page it serves at `/`).
//! - [`shadow`]: shadow traffic: mirroring to a candidate, comparing, noise, results.
//! - [`buffers`]: the byte buffers and header slots a request needs, kept per worker thread
//!   for the next request (a warm request allocates none).
//! - [`connection`]: client connections between requests (idle ones hold only their socket).
//! - [`balance`]: each new client connection to the worker thread serving the fewest, its
//!   socket registered with that thread's event loop.
//! - [`fast_path`]: plain `GET`/`HEAD` forwarded without Pingora's proxy pipeline (its own
//!   HTTP/1.1 byte moving and per-thread upstream keep-alive); everything else goes through
//!   [`forward`].
//! - [`edge`]: every rule both pipelines and the shadow copy share, written once: the head's
//!   bounds, the request checks, routing, the side that serves a request (circuit breakers,
//!   fallback to the monolith, the retry budget's use), headers, failure answers, the access
//!   record.
//! - [`rollout`]: routes that migrate themselves step by step, judged by gates on their own
//!   traffic: the live share and each side's record, the controller, the gates, the state on
//!   disk and, for several proxies, in Redis.
//! - [`lifecycle`]: draining on SIGTERM, handing sockets over on an upgrade, exiting once
//!   nothing is in flight.
//! - [`server`], [`cli`]: process assembly and the `banyan` command.
//! - `bench_support`: the edge's stages, reachable by `cargo bench` (`benches/edge.rs`).

// Everything is crate-private but the `banyan` command: a `pub` item that nothing outside
// can reach is a warning, so dead code shows.
#![warn(unreachable_pub)]

pub(crate) mod admin;
pub(crate) mod balance;
#[doc(hidden)]
pub mod bench_support;
pub(crate) mod buffers;
pub mod cli;
pub(crate) mod config;
pub(crate) mod connection;
pub(crate) mod edge;
pub(crate) mod fast_path;
pub(crate) mod forward;
pub(crate) mod lifecycle;
pub(crate) mod metrics;
pub(crate) mod reload;
pub(crate) mod rollout;
pub(crate) mod route_table;
pub(crate) mod server;
pub(crate) mod shadow;
pub(crate) mod split;
pub(crate) mod upstream;
