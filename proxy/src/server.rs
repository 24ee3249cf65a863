//! Assembling and running the proxy process: Pingora's server with the proxy service, plus one
//! background service for everything that is not request handling (reload, health checks, the
//! admin API, the readiness line).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownWatch};
use pingora_core::services::background::{BackgroundService, background_service};
use pingora_core::services::listening::Service;

use crate::admin::{self, AdminState};
use crate::connection::Connections;
use crate::fast_path::FastPath;
use crate::forward::Banyan;
use crate::metrics::Metrics;
use crate::reload::{self, LiveTable};
use crate::shadow::mirror::Shadower;
use crate::shadow::results::Results;
use crate::shadow::share::{self, Shared};
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

/// Command-line overrides of `[proxy]` settings.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_grace: Option<u64>,
    /// Share shadow results through this Redis (`redis://...`), under `shadow_prefix`.
    pub shadow_redis: Option<String>,
    pub shadow_prefix: String,
}

/// Runs the proxy until SIGTERM (graceful) or SIGINT (fast).
pub fn run(config: &Path, overrides: Overrides) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let live =
        Arc::new(LiveTable::open(config, metrics.clone()).map_err(|e| anyhow::anyhow!("{e}"))?);
    if let Some(url) = &overrides.shadow_redis {
        redis::Client::open(url.as_str())
            .map_err(|e| anyhow::anyhow!("invalid --shadow-redis URL: {e}"))?;
    }
    let settings = live.current().config.proxy.clone();
    let listen = overrides.listen.unwrap_or(settings.listen);
    let admin = overrides.admin.unwrap_or(settings.admin);

    let conf = ServerConf {
        threads: settings.threads,
        // One single-threaded runtime per worker thread rather than one work-stealing runtime:
        // a connection stays on its thread, so waking its task and its upstream connections
        // (kept per thread, `fast_path::idle`) cost no cross-thread synchronization. Measured
        // +12 % requests/s for a bare Pingora proxy on small responses (bench/RESULTS.md).
        work_stealing: false,
        grace_period_seconds: Some(overrides.shutdown_grace.unwrap_or(5)),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
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
        },
    );
    let connections = Connections {
        app: Arc::new(forward),
        fast: FastPath {
            live: live.clone(),
            metrics: metrics.clone(),
            shadow: shadower,
        },
        workers: Default::default(),
    };
    let mut proxy = Service::new("banyan proxy".into(), connections);
    proxy.add_listener(ListenerConfig::tcp(listen.to_string()).l4_buffer(client_buffers()));
    server.add_service(proxy);
    server.add_service(background_service(
        "banyan control plane",
        Control {
            live,
            metrics,
            listen,
            admin,
            results,
            shadow_redis: overrides
                .shadow_redis
                .map(|url| (url, overrides.shadow_prefix)),
        },
    ));
    tracing::info!(%listen, %admin, config = %config.display(), "starting");
    server.run(RunArgs::default());
    tracing::info!("stopped");
    Ok(())
}

struct Control {
    live: Arc<LiveTable>,
    metrics: Arc<Metrics>,
    listen: SocketAddr,
    admin: SocketAddr,
    results: Arc<Results>,
    shadow_redis: Option<(String, String)>,
}

#[async_trait]
impl BackgroundService for Control {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::spawn(reload::keep_current(self.live.clone()));
        tokio::spawn(health::run(self.live.clone(), self.metrics.clone()));
        let shared = Arc::new(std::sync::OnceLock::<Shared>::new());
        if let Some((url, prefix)) = self.shadow_redis.clone() {
            tokio::spawn(connect_shared(
                url,
                prefix,
                self.results.clone(),
                shared.clone(),
            ));
        }

        let listener = match tokio::net::TcpListener::bind(self.admin).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(admin = %self.admin, error = %e, "cannot bind the admin API");
                eprintln!("error: cannot bind the admin API on {}: {e}", self.admin);
                std::process::exit(1);
            }
        };
        let app = admin::router(AdminState {
            live: self.live.clone(),
            metrics: self.metrics.clone(),
            results: self.results.clone(),
            shared,
        });
        let mut admin_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = admin_shutdown.changed().await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "admin API failed");
            }
        });

        announce_when_ready(self.listen, self.admin).await;
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

/// Prints `listening on http://LISTEN` once the proxy accepts connections, then the admin
/// address, so supervisors and tests know when to send traffic.
async fn announce_when_ready(listen: SocketAddr, admin: SocketAddr) {
    let probe = if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    };
    loop {
        if tokio::net::TcpStream::connect(probe).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!(%listen, %admin, "ready");
    println!("listening on http://{listen}");
    println!("admin on http://{admin}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
