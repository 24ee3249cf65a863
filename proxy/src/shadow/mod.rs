//! Shadow traffic: a copy of live requests sent to a candidate upstream, its answers compared
//! with the primary's (issue 5).
//!
//! Built so far: [`compare`], the field-by-field comparison of two responses under a route's
//! rules; [`noise`], which learns from two primaries which fields are noise; [`redact`], which
//! keeps credentials out of stored samples; [`endpoint`], the templates results are counted by.
//! Mirroring requests off the client's path, the result store and its reports come next; the
//! route table does not accept `shadow` yet.

pub mod compare;
pub mod endpoint;
pub mod noise;
pub mod redact;
