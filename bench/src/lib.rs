//! Benchmark building blocks, shared by the scenarios in `src/bin/`:
//! - [`backend`]: a fixed, fast HTTP/1.1 backend (a 70-byte JSON answer), optionally slowed down
//!   or failing, so what is measured is the proxy and not the backend;
//! - [`load`]: a keep-alive load generator, closed-loop (as fast as the answers come) for
//!   throughput, or open-loop at a fixed rate for latency, with latency counted from when each
//!   request was *due*, so a stalled proxy cannot hide its stall (no coordinated omission);
//! - [`proxy`]: the release `banyan` binary as a child process, reconfigured by rewriting its
//!   route table and waiting for the new version, as operators do.
//!
//! Benchmarks print figures and ratios measured in the same run; they never assert timings.

pub mod backend;
pub mod load;
pub mod proxy;

/// A free loopback port (bound, then released: the benchmark starts its servers right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
