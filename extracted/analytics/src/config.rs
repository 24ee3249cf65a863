//! Command line and environment (each option either way, so containers need no flags).

use std::net::SocketAddr;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "analytics-service",
    version,
    about = "The analytics service (events and summary)"
)]
pub struct Cli {
    #[command(flatten)]
    pub storage: service_kit::config::StorageArgs,
    /// Address to listen on (port 0 picks a free port; the bound address is printed on stdout)
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:4004")]
    pub listen: SocketAddr,
    /// The monolith's database (mysql://... or sqlite://...), whose events are copied here
    #[arg(long, env = "MONOLITH_DATABASE_URL", hide_env_values = true)]
    pub sync_from: Option<String>,
    /// Events that may wait for the writer; beyond that, requests wait, then get 503
    #[arg(long, env = "ANALYTICS_QUEUE", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub queue: u32,
}
