//! End-to-end tests of the Banyan proxy: the real `banyan` binary in front of in-process origin
//! servers (see `banyan_tests::origin`), and the real monolith where it matters.

mod admin;
mod bodies;
mod check;
mod connections;
mod dashboard;
mod deploy;
mod fallback;
mod fast_path;
mod heads;
mod health;
mod parity;
mod plan;
mod reload;
mod rollout;
mod routing;
mod shadow;
mod shutdown;
mod split;
mod walkthrough;
