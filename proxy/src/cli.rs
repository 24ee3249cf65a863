//! The `banyan` command line: `run` serves, `check` validates route tables offline with the same
//! validation every reload uses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config;
use crate::server::{self, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "banyan",
    version,
    about = "The Banyan strangler-fig migration proxy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve, hot-reloading the route table when the file changes (or on SIGHUP)
    Run {
        /// The route table
        #[arg(long, short, env = "BANYAN_CONFIG", default_value = "routes.toml")]
        config: PathBuf,
        /// Override [proxy] listen
        #[arg(long, env = "BANYAN_LISTEN")]
        listen: Option<SocketAddr>,
        /// Override [proxy] admin
        #[arg(long, env = "BANYAN_ADMIN")]
        admin: Option<SocketAddr>,
        /// Seconds requests in flight get to finish after SIGTERM
        #[arg(long, env = "BANYAN_SHUTDOWN_GRACE", default_value_t = 5)]
        shutdown_grace: u64,
    },
    /// Validate route tables; prints every problem as file:line:column and exits non-zero
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { files } => check(&files),
        Command::Run {
            config,
            listen,
            admin,
            shutdown_grace,
        } => {
            service_kit::telemetry::init();
            match server::run(
                &config,
                Overrides {
                    listen,
                    admin,
                    shutdown_grace: Some(shutdown_grace),
                },
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for file in files {
        match config::load_file(file) {
            Ok(c) => {
                let splits = c.routes.iter().filter(|r| r.split.is_some()).count();
                println!(
                    "{}: ok: {} routes ({} split), {} upstreams, listen {}, admin {}",
                    file.display(),
                    c.routes.len(),
                    splits,
                    c.upstreams.len(),
                    c.proxy.listen,
                    c.proxy.admin
                );
                for r in &c.routes {
                    let methods = r.methods.as_ref().map_or_else(
                        || "*".to_owned(),
                        |ms| {
                            ms.iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(",")
                        },
                    );
                    let split = r.split.as_ref().map_or_else(String::new, |s| {
                        format!(
                            " + {}% -> {} (sticky {})",
                            f64::from(s.basis_points) / 100.0,
                            s.to,
                            s.sticky
                        )
                    });
                    println!(
                        "  {:<24} {:<21} {:<28} -> {}{split}",
                        r.id, methods, r.path, r.upstream
                    );
                }
            }
            Err(errors) => {
                ok = false;
                eprintln!("{errors}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
