//! The catalog API contract in code: response shapes, request rules and error messages that
//! every implementation of an endpoint must share byte for byte.
//!
//! The monolith defines the contract and each extracted service keeps it, so that clients never
//! notice which process answered and shadow comparison shows real differences only. What is
//! contract lives here (what a valid request is, what the answer looks like, what an error
//! says); how an implementation stores and finds its data stays in that implementation.

pub mod analytics;
pub mod auth;
pub mod products;
pub mod search;

use serde::{Deserialize, Serialize};

/// A page of a listing: `{items, page, per_page, total}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: i64,
    pub per_page: i64,
    pub total: i64,
}
