//! Command line and environment (each option either way, so containers need no flags).

use std::net::SocketAddr;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "search-service",
    version,
    about = "The search service (full-text product search)"
)]
pub struct Cli {
    #[command(flatten)]
    pub storage: service_kit::config::StorageArgs,
    /// Address to listen on (port 0 picks a free port; the bound address is printed on stdout)
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:4003")]
    pub listen: SocketAddr,
    /// The monolith's database (mysql://... or sqlite://...), whose products are copied here and
    /// followed through its change outbox. Without it the index holds what the database holds.
    #[arg(long, env = "MONOLITH_DATABASE_URL", hide_env_values = true)]
    pub sync_from: Option<String>,
}
