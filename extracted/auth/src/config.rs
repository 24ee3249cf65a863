//! Command line and environment (each option either way, so containers need no flags).

use std::net::SocketAddr;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "auth-service",
    version,
    about = "The auth service (users and sessions)"
)]
pub struct Cli {
    #[command(flatten)]
    pub storage: service_kit::config::StorageArgs,
    /// Address to listen on (port 0 picks a free port; the bound address is printed on stdout)
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:4002")]
    pub listen: SocketAddr,
    /// While serving, copy the monolith's users here and write registrations made here back
    /// (mysql://... or sqlite://...)
    #[arg(long, env = "MONOLITH_DATABASE_URL", hide_env_values = true)]
    pub sync_from: Option<String>,
    /// Mark the session cookie `Secure` (set when clients reach the stack over HTTPS)
    #[arg(long, env = "COOKIE_SECURE", default_value_t = false)]
    pub cookie_secure: bool,
}
