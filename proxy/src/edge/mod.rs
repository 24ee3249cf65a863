//! The edge: what Banyan does to every request before either pipeline sees it, and how it
//! answers one it will not forward.
//!
//! - [`head`]: the request head is read whole, within a size, header-count and time bound,
//!   before the fast path or Pingora's pipeline looks at it; the pipelines never read a head
//!   themselves, so the bounds hold for both.
//! - [`reply`]: an error answer written straight to the client socket, in the catalog API's
//!   error format, for the answers given before a pipeline runs.

pub mod head;
pub mod reply;
