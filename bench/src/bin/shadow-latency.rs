//! Does shadowing cost clients anything? The issue-5 benchmark.
//!
//! One Banyan process in front of a fast backend, with one route per variant:
//! - `off`: no shadow (the reference);
//! - `match`: shadow at 100 % to a second fast backend giving the same answers (every answer is
//!   compared);
//!
//! The candidates run as separate processes at idle scheduling priority: on one machine they
//! stand in for services on other machines, whose CPU time is not the proxy clients' concern.
//! - `slow-2s`: shadow at 100 % to a candidate that answers after 2 s;
//! - `fail-500`: shadow at 100 % to a candidate that answers 500 at once;
//! - `dead`: shadow at 100 % to an address where nothing listens;
//! - `off-again`: no shadow again: how far it lands from `off` is this machine's noise.
//!
//! First a closed-loop run finds the proxy's capacity without shadowing; then every variant runs
//! open-loop at a fraction of it (default 30 %), in many short interleaved rounds so that the
//! machine's drift and hiccups hit all variants alike. Latency is counted from when each request was due. Prints
//! p50/p99/p99.9 per variant over all rounds, the p99 ratio against `off`, and what the shadow
//! side recorded (compared, dropped, timeouts, errors) as proof the shadows were sent.

use std::time::Duration;

