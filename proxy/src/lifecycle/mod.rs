//! The process's life after it starts serving: draining on SIGTERM, handing its sockets to a
//! new process on an upgrade, and exiting as soon as nothing is left in flight.
//!
//! The sequence on SIGTERM ([`signals`]):
//! 1. **draining**: the admin `/healthz` answers 503 at once, so a load balancer or a
//!    Kubernetes Service stops sending new connections; the proxy keeps serving normally for
//!    the drain delay (`--drain-delay`, 0 by default; on Kubernetes, long enough for the
//!    endpoint removal to reach every node);
//! 2. **closing**: every answer from then on carries `Connection: close`, the listener stops
//!    accepting, idle keep-alive connections are closed (one that answered within the last
//!    second first waits that long for a request already on its way, and answers it);
//! 3. **exit** ([`drain`]): as soon as the last connection is closed, or at the end of the
//!    grace period (`--shutdown-grace`), when each request still running is logged with its
//!    request id and its connection closed.
//!
//! SIGQUIT starts an upgrade ([`upgrade`]): the listening sockets (client and admin) go to the
//! new process, which has been accepting on them since, and this one closes as above. SIGINT
//! stops at once.

pub(crate) mod drain;
pub(crate) mod inflight;
pub(crate) mod listener;
pub(crate) mod notify;
pub(crate) mod reserve;
pub(crate) mod signals;
pub(crate) mod upgrade;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use inflight::Inflight;

/// Where the process is in its life, shared by the pipelines (which close connections once it
/// is closing), the admin API (whose `/healthz` reports draining) and the signal handling.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    draining: AtomicBool,
    closing: AtomicBool,
    /// The client listener is closed: no connection can arrive any more.
    listener_closed: AtomicBool,
    /// The requests being served, for the log at the end of the grace period.
    pub inflight: Inflight,
    pub timing: Timing,
}

/// How long each stage of a graceful stop may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// From SIGTERM to closing: the proxy keeps serving while load balancers take it out.
    pub drain_delay: Duration,
    /// From closing to exit at the latest: requests in flight get this long to finish.
    pub grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            drain_delay: Duration::ZERO,
            grace: Duration::from_secs(5),
        }
    }
}

impl Lifecycle {
    pub(crate) fn new(timing: Timing) -> Self {
        Self {
            timing,
            ..Self::default()
        }
    }

    /// A stop or an upgrade has begun: `/healthz` says so.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Connections are being closed: no answer may promise keep-alive.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Whether the client listener has stopped accepting and is closed.
    pub(crate) fn is_listener_closed(&self) -> bool {
        self.listener_closed.load(Ordering::Acquire)
    }

    pub(crate) fn listener_closed(&self) {
        self.listener_closed.store(true, Ordering::Release);
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub(crate) fn start_closing(&self) {
        self.start_draining();
        self.closing.store(true, Ordering::Relaxed);
    }
}
