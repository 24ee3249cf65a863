//! A fixed backend in its own process (see `banyan_bench::backend`): prints `listening on ADDR`
//! and serves until killed.
//!
//! With `--idle`, every thread is scheduled `SCHED_IDLE`: on a one-machine benchmark this stands
//! in for a candidate service running on *another* machine, so the candidate's own CPU time is
//! not charged to the proxy's clients.

use std::time::Duration;

use banyan_bench::backend::{self, Behaviour};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Answer after this many milliseconds
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Status of every answer
    #[arg(long, default_value_t = 200)]
    status: u16,
    /// Run at idle scheduling priority
    #[arg(long)]
    idle: bool,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Answer this many bytes instead of the 70-byte JSON
    #[arg(long)]
    bytes: Option<usize>,
    /// Listen here (default: a free loopback port)
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
}

fn idle() {
    service_kit::priority::lower_current_thread();
}

fn main() {
    let args = Args::parse();
    if args.idle {
        idle();
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.worker_threads(args.threads).enable_all();
    if args.idle {
        rt.on_thread_start(idle);
    }
    let rt = rt.build().expect("runtime");
    rt.block_on(async {
        let addr = backend::start_on(
            args.listen,
            Behaviour {
                delay: Duration::from_millis(args.delay_ms),
                status: args.status,
                size: args.bytes,
            },
        )
        .await;
        println!("listening on {addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::future::pending::<()>().await;
    });
}
