//! Assembling and running the proxy process: Pingora's server with the proxy service and the
//! admin API's service (both on Pingora listeners, so an upgrade hands both sockets over), plus
//! one background service for everything that is not request handling (reload, health checks,
//! the drain at shutdown, the readiness line).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownWatch};
use pingora_core::services::background::{BackgroundService, background_service};
use pingora_core::services::listening::Service;

use crate::admin::serve::AdminApp;
use crate::admin::{self, AdminState, guard};
use crate::balance::Workers;
use crate::connection::Connections;
use crate::fast_path::FastPath;
use crate::forward::Banyan;
use crate::lifecycle::signals::Signals;
use crate::lifecycle::upgrade::Handoff;
use crate::lifecycle::{Lifecycle, Timing, drain, notify, reserve};
use crate::metrics::Metrics;
use crate::reload::{self, LiveTable};
use crate::shadow::results::Results;
use crate::shadow::share::{self, Shared};
use crate::shadow::thread::Shadower;
use crate::upstream::health;

/// Socket buffering of client connections. Pingora's default puts a 64 KiB read buffer in
/// front of every client socket, allocated zeroed when the connection is accepted and kept for
/// its whole life: with 10,000 idle keep-alive clients that was 90 KiB of RSS per connection
/// (bench/RESULTS.md, idle-10k). Banyan reads without it: the HTTP/1 parser reads the request
/// head into its own small buffer and bodies into their own chunks, so the read buffer only
/// added a copy. The 1,460-byte write buffer stays: it puts a response's head and a small body
/// in one segment.
fn client_buffers() -> L4BufferSettings {
    L4BufferSettings::default().read(0)
}

/// Command-line overrides of `[proxy]` settings, and the process's lifecycle settings.
#[derive(Debug, Clone)]
pub(crate) struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// How long a graceful stop waits for load balancers, then for requests in flight.
    pub timing: Timing,
    /// Share shadow results through this Redis (`redis://...`), under `shadow_prefix`.
    pub shadow_redis: Option<String>,
    pub shadow_prefix: String,
    /// Run rollouts together with the other proxies on this Redis, under `rollout_prefix`.
    pub rollout_redis: Option<String>,
    pub rollout_prefix: String,
    /// Take the listening sockets over from a running instance instead of binding them.
    pub upgrade: bool,
    pub handoff: Handoff,
}

/// Runs the proxy until SIGTERM (graceful), SIGQUIT (upgrade: a new process took over) or
/// SIGINT (fast); see [`crate::lifecycle`].
pub(crate) fn run(config: &Path, overrides: Overrides) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let live =
        Arc::new(LiveTable::open(config, metrics.clone()).map_err(|e| anyhow::anyhow!("{e}"))?);
    for (flag, url) in [
        ("--shadow-redis", &overrides.shadow_redis),
        ("--rollout-redis", &overrides.rollout_redis),
    ] {
        if let Some(url) = url {
            redis::Client::open(url.as_str())
                .map_err(|e| anyhow::anyhow!("invalid {flag} URL: {e}"))?;
        }
    }
    let settings = live.current().config.proxy.clone();
    let wanted_listen = overrides.listen.unwrap_or(settings.listen);
    let wanted_admin = overrides.admin.unwrap_or(settings.admin);
    if overrides.upgrade && (wanted_listen.port() == 0 || wanted_admin.port() == 0) {
        anyhow::bail!(
            "--upgrade takes the running instance's sockets by their addresses: give the ports \
             it announced (listening on ..., admin on ...), not port 0"
        );
    }
    let (listen, held_listen) = reserve::resolve(wanted_listen)
        .map_err(|e| anyhow::anyhow!("cannot bind the client listener on {wanted_listen}: {e}"))?;
    let (admin, held_admin) = reserve::resolve(wanted_admin)
        .map_err(|e| anyhow::anyhow!("cannot bind the admin API on {wanted_admin}: {e}"))?;
    if guard::off_loopback(admin) && settings.admin_token_file.is_none() {
        anyhow::bail!(
            "the admin API would listen on {admin}, off loopback, without a token: set [proxy] \
             admin_token_file (every admin request but /healthz then needs it), or keep the \
             admin API on 127.0.0.1"
        );
    }
    let handoff = overrides.handoff.clone();
    if overrides.upgrade {
        handoff.prepare_takeover()?;
    } else {
        // A port 0 was resolved to a port held for Pingora: nothing to test there.
        let named = [
            ("client listener", wanted_listen, listen),
            ("admin API", wanted_admin, admin),
        ];
        for (what, _, addr) in named.into_iter().filter(|(_, w, _)| w.port() != 0) {
            if let Err(e) = std::net::TcpListener::bind(addr) {
                anyhow::bail!(
                    "cannot bind the {what} on {addr}: {e} (to take over from a running banyan, \
                     start the new one with --upgrade)"
                );
            }
        }
    }
    let lifecycle = Arc::new(Lifecycle::new(overrides.timing));
    let grace = overrides.timing.grace.as_secs();

    let conf = ServerConf {
        threads: settings.threads,
        // One single-threaded runtime per worker thread rather than one work-stealing runtime:
        // a connection stays on its thread, so waking its task and its upstream connections
        // (kept per thread, `fast_path::idle`) cost no cross-thread synchronization. Measured
        // +12 % requests/s for a bare Pingora proxy on small responses (bench/RESULTS.md).
        work_stealing: false,
        // Banyan exits by itself once drained or at the end of its grace period
        // (`lifecycle::drain`); Pingora's own wait is only a backstop.
        grace_period_seconds: Some(grace + 5),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: handoff.socket.display().to_string(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: overrides.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    // With --upgrade: receives the running instance's listening sockets.
    server.bootstrap();

    let results = Arc::new(Results::new(metrics.clone()));
    // One shadower (its thread and in-flight bounds) for both paths.
    let shadower = Arc::new(Shadower::new(results.clone(), live.shadow_backlogs()));
    let forward = pingora_proxy::http_proxy(
        &server.configuration,
        Banyan {
            live: live.clone(),
            metrics: metrics.clone(),
            shadow: shadower.clone(),
            lifecycle: lifecycle.clone(),
        },
    );
    let workers = Arc::new(Workers::default());
    let connections = Connections {
        app: Arc::new(forward),
        fast: FastPath {
            live: live.clone(),
            metrics: metrics.clone(),
            shadow: shadower,
            lifecycle: lifecycle.clone(),
        },
        workers: workers.clone(),
        lifecycle: lifecycle.clone(),
    };
    let mut proxy = Service::new("banyan proxy".into(), connections);
    proxy.add_listener(ListenerConfig::tcp(listen.to_string()).l4_buffer(client_buffers()));
    server.add_service(proxy);

    let shared = Arc::new(std::sync::OnceLock::<Shared>::new());
    let trend = Arc::new(admin::trend::Trend::default());
    let router = admin::router(AdminState {
        trend: trend.clone(),
        admin,
        lifecycle: lifecycle.clone(),
        live: live.clone(),
        metrics: metrics.clone(),
        results: results.clone(),
        shared: shared.clone(),
    });
    let mut admin_service = Service::new("banyan admin API".into(), AdminApp { router });
    admin_service.add_tcp(&admin.to_string());
    admin_service.threads = Some(1);
    server.add_service(admin_service);

    server.add_service(background_service(
        "banyan control plane",
        Control {
            live,
            metrics,
            listen,
            admin,
            results,
            shared,
            trend,
            lifecycle: lifecycle.clone(),
            workers,
            handoff: handoff.clone(),
            held: std::sync::Mutex::new(vec![held_listen, held_admin]),
            shadow_redis: overrides
                .shadow_redis
                .map(|url| (url, overrides.shadow_prefix)),
            rollout_redis: overrides
                .rollout_redis
                .map(|url| (url, overrides.rollout_prefix)),
        },
    ));
    tracing::info!(%listen, %admin, config = %config.display(), upgrade = overrides.upgrade, "starting");
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals { lifecycle, listen }),
    });
    handoff.forget_pid();
    tracing::info!("stopped");
    Ok(())
}

