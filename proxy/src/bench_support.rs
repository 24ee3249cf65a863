//! The edge's stages as `cargo bench -p banyan` measures them (`benches/edge.rs`): routing over
//! a table built the way the proxy builds one, the split, the upstream request head, the client
//! response head, and a failure's answer. Benchmarks are another crate, so these thin doors are
//! public; nothing else is to use them (hidden from the docs, and not an API).
//!
//! Each stage here is the one both pipelines call, not a copy of it: a regression in the edge
//! shows here before the full comparison against nginx runs.

use std::net::IpAddr;
use std::path::Path;

use http::Method;

use crate::edge::failure::Failure;
use crate::edge::headers::{self, EdgeRequest, EdgeResponse};
use crate::fast_path::wire::{self, Framing};
use crate::route_table::RouteTable;

/// A route table, loaded and built as the proxy does (no state directory is written: the
/// benchmarks' tables have no rollout).
pub struct Table {
    table: RouteTable,
}

impl Table {
    /// Panics on a table the proxy would refuse (a benchmark's own mistake).
    pub fn from_toml(text: &str) -> Table {
        let config = crate::config::parse(text, "bench.toml").expect("a valid table");
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
        let rollouts =
            crate::rollout::control::Rollouts::open(Path::new("/nonexistent/banyan-bench-state"));
        let table = RouteTable::build(
            config,
            "bench".into(),
            &crate::upstream::Registry::default(),
            &crate::shadow::bounds::Bounds::default(),
            &crate::edge::breaker::Breakers::new(metrics),
            &rollouts,
        );
        Table { table }
    }

    /// The edge's routing step (normalize, match, split): the index of the route and the
    /// length of the upstream target, or `None` when nothing matches.
    pub fn route(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &[httparse::Header<'_>],
        client: Option<IpAddr>,
    ) -> Option<(usize, usize)> {
        crate::edge::route::route(&self.table, method, path, query, headers, client)
            .ok()
            .map(|r| (r.index, r.target().len()))
    }
}

/// The head of the request that goes upstream, as the fast path writes it.
pub fn upstream_request_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    client_headers: &[httparse::Header<'_>],
    client_ip: Option<IpAddr>,
) {
    let via = headers::via(client_headers);
    let request_id = headers::request_id(client_headers);
    let edge = EdgeRequest {
        client_ip,
        host: client_headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .map(|h| h.value),
        request_id: &request_id,
        via: &via,
    };
    wire::upstream_request_head(out, method, target, client_headers, &edge);
}

/// The head of the response that goes to the client (a body of `len` bytes).
pub fn client_response_head(
    out: &mut Vec<u8>,
    status: u16,
    upstream_headers: &[httparse::Header<'_>],
    len: u64,
) {
    let via = headers::via(upstream_headers);
    let edge = EdgeResponse {
        request_id: "0123456789abcdef0123456789abcdef",
        via: &via,
        debug: None,
        close: false,
    };
    wire::client_response_head(
        out,
        status,
        "OK",
        upstream_headers,
        Framing::Length(len),
        &edge,
    );
}

/// The answer to a request whose upstream refused the connection: the JSON body and its
/// headers, written into `out`.
pub fn connect_failure_answer(out: &mut Vec<u8>) {
    let failure = Failure::Connect { timeout: false };
    let Some(err) = failure.answer("catalog") else {
        return;
    };
    let body = err.to_json();
    for (name, value) in crate::edge::reply::error_head(
        body.len(),
        "0123456789abcdef0123456789abcdef",
        failure.retry_after(),
    ) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(body.as_bytes());
}
