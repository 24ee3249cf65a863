//! What is counted and logged of every request, whichever pipeline served it: one access
//! record, turned into the request metrics (the upstream failure it ended in included) and one
//! `access` log line by [`Record::finish`] (target `access`, so `RUST_LOG=info,access=off` turns
//! it off).
//!
//! The log line never carries the query (it may hold secrets) or a cookie; the path is the
//! normalized one the route matched.

use std::net::SocketAddr;
use std::time::Instant;

use super::failure::Failure;
use crate::metrics::Metrics;

/// Which pipeline served a request (the `banyan_pipeline_requests_total` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pipeline {
    Fast,
    Pingora,
    /// Answered by the edge before any pipeline (a refused head or request line).
    Edge,
}

impl Pipeline {
    fn label(self) -> &'static str {
        match self {
            Pipeline::Fast => "fast",
            Pipeline::Pingora => "pingora",
            Pipeline::Edge => "edge",
        }
    }
}

/// One request's access record.
pub(crate) struct Record<'a> {
    pub(crate) pipeline: Pipeline,
    pub(crate) started: Instant,
    pub(crate) method: &'a str,
    /// The normalized path (`-` when there is none).
    pub(crate) path: &'a str,
    /// The status answered (0: none reached the client).
    pub(crate) status: u16,
    pub(crate) route: &'a str,
    pub(crate) upstream: &'a str,
    pub(crate) backend: Option<SocketAddr>,
    pub(crate) attempts: usize,
    pub(crate) request_id: &'a str,
    pub(crate) failure: Option<&'a Failure>,
}

impl Record<'_> {
    /// Counts the request and writes its access line.
    pub(crate) fn finish(&self, metrics: &Metrics) {
        let elapsed = self.started.elapsed();
        metrics.request(self.route, self.upstream, self.status, elapsed);
        metrics.pipeline(self.pipeline.label());
        if let Some(kind) = self.failure.and_then(Failure::upstream_metric) {
            metrics.upstream_failure(self.upstream, kind);
        }
        // The line's shape is the subscriber's (a collector sees no difference); it is written
        // by hand because `tracing`'s formatter cost a third of the proxy's own CPU
        // (`service_kit::log_line`). `RUST_LOG` still decides whether it is written.
        if tracing::enabled!(target: "access", tracing::Level::INFO) {
            service_kit::log_line::info("request", |l| {
                l.str("method", self.method)
                    .str("path", self.path)
                    .num("status", u64::from(self.status))
                    .str("route", self.route)
                    .str("upstream", self.upstream)
                    .addr("backend", self.backend)
                    .num("attempts", self.attempts as u64)
                    .millis("elapsed_ms", elapsed)
                    .str("request_id", self.request_id)
                    .opt_str("error", self.failure.map(Failure::label));
            });
        }
    }
}
