//! Shadow traffic: a copy of live requests goes to a candidate upstream, and its answers are
//! compared with the primary's, before a route moves.
//!
//! - [`mirror`]: the copy, captured on the client's path (sampling, write opt-in, body caps,
//!   the in-flight bound, the shadow marker header); [`thread`] runs it off that path,
//!   [`exchange`] sends it to the candidate with the route's timeout (through [`client`], the
//!   fast path's wire code, pipelined with other copies by [`lanes`]), [`sample`] keeps what
//!   the report shows.
//! - [`bounds`]: what a shadowed route keeps across reloads: its in-flight bound, and the
//!   backlog of events that did not fit in the shadow thread's bounded inbox.
//! - [`answer`] and [`compare`]: status, chosen headers, and JSON bodies field by field under a
//!   route's rules (ignore, unordered arrays, numeric tolerance); other bodies byte for byte.
//! - [`noise`]: Diffy's noise learning from a second primary.
//! - [`endpoint`]: the templates results are counted by (`GET /api/products/{id}`).
//! - [`results`]: the bounded store of counts, field statistics and samples; [`redact`] keeps
//!   credentials out of it.
//! - [`share`]: several proxies adding their results up in Redis.
//! - [`report`]: what `banyan shadow report` prints.

pub(crate) mod answer;
pub(crate) mod bounds;
mod client;
pub(crate) mod compare;
pub(crate) mod endpoint;
mod exchange;
mod lanes;
pub(crate) mod mirror;
pub(crate) mod noise;
pub(crate) mod redact;
pub(crate) mod report;
pub(crate) mod results;
mod sample;
pub(crate) mod share;
pub(crate) mod thread;