struct Control {
    live: Arc<LiveTable>,
    metrics: Arc<Metrics>,
    listen: SocketAddr,
    admin: SocketAddr,
    results: Arc<Results>,
    shared: Arc<std::sync::OnceLock<Shared>>,
    trend: Arc<admin::trend::Trend>,
    lifecycle: Arc<Lifecycle>,
    workers: Arc<Workers>,
    handoff: Handoff,
    /// Ports chosen for a `:0` address, held until the listeners are up ([`reserve`]).
    held: std::sync::Mutex<Vec<Option<reserve::Held>>>,
    shadow_redis: Option<(String, String)>,
    rollout_redis: Option<(String, String)>,
}

#[async_trait]
impl BackgroundService for Control {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::spawn(reload::keep_current(self.live.clone()));
        tokio::spawn(health::run(self.live.clone(), self.metrics.clone()));
        tokio::spawn(admin::trend::run(self.trend.clone(), self.metrics.clone()));
        match self.rollout_redis.clone() {
            Some((url, prefix)) => tokio::spawn(crate::rollout::shared::run(
                self.live.clone(),
                self.results.clone(),
                url,
                prefix,
            )),
            None => tokio::spawn(crate::rollout::control::run(
                self.live.clone(),
                self.results.clone(),
            )),
        };
        if let Some((url, prefix)) = self.shadow_redis.clone() {
            tokio::spawn(connect_shared(
                url,
                prefix,
                self.results.clone(),
                self.shared.clone(),
            ));
        }
        let workers = self.workers.clone();
        let handoff = self.handoff.clone();
        tokio::spawn(drain::exit_when_drained(
            shutdown.clone(),
            self.lifecycle.clone(),
            move || workers.open(),
            move || handoff.forget_pid(),
        ));

        announce_when_ready(self.listen, self.admin).await;
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.handoff.record_pid();
        notify::ready();
        let _ = shutdown.changed().await;
    }
}

/// Connects to the Redis that shadow results are shared through, retrying while it is down
/// (traffic never waits for it), then flushes this instance's results there every second.
async fn connect_shared(
    url: String,
    prefix: String,
    results: Arc<Results>,
    cell: Arc<std::sync::OnceLock<Shared>>,
) {
    let mut warned = false;
    loop {
        match Shared::connect(&url, &prefix).await {
            Ok(shared) => {
                tracing::info!(prefix, "shadow results are shared through Redis");
                let _ = cell.set(shared.clone());
                share::keep_flushing(results, shared, Duration::from_secs(1)).await;
                return;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "cannot reach the Redis for shadow results; counting locally and retrying");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Prints `listening on http://LISTEN` once the proxy and the admin API accept connections,
/// then the admin address, so supervisors and tests know when to send traffic (and, with a
/// port 0, which port it got).
async fn announce_when_ready(listen: SocketAddr, admin: SocketAddr) {
    let reachable = |addr: SocketAddr| {
        if addr.ip().is_unspecified() {
            let local: std::net::IpAddr = if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            SocketAddr::new(local, addr.port())
        } else {
            addr
        }
    };
    for probe in [reachable(listen), reachable(admin)] {
        while tokio::net::TcpStream::connect(probe).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tracing::info!(%listen, %admin, "ready");
    println!("listening on http://{listen}");
    println!("admin on http://{admin}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
