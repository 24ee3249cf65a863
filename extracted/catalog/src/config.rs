//! Command line and environment (each option either way, so containers need no flags).

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

#[derive(Debug, Clone, Parser)]
#[command(args_conflicts_with_subcommands = false)]
#[command(
    name = "catalog-service",
    version,
    about = "The catalog service (products and categories)"
)]
pub struct Cli {
    #[command(flatten)]
    pub storage: service_kit::config::StorageArgs,
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
