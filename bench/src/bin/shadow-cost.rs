//! What comparing a request costs the proxy, against what proxying it costs (issue 22).
//!
//! One Banyan in front of a fast backend with two routes: `/off` (no shadow) and `/match`
//! (shadowed at 100 % to a second fast backend giving the same answers, so every compared
//! answer matches). The candidate runs at normal priority: a service with CPU to spare. First
//! a closed-loop run on `/off` finds the capacity; then interleaved rounds run each route
//! open-loop at `--load` of it (default half). Per round, from the proxy's threads' CPU times
//! in /proc:
//! - the proxy's own cost per request: CPU of the request threads per `/off` request;
//! - a compared request's cost: the CPU `/match` took beyond what as many `/off` requests take
//!   (request threads and the shadow thread together), per comparison made;
//! - the share of sampled requests that were compared (the rest were dropped at the in-flight
//!   bound, or failed).
//!
//! Prints every round and the medians; the targets are a ratio under 0.5 and at least 90 %
//! compared. `--banyan PATH` measures another build of the proxy (say, an earlier commit's) in
//! the same way.

use std::path::PathBuf;
use std::time::Duration;

use banyan_bench::load::{self, Plan};
use banyan_bench::proxy::{BackendProcess, Banyan, sibling_binary};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Seconds per route per round
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Keep-alive client connections
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Offered load as a share of the closed-loop capacity without shadowing
    #[arg(long, default_value_t = 0.5)]
    load: f64,
    /// Proxy worker threads
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The banyan binary to measure (default: the one built beside this one)
    #[arg(long)]
    banyan: Option<PathBuf>,
}

fn table(threads: usize, primary: &str, twin: &str) -> String {
    format!(
        "[proxy]\nthreads = {threads}\n\n\
         [upstreams.primary]\naddrs = [\"{primary}\"]\n\n\
         [upstreams.twin]\naddrs = [\"{twin}\"]\n\n\
         [[route]]\nid = \"off\"\npath = \"/off\"\nupstream = \"primary\"\n\n\
         [[route]]\nid = \"match\"\npath = \"/match\"\nupstream = \"primary\"\n\
         shadow = {{ to = \"twin\", percent = 100, timeout = \"5s\", max_in_flight = 256 }}\n"
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The `/match` route's shadow counters so far: (compared, not compared).
async fn counts(banyan: &Banyan) -> anyhow::Result<(u64, u64)> {
    let snap = banyan.admin_json("/shadow").await?;
    let (mut compared, mut missed) = (0, 0);
    for e in snap["routes"]["match"]["endpoints"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        let c = &e["counts"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        compared += n("compared");
        missed += n("dropped_in_flight")
            + n("dropped_backlog")
            + n("candidate_timeouts")
            + n("candidate_errors");
    }
    Ok((compared, missed))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let primary = BackendProcess::start(&[])?;
    let twin = BackendProcess::start(&[])?;
    let binary = match &args.banyan {
        Some(p) => p.clone(),
        None => sibling_binary("banyan")?,
    };
    let banyan = Banyan::start(
        &binary,
        &table(
            args.threads,
            &primary.addr.to_string(),
            &twin.addr.to_string(),
        ),
    )
    .await?;
    println!("banyan: {}", binary.display());
    let plan = |route: &str, rate: Option<f64>, secs: u64| Plan {
        addr: banyan.listen,
        path: format!("/{route}/api/products/42"),
        connections: args.connections,
        rate,
        duration: Duration::from_secs(secs),
    };
    load::run(&plan("off", None, 2)).await; // warm-up
    load::run(&plan("match", Some(2000.0), 2)).await; // and the shadow side's connections
    let capacity = load::run(&plan("off", None, 5)).await.rps();
    let rate = capacity * args.load;
    println!(
        "capacity without shadowing (closed loop, {} connections): {capacity:.0} req/s; offered: {rate:.0} req/s ({:.0} %)",
        args.connections,
        args.load * 100.0
    );
    let (mut proxy_us, mut compared_us, mut ratios, mut shares) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        // `off`, then `match`, then the other order next round: drift hits both alike.
        let order: [&str; 2] = if round % 2 == 1 {
            ["off", "match"]
        } else {
            ["match", "off"]
        };
        let mut off = (0.0, 0u64);
        let mut on = (0.0, 0.0, 0u64, 0u64, 0u64);
        for route in order {
            let (s0, r0) = banyan.shadow_and_other_cpu();
            let (c0, m0) = counts(&banyan).await?;
            let o = load::run(&plan(route, Some(rate), args.seconds)).await;
            // Shadows still in flight finish before the counters are read.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (s1, r1) = banyan.shadow_and_other_cpu();
            let (c1, m1) = counts(&banyan).await?;
            if route == "off" {
                off = (r1 - r0, o.ok);
            } else {
                on = (r1 - r0, s1 - s0, o.ok, c1 - c0, m1 - m0);
            }
        }
        let per_request = off.0 / off.1.max(1) as f64;
        let (req_cpu, shadow_cpu, ok, compared, missed) = on;
        let extra = req_cpu + shadow_cpu - per_request * ok as f64;
        let per_compared = extra / compared.max(1) as f64;
        let share = compared as f64 / ok.max(1) as f64;
        println!(
            "round {round}: proxy {:.1} µs/request; compared {:.1} µs each (request threads +{:.1} µs, shadow thread {:.1} µs), ratio {:.3}; compared {compared} of {ok} sampled ({:.1} %), {missed} not",
            per_request * 1e6,
            per_compared * 1e6,
            (req_cpu / ok.max(1) as f64 - per_request) * 1e6,
            shadow_cpu / compared.max(1) as f64 * 1e6,
            per_compared / per_request,
            share * 100.0
        );
        proxy_us.push(per_request * 1e6);
        compared_us.push(per_compared * 1e6);
        ratios.push(per_compared / per_request);
        shares.push(share * 100.0);
    }
    let ratio = median(ratios);
    let share = median(shares);
    println!(
        "\nmedian of {} rounds: proxy {:.1} µs/request, compared request {:.1} µs, ratio {ratio:.3} (target < 0.5: {}); compared {share:.1} % of sampled (target >= 90 %: {})",
        args.rounds,
        median(proxy_us),
        median(compared_us),
        if ratio < 0.5 { "met" } else { "not met" },
        if share >= 90.0 { "met" } else { "not met" },
    );
    Ok(())
}
