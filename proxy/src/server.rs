//! Assembling and running the proxy process: Pingora's server with the proxy service, plus one
//! background service for everything that is not request handling (reload, health checks, the
//! admin API, the readiness line).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownWatch};
use pingora_core::services::background::{BackgroundService, background_service};

use crate::admin::{self, AdminState};
use crate::forward::Banyan;
use crate::metrics::Metrics;
use crate::reload::{self, LiveTable};
use crate::upstream::health;

/// Command-line overrides of `[proxy]` settings.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_grace: Option<u64>,
}

/// Runs the proxy until SIGTERM (graceful) or SIGINT (fast).
pub fn run(config: &Path, overrides: Overrides) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let live =
        Arc::new(LiveTable::open(config, metrics.clone()).map_err(|e| anyhow::anyhow!("{e}"))?);
    let settings = live.current().config.proxy.clone();
    let listen = overrides.listen.unwrap_or(settings.listen);
    let admin = overrides.admin.unwrap_or(settings.admin);

    let conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(overrides.shutdown_grace.unwrap_or(5)),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = pingora_proxy::http_proxy_service(
        &server.configuration,
        Banyan {
            live: live.clone(),
            metrics: metrics.clone(),
        },
    );
    proxy.add_tcp(&listen.to_string());
    server.add_service(proxy);
    server.add_service(background_service(
        "banyan control plane",
        Control {
            live,
            metrics,
            listen,
            admin,
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
}

#[async_trait]
impl BackgroundService for Control {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::spawn(reload::keep_current(self.live.clone()));
        tokio::spawn(health::run(self.live.clone(), self.metrics.clone()));

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
