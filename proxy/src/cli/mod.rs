//! The `banyan` command line: `run` serves, `check` validates route tables offline with the same
//! validation every reload uses ([`check`]), `routes` shows the table a running proxy serves
//! ([`routes`]), `shadow report` prints shadow comparison results ([`shadow`]), `status`,
//! `plan`, `history`, `rollback` and `rollout` show and steer the migration ([`status`],
//! [`plan`], [`rollout`]). Commands that talk to a running proxy find its admin API and token
//! the same way ([`admin`]).

mod admin;
mod check;
mod plan;
mod rollout;
mod routes;
mod shadow;
mod status;
mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::lifecycle::Timing;
use crate::lifecycle::upgrade::Handoff;
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
        /// Override [proxy] listen (port 0: a free port, announced as `listening on http://ADDR`)
        #[arg(long, env = "BANYAN_LISTEN")]
        listen: Option<SocketAddr>,
        /// Override [proxy] admin (port 0: a free port, announced as `admin on http://ADDR`)
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
        /// Run rollouts together with the other proxies on this Redis (redis://host:port/db):
        /// one decides, by a lease, on every proxy's traffic; all follow
        #[arg(long, env = "BANYAN_ROLLOUT_REDIS", hide_env_values = true)]
        rollout_redis: Option<String>,
        /// Key prefix of shared rollouts
        #[arg(long, env = "BANYAN_ROLLOUT_PREFIX", default_value = "banyan:rollout")]
        rollout_prefix: String,
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
    /// How far the migration is: every route's phase, rollouts with their gates and figures,
    /// and the share of all traffic served by extracted services
    Status {
        #[command(flatten)]
        admin: admin::AdminArgs,
        /// The admin API's JSON instead of text
        #[arg(long)]
        json: bool,
        /// Block until this route's rollout has migrated (exit 0) or aborted or rolled back
        /// (exit 1)
        #[arg(long, value_name = "ROUTE")]
        wait: Option<String>,
        /// With --wait: give up after this long (exit 3), e.g. 30m
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// What saving this route table would change on the running proxy: which routes move which
    /// share of current traffic, which rollouts restart (like a terraform plan)
    Plan {
        file: PathBuf,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// Every applied table and rollout event, with time and reason
    History {
        #[command(flatten)]
        admin: admin::AdminArgs,
        /// Only this route's events
        #[arg(long)]
        route: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Send a route back to the old side now, whatever its rollout's phase (migrated included)
    Rollback {
        route: String,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// Steer a route's rollout
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// The table a running proxy serves, per-side request counts, and a refused reload on top
    /// (exit status 1 while the last reload stands refused)
    Routes {
        #[command(flatten)]
        admin: admin::AdminArgs,
        /// The admin API's JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Let a rollout waiting at an `approve_at` step move on at its next passing check
    Approve {
        route: String,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// Hold a rollout at its current share and stop judging it
    Pause {
        route: String,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// Judge a paused rollout again, from the traffic its step serves from now on
    Resume {
        route: String,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShadowCommand {
    /// Per route: compared, mismatch %, drops and failures, top differing fields with an example
    Report {
        #[command(flatten)]
        admin: admin::AdminArgs,
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
    },
}

/// `30s`, `5m`, `1h`: a duration as route tables write them.
fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration such as 30s, 5m or 1h"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { files } => check::run(&files),
        Command::Routes { admin, json } => routes::run(&admin, json),
        Command::Status {
            admin,
            json,
            wait,
            timeout,
        } => status::run(&admin, json, wait.as_deref(), timeout),
        Command::Plan { file, admin } => plan::run(&admin, &file),
        Command::History { admin, route, json } => rollout::history(&admin, route.as_deref(), json),
        Command::Rollback { route, admin } => rollout::act(&admin, &route, "rollback"),
        Command::Rollout { command } => match command {
            RolloutCommand::Approve { route, admin } => rollout::act(&admin, &route, "approve"),
            RolloutCommand::Pause { route, admin } => rollout::act(&admin, &route, "pause"),
            RolloutCommand::Resume { route, admin } => rollout::act(&admin, &route, "resume"),
        },
        Command::Shadow {
            command:
                ShadowCommand::Report {
                    admin,
                    redis,
                    prefix,
                    route,
                    json,
                },
        } => match shadow::report(&admin, redis.as_deref(), &prefix, route.as_deref(), json) {
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
            rollout_redis,
            rollout_prefix,
        } => {
            service_kit::telemetry::init();
            let outcome = server::run(
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
                    rollout_redis,
                    rollout_prefix,
                    upgrade,
                    handoff: Handoff {
                        pid_file,
                        socket: upgrade_socket,
                    },
                },
            );
            // The access lines still in the log's buffer.
            service_kit::log_line::flush();
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
