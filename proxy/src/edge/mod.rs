//! The edge: every rule Banyan applies to a request and its answer, written once, whichever
//! pipeline serves the request (the fast path, Pingora's pipeline) and for the shadow copy.
//!
//! A request meets the edge in this order:
//! - [`head`]: the head is read whole, within a size, header-count and time bound, before either
//!   pipeline looks at it (the pipelines never read a head themselves, so the bounds hold for
//!   both);
//! - [`request`]: the request line, `Host` and body framing are checked; what a strict proxy
//!   must refuse is answered 400 here, the same for every pipeline;
//! - [`route`]: the one routing step (normalize, match, split), once per request;
//! - [`fallback`]: the side that serves it: the chosen one, or the route's fallback when the
//!   chosen side's circuit [`breaker`] is open or it failed before answering;
//! - [`headers`]: what is passed on, dropped and added, in both directions (one hop-by-hop
//!   table, the headers only the edge may set, `Via`, the request id);
//! - [`failure`]: what went wrong, mapped to one answer, metric and log label, and which
//!   requests are retried; [`retry`]: the budget every second attempt is taken from;
//! - [`reply`]: the error answers the edge writes itself, in the catalog API's error format;
//! - [`record`]: what is counted and logged of every request.
//!
//! A pipeline holds only what is its own: how it moves bytes. Everything it decides about a
//! request, it asks one of these. `tests/proxy/parity.rs` runs each rule through both pipelines
//! and requires the same answer, the same request at the origin, the same metrics and the same
//! access log.

pub(crate) mod breaker;
pub(crate) mod failure;
pub(crate) mod fallback;
pub(crate) mod head;
pub(crate) mod headers;
pub(crate) mod record;
pub(crate) mod reply;
pub(crate) mod request;
pub(crate) mod retry;
pub(crate) mod route;
