//! The `banyan` command line: `run` serves, `check` validates route tables offline with the same
//! validation every reload uses, `shadow report` prints shadow comparison results (from a running
//! proxy's admin API, or straight from the Redis that proxies share them through).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config;
use crate::lifecycle::Timing;
use crate::lifecycle::upgrade::Handoff;
use crate::server::{self, Overrides};
use crate::shadow::report;
use crate::shadow::results::Snapshot;
use crate::shadow::share::Shared;

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
        /// Seconds requests in flight get to finish once the proxy closes (after SIGTERM and the
        /// drain delay, or after an upgrade); it exits as soon as none is left
        #[arg(long, env = "BANYAN_SHUTDOWN_GRACE", default_value_t = 5)]
        shutdown_grace: u64,
        /// Seconds between SIGTERM and closing: /healthz answers 503 at once and the proxy keeps
        /// serving meanwhile, so load balancers (a Kubernetes Service) stop sending first
        #[arg(long, env = "BANYAN_DRAIN_DELAY", default_value_t = 0)]
        drain_delay: u64,
        /// Take the listening sockets (client and admin) over from the running banyan instead
        /// of binding them; with --pid-file, the running one is told (SIGQUIT) by this one
        #[arg(long)]
        upgrade: bool,
        /// The Unix socket an upgrade hands the listening sockets over
        #[arg(
            long,
            env = "BANYAN_UPGRADE_SOCKET",
            default_value = "/tmp/banyan-upgrade.sock"
        )]
        upgrade_socket: PathBuf,
        /// Record this process's pid here once it serves (and find the one to take over from)
        #[arg(long, env = "BANYAN_PID_FILE")]
        pid_file: Option<PathBuf>,
        /// Share shadow results with other instances through this Redis (redis://host:port/db)
        #[arg(long, env = "BANYAN_SHADOW_REDIS", hide_env_values = true)]
        shadow_redis: Option<String>,
        /// Key prefix of shared shadow results
        #[arg(long, env = "BANYAN_SHADOW_PREFIX", default_value = "banyan:shadow")]
        shadow_prefix: String,
    },
    /// Shadow traffic results
    Shadow {
        #[command(subcommand)]
        command: ShadowCommand,
    },
    /// Validate route tables; prints every problem as file:line:column and exits non-zero
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShadowCommand {
    /// Per route: compared, mismatch %, drops and failures, top differing fields with an example
    Report {
        /// The admin API of a running proxy
        #[arg(
            long,
            env = "BANYAN_ADMIN_URL",
            default_value = "http://127.0.0.1:9901"
        )]
        admin: String,
        /// Read the results shared by all proxies straight from this Redis instead
        #[arg(long, env = "BANYAN_SHADOW_REDIS", hide_env_values = true)]
        redis: Option<String>,
        /// Key prefix of shared shadow results (with --redis)
        #[arg(long, env = "BANYAN_SHADOW_PREFIX", default_value = "banyan:shadow")]
        prefix: String,
        /// Only this route
        #[arg(long)]
        route: Option<String>,
        /// Print the results as JSON instead of a table
        #[arg(long)]
        json: bool,
        /// The admin token's file (needed when the admin API is not on loopback)
        #[arg(long, env = "BANYAN_ADMIN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { files } => check(&files),
        Command::Shadow {
            command:
                ShadowCommand::Report {
                    admin,
                    redis,
                    prefix,
                    route,
                    json,
                    token_file,
                },
        } => match shadow_report(
            &admin,
            redis.as_deref(),
            &prefix,
            route.as_deref(),
            json,
            token_file.as_deref(),
        ) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            listen,
            admin,
            shutdown_grace,
            drain_delay,
            upgrade,
            upgrade_socket,
            pid_file,
            shadow_redis,
            shadow_prefix,
        } => {
            service_kit::telemetry::init();
            match server::run(
                &config,
                Overrides {
                    listen,
                    admin,
                    timing: Timing {
                        drain_delay: Duration::from_secs(drain_delay),
                        grace: Duration::from_secs(shutdown_grace),
                    },
                    shadow_redis,
                    shadow_prefix,
                    upgrade,
                    handoff: Handoff {
                        pid_file,
                        socket: upgrade_socket,
                    },
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

fn shadow_report(
    admin: &str,
    redis: Option<&str>,
    prefix: &str,
    route: Option<&str>,
    json: bool,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    let token = token_file
        .map(crate::admin::guard::read_token)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--token-file: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut snap: Snapshot = runtime.block_on(async {
        match redis {
            Some(url) => {
                let shared = Shared::connect(url, prefix).await?;
                shared
                    .read()
                    .await
                    .map_err(|e| anyhow::anyhow!("reading shadow results from Redis: {e}"))
            }
            None => {
                let url = format!("{}/shadow", admin.trim_end_matches('/'));
                let mut request = reqwest::Client::new()
                    .get(&url)
                    .timeout(std::time::Duration::from_secs(10));
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let resp = request
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot reach the admin API at {admin}: {e}"))?;
                let status = resp.status();
                let body: serde_json::Value = resp
                    .json()
                    .await
                    .map_err(|e| anyhow::anyhow!("unexpected answer from {url}: {e}"))?;
                if !status.is_success() {
                    anyhow::bail!("{url} answered {status}: {body}");
                }
                Ok(serde_json::from_value(body["routes"].clone())?)
            }
        }
    })?;
    if let Some(r) = route {
        snap.retain(|id, _| id == r);
    }
    if json {
        for r in snap.values_mut() {
            r.samples.clear();
        }
        return Ok(format!("{}\n", serde_json::to_string_pretty(&snap)?));
    }
    Ok(report::render(&snap, route))
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for file in files {
        match config::load_file(file) {
            Ok(c) => {
                let splits = c.routes.iter().filter(|r| r.split.is_some()).count();
                let shadows = c.routes.iter().filter(|r| r.shadow.is_some()).count();
                println!(
                    "{}: ok: {} routes ({} split, {} shadowed), {} upstreams, listen {}, admin {}",
                    file.display(),
                    c.routes.len(),
                    splits,
                    shadows,
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
                    let shadow = r.shadow.as_ref().map_or_else(String::new, |s| {
                        format!(
                            " (shadow {}% -> {}{}{})",
                            f64::from(s.basis_points) / 100.0,
                            s.to,
                            if s.writes { ", writes too" } else { "" },
                            s.second_primary
                                .as_ref()
                                .map_or_else(String::new, |p| format!(", noise from {p}"))
                        )
                    });
                    println!(
                        "  {:<24} {:<21} {:<28} -> {}{split}{shadow}",
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
