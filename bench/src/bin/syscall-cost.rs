//! What one system call's crossing into the kernel and back costs on this machine: the most an
//! I/O model that batches or removes system calls (io_uring) could save a proxy per call.
//!
//! Times `getppid(2)`, which does no work in the kernel, so the figure is the entry and exit
//! alone (with this kernel's mitigations), in rounds; prints each round and the median.
//! Multiplied by a proxy's system calls per request (`bash bench/profile`: about 4.3) and set
//! against its system time per request (`compare`'s "of it sys" column), it bounds that lever
//! (bench/RESULTS.md, issue 24).

use std::time::Instant;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// System calls per round
    #[arg(long, default_value_t = 5_000_000)]
    calls: u32,
    /// Rounds
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

fn main() {
    let args = Args::parse();
    let mut rounds = Vec::with_capacity(args.rounds);
    for round in 1..=args.rounds {
        let started = Instant::now();
        for _ in 0..args.calls {
            // `getppid(2)` through the C library, which does not cache it: one call each.
            std::hint::black_box(std::os::unix::process::parent_id());
        }
        let ns = started.elapsed().as_nanos() as f64 / f64::from(args.calls);
        println!("round {round}: {ns:.1} ns per system call");
        rounds.push(ns);
    }
    rounds.sort_by(f64::total_cmp);
    println!(
        "median of {} rounds: {:.1} ns per system call",
        rounds.len(),
        rounds[rounds.len() / 2]
    );
}
