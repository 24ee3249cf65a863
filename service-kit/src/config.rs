//! Configuration every service shares: where its data lives. Flattened into each service's
//! command line, so the same variables mean the same thing in every process of a stack.

use std::path::PathBuf;

use clap::Args;

/// Storage options. With no database or Redis URL, everything is embedded under `--data-dir`
/// (SQLite files), which the processes of one stack share for sessions.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// This service's database: mysql://, postgres:// or sqlite://; default: a SQLite file in
    /// the data directory
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// redis://host:port for sessions and caches; default: the embedded store in the data directory
    #[arg(long, env = "REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (the same for every process of a stack, which share sessions)
    #[arg(
        long,
        env = "REDIS_KEY_PREFIX",
        default_value = "banyan:",
        global = true
    )]
    pub redis_key_prefix: String,
    /// Directory for embedded storage (SQLite files); shared by every process of the stack
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
}
