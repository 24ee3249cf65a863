//! Rollouts: a route that migrates itself, step by step, on the evidence of its own traffic.
//!
//! A rollout (`[route.rollout]`, checked in [`crate::config::rollout`]) moves a route's split
//! from the old side to `to` through `steps`; at each step the gates ([`gate`]) judge what the
//! step's traffic showed, and the step advances, holds or, after `failures` failed checks in a
//! row, aborts to 0 % ([`progress`]). Where each part is:
//! - [`live`]: what a request sees (the share, one atomic load; the two sides' records, which
//!   the edge's [`crate::edge::fallback::Side`] adds to on both pipelines);
//! - [`traffic`], [`latency`]: a side's requests, errors and latency histogram, and a step
//!   judged on them;
//! - [`control`]: the controller loop, the operator's actions, freezing a removed rollout;
//! - [`store`]: progress and history on disk (the state directory), so a restart resumes;
//! - [`shared`]: several proxies running one rollout through Redis (one decides, by a lease).

pub(crate) mod control;
pub(crate) mod gate;
pub(crate) mod latency;
pub(crate) mod live;
pub(crate) mod progress;
pub(crate) mod shared;
pub(crate) mod store;
pub(crate) mod traffic;