use banyan_bench::load::{self, Outcome, Plan};
use banyan_bench::proxy::{BackendProcess, Banyan, sibling_binary};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Seconds per variant per round
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    #[arg(long, default_value_t = 30)]
    rounds: usize,
    /// Keep-alive client connections
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Offered load as a share of the closed-loop capacity (open-loop sustains less than closed-loop
    /// on a machine shared with the load generator; above about 0.4 every variant queues)
    #[arg(long, default_value_t = 0.3)]
    load: f64,
    /// Proxy worker threads
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// One route per variant (`/off/...`, `/match/...`), all in one table: switching variants is
/// switching the path the load goes to, with no reload in between.
fn table(threads: usize, ups: &[(&str, String)], variants: &[(&str, Option<&str>)]) -> String {
    let mut t = format!("[proxy]\nthreads = {threads}\n\n");
    for (name, addr) in ups {
        t.push_str(&format!("[upstreams.{name}]\naddrs = [\"{addr}\"]\n\n"));
    }
    for (name, to) in variants {
        t.push_str(&format!(
            "[[route]]\nid = \"{name}\"\npath = \"/{name}\"\nupstream = \"primary\"\n"
        ));
        if let Some(to) = to {
            t.push_str(&format!(
                "shadow = {{ to = \"{to}\", percent = 100, timeout = \"5s\", max_in_flight = 64 }}\n"
            ));
        }
        t.push('\n');
    }
    t
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let primary = BackendProcess::start(&[])?;
    // Candidates run as separate idle-priority processes, standing in for other machines.
    let twin = BackendProcess::start(&["--idle"])?;
    let slow = BackendProcess::start(&["--idle", "--delay-ms", "2000"])?;
    let failing = BackendProcess::start(&["--idle", "--status", "500"])?;
    let dead = format!("127.0.0.1:{}", banyan_bench::free_port());
    let ups = [
        ("primary", primary.addr.to_string()),
        ("twin", twin.addr.to_string()),
        ("slow", slow.addr.to_string()),
        ("failing", failing.addr.to_string()),
        ("dead", dead),
    ];
    // `off` twice: the spread between the two is the noise floor of this machine.
    let variants: [(&str, Option<&str>); 6] = [
        ("off", None),
        ("match", Some("twin")),
        ("slow-2s", Some("slow")),
        ("fail-500", Some("failing")),
        ("dead", Some("dead")),
        ("off-again", None),
    ];

    let banyan = Banyan::start(
        &sibling_binary("banyan")?,
        &table(args.threads, &ups, &variants),
    )
    .await?;
    let plan = |variant: &str, rate: Option<f64>, secs: u64| Plan {
        addr: banyan.listen,
        path: format!("/{variant}/api/products/42"),
        connections: args.connections,
        rate,
        duration: Duration::from_secs(secs),
    };
    load::run(&plan("off", None, 2)).await; // warm-up
    let capacity = load::run(&plan("off", None, 5)).await;
    let rate = capacity.rps() * args.load;
    println!(
        "capacity without shadowing (closed loop, {} connections): {:.0} req/s; offered load: {:.0} req/s ({:.0} %)",
        args.connections,
        capacity.rps(),
        rate,
        args.load * 100.0
    );

    let mut totals: Vec<Outcome> = variants.iter().map(|_| Outcome::empty()).collect();
    // Per variant, each round's p99 divided by that round's `off` p99.
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    // (shadow thread, request threads) CPU seconds per variant.
    let mut cpu: Vec<(f64, f64)> = vec![(0.0, 0.0); variants.len()];
    let mut shadow_counts: Vec<serde_json::Value> = vec![serde_json::Value::Null; variants.len()];
    for round in 1..=args.rounds {
        let mut off_p99 = f64::NAN;
        for (i, (name, _)) in variants.iter().enumerate() {
            let (shadow0, other0) = banyan.shadow_and_other_cpu();
            let o = load::run(&plan(name, Some(rate), args.seconds)).await;
            let (shadow1, other1) = banyan.shadow_and_other_cpu();
            cpu[i].0 += shadow1 - shadow0;
            cpu[i].1 += other1 - other0;
            println!(
                "round {round} {name:<9} {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  errors {}  late {}",
                o.rps(),
                o.ms(0.5),
                o.ms(0.99),
                o.ms(0.999),
                o.errors,
                o.late
            );
            if i == 0 {
                off_p99 = o.ms(0.99);
            }
            ratios[i].push(o.ms(0.99) / off_p99);
            totals[i].merge(&o);
        }
    }

    // Slow shadows still in flight finish within their 5 s timeout.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let snap = banyan.admin_json("/shadow").await?;
    for (i, (name, _)) in variants.iter().enumerate() {
        shadow_counts[i] = snap["routes"][name]["endpoints"]
            .as_object()
            .and_then(|e| e.values().next())
            .map_or(serde_json::Value::Null, |e| e["counts"].clone());
    }
    println!(
        "\n{:<9} {:>8} {:>8} {:>8} {:>9} {:>7} {:>11} {:>14} {:>14} {:>14}  shadow side (all rounds)",
        "variant",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "p99 vs off",
        "median ratio",
        "cpu-s/10k req",
        "shadow cpu-s"
    );
    let reference = totals[0].ms(0.99);
    for (i, (name, _)) in variants.iter().enumerate() {
        let o = &totals[i];
        let c = &shadow_counts[i];
        let side = if c.is_null() {
            "-".to_owned()
        } else {
            format!(
                "compared {} dropped {} timeouts {} errors {}",
                c["compared"],
                c["dropped_in_flight"],
                c["candidate_timeouts"],
                c["candidate_errors"]
            )
        };
        let per_10k = |secs: f64| secs / (o.ok.max(1) as f64) * 10_000.0;
        let mut r = ratios[i].clone();
        r.sort_by(f64::total_cmp);
        let median = r.get(r.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "{name:<9} {:>8.0} {:>8.3} {:>8.3} {:>9.3} {:>7} {:>10.3}x {:>13.3}x {:>14.3} {:>14.3}  {side}",
            o.rps(),
            o.ms(0.5),
            o.ms(0.99),
            o.ms(0.999),
            o.errors,
            o.ms(0.99) / reference,
            median,
            per_10k(cpu[i].1),
            per_10k(cpu[i].0),
        );
    }
    let (rss, cpu) = banyan.usage();
    println!(
        "\nproxy at the end: RSS {:.1} MiB, {:.1} CPU seconds",
        rss as f64 / 1048576.0,
        cpu
    );
    Ok(())
}
