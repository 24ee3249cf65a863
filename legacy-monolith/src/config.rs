//! Command line and environment. Every option can be given either way, so the same binary is
//! configured by flags on a laptop and by environment only in a container.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "legacy-monolith",
    version,
    about = "The legacy product catalog monolith"
)]
pub struct Cli {
    #[command(flatten)]
    pub storage: Storage,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Where data lives (shared by every service; see [`service_kit::config::StorageArgs`]).
pub type Storage = service_kit::config::StorageArgs;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default)
    Serve(ServeArgs),
    /// Insert deterministic demo products (does nothing when products exist already)
    Seed(SeedArgs),
    /// Seed demo data if the catalog is empty, make sure an admin exists, and serve
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed on stdout)
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Email of the admin account to create or update at start (with --admin-password)
    #[arg(long, env = "BANYAN_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Password of the admin account (read from the environment in production)
    #[arg(long, env = "BANYAN_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Mark the session cookie `Secure` (set when clients reach the stack over HTTPS)
    #[arg(long, env = "COOKIE_SECURE", default_value_t = false)]
    pub cookie_secure: bool,
    /// Seconds between trims of the change outboxes the extracted services follow
    #[arg(long, env = "OUTBOX_PRUNE_INTERVAL", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub outbox_prune_interval: u64,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            admin_email: None,
            admin_password: None,
            cookie_secure: false,
            outbox_prune_interval: 60,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// How many products to generate
    #[arg(long, default_value_t = 10_000)]
    pub products: u32,
    /// Seed of the generator: the same seed always gives the same catalog
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Products to generate when the catalog is empty
    #[arg(long, default_value_t = 10_000)]
    pub products: u32,
}
