//! Command line and environment (each option either way, so containers need no flags).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Clone, Parser)]
#[command(args_conflicts_with_subcommands = false)]
#[command(
    name = "catalog-service",
    version,
    about = "The catalog service (products and categories)"
)]
pub struct Cli {
    /// postgres://user:pass@host/db (production) or sqlite://path; default: <data-dir>/catalog.db
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// redis://host:port: the shared session store and the read caches; default: embedded
    #[arg(long, env = "REDIS_URL", hide_env_values = true, global = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (must match the other services of the stack for sessions)
    #[arg(
        long,
        env = "REDIS_KEY_PREFIX",
        default_value = "banyan:",
        global = true
    )]
    pub redis_key_prefix: String,
    /// Directory for embedded storage; the embedded session store is shared through it
    #[arg(long, env = "BANYAN_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// Database connections in the pool
    #[arg(
        long,
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub max_connections: u32,
    /// Address to listen on (port 0 picks a free port; the bound address is printed on stdout)
    #[arg(
        long,
        env = "LISTEN_ADDR",
        default_value = "127.0.0.1:4001",
        global = true
    )]
    pub listen: SocketAddr,
    /// While serving, keep this service's products in sync with the monolith's database
    /// (mysql://... or sqlite://...) through its change outbox
    #[arg(long, env = "MONOLITH_DATABASE_URL", hide_env_values = true)]
    pub sync_from: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the API (the default)
    Serve,
    /// Copy the monolith's products into this service's database (idempotent, resumable)
    Backfill {
        /// The monolith's database: mysql://... or sqlite://...
        #[arg(long, env = "MONOLITH_DATABASE_URL", hide_env_values = true)]
        from: String,
        /// Rows per transaction
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=2000))]
        batch: i64,
        /// Rescan from the first product instead of resuming (rows that did not change stay as they are)
        #[arg(long)]
        restart: bool,
    },
}
