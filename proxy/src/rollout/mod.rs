//! Rollouts: a route that migrates itself, step by step, on the evidence of its own traffic
//! (issue 22, in progress).
//!
//! A rollout moves a route's split from the old side to `to` through `steps`; at each step
//! the gates ([`gate`]) judge what the step's traffic showed, and the step advances, holds or,
//! after `failures` failed checks in a row, aborts to 0 % ([`progress`]). Built so far: the
//! gates' judgement, the per-side record of requests, errors and latency ([`traffic`],
//! [`latency`]) a step is judged on, the state machine of a rollout's phases and its state and
//! history on disk ([`store`]); the controller that runs checks on live traffic, the
//! `[route.rollout]` block, the Redis lease and the CLI come next.

// The controller that calls these is the next piece of the issue; until it lands, only the
// tests use them.
#![cfg_attr(not(test), allow(dead_code))]

pub(crate) mod gate;
pub(crate) mod latency;
pub(crate) mod progress;
pub(crate) mod store;
pub(crate) mod traffic;
