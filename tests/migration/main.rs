//! Moving data during the migration: the backfill from the monolith's database into an
//! extracted service's own database.

mod backfill;
mod proxy_move;
mod sync;
