//! The signals that end the process, turned into the stages of [`super::Lifecycle`] and handed
//! to Pingora's server loop as the shutdown it should run.
//!
//! Pingora's own watcher answers SIGTERM by closing the listener at once and SIGQUIT by
//! handing the listeners over; Banyan inserts what a production proxy needs before that: the
//! `/healthz` flip and the drain delay on SIGTERM (so a load balancer stops sending before the
//! listener closes), and `Connection: close` on every answer from the moment a stop or an
//! upgrade begins (so keep-alive clients move on after their current request instead of
//! sending another into a closing connection).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};

use super::Lifecycle;

pub(crate) struct Signals {
    pub lifecycle: Arc<Lifecycle>,
    /// The client listener's address (its socket is found by it, see [`super::listener`]).
    pub listen: SocketAddr,
}

/// How long the accept loop gets to take the connections already queued on the listener once
/// new ones are held off, before it stops and the listener closes.
const QUEUE_DRAIN: Duration = Duration::from_millis(100);

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!(
                "cannot listen for SIGTERM, SIGQUIT and SIGINT; a signal will stop the process at once"
            );
            return std::future::pending().await;
        };
        let lifecycle = &self.lifecycle;
        tokio::select! {
            _ = quit.recv() => {
                tracing::info!("SIGQUIT: handing the listening sockets to the new process; this one closes its connections and exits when they are done");
                // No STOPPING=1 for systemd: the service goes on, in the new process.
                lifecycle.start_closing();
                ShutdownSignal::GracefulUpgrade
            }
            _ = term.recv() => {
                lifecycle.start_draining();
                super::notify::stopping();
                let delay = lifecycle.timing.drain_delay;
                if !delay.is_zero() {
                    tracing::info!(drain_delay_ms = delay.as_millis() as u64, "SIGTERM: /healthz answers 503; serving on for the drain delay");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = int.recv() => return ShutdownSignal::FastShutdown,
                    }
                }
                tracing::info!(grace_ms = lifecycle.timing.grace.as_millis() as u64, "SIGTERM: closing; requests in flight finish within the grace period");
                lifecycle.start_closing();
                if super::listener::stop_new_connections(self.listen) == 0 {
                    tracing::warn!(listen = %self.listen, "could not hold off new connections; those queued when the listener closes are reset");
                }
                tokio::time::sleep(QUEUE_DRAIN).await;
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping now");
                ShutdownSignal::FastShutdown
            }
        }
    }
}
