//! Banyan against nginx and HAProxy on the same machine (issue 6), with wrk as the load
//! generator. Run through `bench/compare`, which installs what is missing.
//!
//! One fixed backend (`bench-backend`, a 70-byte JSON answer or a 1 MB one), and in front of it,
//! each with the same number of worker threads:
//! - `direct`: no proxy (the ceiling);
//! - `nginx`: `proxy_pass` with an upstream keep-alive pool;
//! - `haproxy`: `mode http`, `http-reuse always`;
//!   both set the headers Banyan sets as the edge (`X-Forwarded-*`, a request id and `Via` both
//!   ways), so every proxy does the same work per request;
//! - `pingora`: `bare-pingora`, Pingora with nothing on top on Banyan's settings;
//! - `banyan`: the table a migration really runs (issue 24): 50 routes, each with a circuit
//!   breaker, half of them on the new service with the monolith as fallback, the benchmarked
//!   one in a rollout held at a 50 % sticky split (both sides the same backend, so the work is
//!   comparable), metrics and the access log on;
//! - `unguarded` (throughput scenarios): the same table without the safety loop (breakers off,
//!   no fallback, a plain split instead of the rollout), for what the loop costs.
//!
//! Scenarios (`--only` picks some): `small-64`, `small-1000` (keep-alive, 70-byte answers),
//! `1mb-16` (1 MB answers), `post-64` (512-byte JSON `POST`s, head and body in one write, as
//! wrk, curl and most clients send them), `post-split-64` (the same `POST`s, head and body in
//! two writes, as Java's clients send them: [`measure::split_posts`], not wrk), `idle-10k` (RSS with 10,000 idle keep-alive connections),
//! `reload-1s` (the route table rewritten every second under load, against no reloads),
//! `shadow-100` (every request shadowed, against no shadowing) and `reference` (the monolith
//! with 10,000 products behind each proxy, on catalog endpoints).
//!
//! Load scenarios run the contenders in interleaved rounds so the machine's drift hits all
//! alike, and print requests/s, p50/p99/p99.9, proxy CPU seconds per 10,000 requests (and the
//! kernel's part of it), proxy RSS, the ratios Banyan/nginx, Banyan/HAProxy and Banyan/bare
//! Pingora, and a verdict for each of the issue's targets. Beside the CPU target, a "kernel
//! floor" line: Banyan's system time per request against nginx's whole CPU per request, which
//! no work in Banyan's own code can go below (the system calls, the loopback network stack and
//! the wakeups of the peers are paid by every proxy alike).
//!
//! Files: [`contenders`] starts and stops the proxies, [`measure`] runs wrk and computes the
//! medians and tables, and each scenario has its own file ([`throughput`], [`shadow`],
//! [`reload`], [`idle`], [`reference`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use banyan_bench::free_port;
use banyan_bench::proxy::{BackendProcess, Banyan, Usage, sibling_binary, usage_of};
use clap::Parser;

mod contenders;
mod idle;
mod measure;
mod reference;
mod reload;
mod shadow;
mod throughput;

use contenders::*;
use idle::*;
use measure::*;
use reference::*;
use reload::*;
use shadow::*;
use throughput::*;

#[derive(Parser)]
pub(crate) struct Args {
    /// Seconds per contender per round
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
    /// Interleaved rounds (issue 24's targets are medians of at least 5)
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// Worker threads of every proxy
    #[arg(long, default_value_t = 2)]
    pub(crate) workers: usize,
    /// Scenarios to run (default: all)
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<String>,
    /// Print Banyan's benchmark table for a backend at this address and exit (`bench/profile`
    /// profiles the proxy on exactly what the comparison runs)
    #[arg(long, value_name = "BACKEND")]
    pub(crate) print_table: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(backend) = &args.print_table {
        print!("{}", banyan_table(backend, args.workers, None));
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let lua = dir.path().join("report.lua");
    std::fs::write(&lua, WRK_LUA)?;
    let post_lua = dir.path().join("post.lua");
    std::fs::write(&post_lua, format!("{POST_LUA}{WRK_LUA}"))?;
    let workers = args.workers.to_string();
    let small = BackendProcess::start(&["--threads", &workers])?;
    let big = BackendProcess::start(&["--threads", &workers, "--bytes", "1048576"])?;
    let small_addr = small.addr.to_string();
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);

    let scenarios = [
        Scenario {
            name: "small-64",
            path: "/api/products/42",
            connections: 64,
            big: false,
            post: false,
            split: false,
        },
        Scenario {
            name: "small-1000",
            path: "/api/products/42",
            connections: 1000,
            big: false,
            post: false,
            split: false,
        },
        Scenario {
            name: "1mb-16",
            path: "/api/products/42",
            connections: 16,
            big: true,
            post: false,
            split: false,
        },
        Scenario {
            name: "post-64",
            path: "/api/products/42",
            connections: 64,
            big: false,
            post: true,
            split: false,
        },
        Scenario {
            name: "post-split-64",
            path: "/api/products/42",
            connections: 64,
            big: false,
            post: true,
            split: true,
        },
    ];
    let mut summary: Vec<String> = Vec::new();
    let mut report = |out: String| {
        print!("{out}");
        summary.push(out);
    };
    for sc in scenarios.iter().filter(|s| wanted(s.name)) {
        let backend = if sc.big {
            big.addr.to_string()
        } else {
            small_addr.clone()
        };
        let lua = if sc.post { &post_lua } else { &lua };
        report(throughput(sc, &backend, &args, dir.path(), lua).await?);
    }
    if wanted("idle-10k") {
        report(idle(&small_addr, &args, dir.path(), &lua).await?);
    }
    if wanted("reload-1s") {
        report(reload(&small_addr, &args, &lua).await?);
    }
    if wanted("shadow-100") {
        report(shadow(&small_addr, &args, &lua).await?);
    }
    if wanted("reference") {
        report(reference(&args, dir.path(), dir.path()).await?);
    }
    println!("\n==== summary ====");
    for s in summary {
        print!("{s}");
    }
    Ok(())
}
