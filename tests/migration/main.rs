//! Moving data during the migration: the backfill from the monolith's database into an
//! extracted service's own database, the continuous sync, the handoff of writes, and moving
//! routes through the proxy.

mod across_the_cut;
mod backfill;
mod handoff;
mod proxy_move;
mod set_aside;
mod shadow;
mod sync;
