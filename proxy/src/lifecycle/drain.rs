//! The end of a graceful stop: exit as soon as the last client connection has closed, and no
//! later than the grace period.
//!
//! Pingora's server waits out its whole grace period after a graceful shutdown begins, even
//! with nothing in flight (5 s on every stop and every upgrade). Banyan counts its client
//! connections ([`crate::balance::Workers`]) and exits when none is left. When the grace period
//! ends first, each request still running is logged with its request id, route and age before
//! the exit closes its connection, so an operator can tell which requests a stop cut off.

use std::sync::Arc;
use std::time::Duration;

use pingora_core::server::ShutdownWatch;

use super::Lifecycle;

/// How often the connection count is looked at once closing.
const CHECK: Duration = Duration::from_millis(10);

/// Waits for the server's shutdown, then for every connection to close (or the grace period),
/// then exits the process.
pub(crate) async fn exit_when_drained(
    mut shutdown: ShutdownWatch,
    lifecycle: Arc<Lifecycle>,
    open_connections: impl Fn() -> usize,
    before_exit: impl Fn(),
) {
    if shutdown.wait_for(|stopping| *stopping).await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + lifecycle.timing.grace;
    // Drained means: the listener is closed (no connection can come any more) and none is
    // open, seen twice a check apart, because a connection accepted just before the listener
    // closed is counted only once its task first runs.
    let mut empty_before = false;
    loop {
        let open = open_connections();
        let empty = open == 0 && lifecycle.is_listener_closed();
        if empty && empty_before {
            tracing::info!("every client connection is closed; exiting");
            before_exit();
            exit(0);
        }
        empty_before = empty;
        if tokio::time::Instant::now() >= deadline {
            let running = lifecycle.inflight.running();
            for r in &running {
                tracing::warn!(
                    request_id = %r.request_id,
                    route = %r.route,
                    elapsed_ms = r.elapsed_ms as u64,
                    "grace period over: closing the connection of a request still running"
                );
            }
            tracing::warn!(
                connections = open,
                requests = running.len(),
                "grace period over; exiting with connections open"
            );
            before_exit();
            exit(0);
        }
        tokio::time::sleep(CHECK).await;
    }
}

fn exit(code: i32) -> ! {
    use std::io::Write;
    service_kit::log_line::flush();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}
