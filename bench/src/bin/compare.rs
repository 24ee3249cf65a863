//! Banyan against nginx and HAProxy on the same machine (issue 6), with wrk as the load
//! generator. Run through `bench/compare`, which installs what is missing.
//!
//! One fixed backend (`bench-backend`, a 70-byte JSON answer or a 1 MB one), and in front of it,
//! each with the same number of worker threads:
//! - `direct`: no proxy (the ceiling);
//! - `nginx`: `proxy_pass` with an upstream keep-alive pool;
//! - `haproxy`: `mode http`, `http-reuse always`;
//! - `banyan`: a realistic table of 50 routes, the benchmarked one with a sticky split (both
//!   sides the same backend, so the work is comparable), metrics on (they always are).
//!
//! Scenarios run the contenders in interleaved rounds so the machine's drift hits all alike,
//! and print requests/s, p50/p99/p99.9, proxy CPU seconds per 10,000 requests, proxy RSS, and
//! the ratios Banyan/nginx and Banyan/HAProxy.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use banyan_bench::free_port;
use banyan_bench::proxy::{BackendProcess, Banyan, proc_usage, sibling_binary};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Seconds per contender per round
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Worker threads of every proxy
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Scenarios to run (default: all)
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// A proxy under test: its address and the processes whose CPU and memory count.
struct Contender {
    name: &'static str,
    addr: String,
    pids: Vec<u32>,
    _children: Vec<Child>,
}

/// What wrk measured in one run.
#[derive(Debug, Clone, Default)]
struct Run {
    requests: u64,
    errors: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    cpu: f64,
    rss: u64,
}

const WRK_LUA: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %.1f %.1f %.1f\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#;

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

fn usage(pids: &[u32]) -> (u64, f64) {
    pids.iter().fold((0, 0.0), |(r, c), p| {
        let (rss, cpu) = proc_usage(*p);
        (r + rss, c + cpu)
    })
}

async fn wait_port(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn start_nginx(dir: &Path, backend: &str, workers: usize) -> anyhow::Result<Contender> {
    let port = free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes {workers};\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log warn;\n\
             worker_rlimit_nofile 200000;\n\
             events {{ worker_connections 100000; multi_accept on; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
             upstream backend {{ server {backend}; keepalive 256; }}\n\
             server {{\n    listen 127.0.0.1:{port} reuseport backlog=65535;\n\
             location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering on; }}\n  }}\n}}\n",
            dir = dir.display()
        ),
    )?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .args(["-e", &dir.join("nginx-error.log").display().to_string()])
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    let addr = format!("127.0.0.1:{port}");
    wait_port(&addr).await?;
    let master = child.id();
    let mut pids = vec![master];
    pids.extend(children_of(master));
    Ok(Contender {
        name: "nginx",
        addr,
        pids,
        _children: vec![child],
    })
}

async fn start_haproxy(dir: &Path, backend: &str, workers: usize) -> anyhow::Result<Contender> {
    let port = free_port();
    let conf = dir.join("haproxy.cfg");
    std::fs::write(
        &conf,
        format!(
            "global\n  nbthread {workers}\n  maxconn 200000\n\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n\n\
             frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n\n\
             backend b\n  http-reuse always\n  server s1 {backend}\n"
        ),
    )?;
    let child = Command::new("haproxy")
        .arg("-f")
        .arg(&conf)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting haproxy")?;
    let addr = format!("127.0.0.1:{port}");
    wait_port(&addr).await?;
    let pid = child.id();
    Ok(Contender {
        name: "haproxy",
        addr,
        pids: vec![pid],
        _children: vec![child],
    })
}

/// 50 routes, the benchmarked path with a sticky split (both sides the same backend).
fn banyan_table(backend: &str, workers: usize) -> String {
    let mut t = format!(
        "[proxy]\nthreads = {workers}\n\n[upstreams.legacy]\naddrs = [\"{backend}\"]\n\n[upstreams.catalog]\naddrs = [\"{backend}\"]\n\n"
    );
    for i in 0..48 {
        t.push_str(&format!(
            "[[route]]\nid = \"r{i}\"\npath = \"/api/area{i}\"\nmethods = [\"GET\", \"HEAD\"]\nupstream = \"legacy\"\n\n"
        ));
    }
    t.push_str("[[route]]\nid = \"products\"\npath = \"/api/products\"\nupstream = \"legacy\"\nsplit = { to = \"catalog\", percent = 50, sticky = \"cookie:sid\" }\n\n");
    t.push_str("[[route]]\nid = \"rest\"\npath = \"/\"\nupstream = \"legacy\"\n");
    t
}

fn wrk(
    addr: &str,
    path: &str,
    connections: usize,
    seconds: u64,
    lua: &Path,
) -> anyhow::Result<Run> {
    let out = Command::new("wrk")
        .args([
            "-t",
            "2",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
        ])
        .args(["--timeout", "10s", "-s"])
        .arg(lua)
        .args(["-H", "Cookie: sid=bench-session"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .with_context(|| format!("wrk printed no result: {text}"))?;
    let f: Vec<f64> = line[7..]
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    Ok(Run {
        requests: f[0] as u64,
        errors: f[1] as u64,
        seconds: f[2] / 1e6,
        p50_us: f[3],
        p99_us: f[4],
        p999_us: f[5],
        ..Run::default()
    })
}

struct Scenario {
    name: &'static str,
    path: &'static str,
    connections: usize,
    big: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let lua = dir.path().join("report.lua");
    std::fs::write(&lua, WRK_LUA)?;
    let workers = args.workers.to_string();
    let small = BackendProcess::start(&["--threads", &workers])?;
    let big = BackendProcess::start(&["--threads", &workers, "--bytes", "1048576"])?;

    let scenarios = [
        Scenario {
            name: "small-64",
            path: "/api/products/42",
            connections: 64,
            big: false,
        },
        Scenario {
            name: "small-1000",
            path: "/api/products/42",
            connections: 1000,
            big: false,
        },
        Scenario {
            name: "1mb-16",
            path: "/api/products/42",
            connections: 16,
            big: true,
        },
    ];
    let mut summary: Vec<String> = Vec::new();
    for sc in scenarios
        .iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == s.name))
    {
        let backend = if sc.big {
            big.addr.to_string()
        } else {
            small.addr.to_string()
        };
        let banyan_proc = Banyan::start(
            &sibling_binary("banyan")?,
            &banyan_table(&backend, args.workers),
        )
        .await?;
        let mut contenders = vec![
            Contender {
                name: "direct",
                addr: backend.clone(),
                pids: vec![],
                _children: vec![],
            },
            start_nginx(dir.path(), &backend, args.workers).await?,
            start_haproxy(dir.path(), &backend, args.workers).await?,
            Contender {
                name: "banyan",
                addr: banyan_proc.listen.to_string(),
                pids: vec![banyan_proc.pid()],
                _children: vec![],
            },
        ];
        // Warm every contender up once.
        for c in &contenders {
            wrk(&c.addr, sc.path, sc.connections, 2, &lua)?;
        }
        let mut runs: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
        for round in 1..=args.rounds {
            for c in &mut contenders {
                let (_, cpu0) = usage(&c.pids);
                let mut r = wrk(&c.addr, sc.path, sc.connections, args.seconds, &lua)?;
                let (rss, cpu1) = usage(&c.pids);
                r.cpu = cpu1 - cpu0;
                r.rss = rss;
                println!(
                    "{} round {round} {:<8} {:>9.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  p99.9 {:>8.3} ms  errors {}  cpu-s/10k {:.3}  rss {:.1} MiB",
                    sc.name,
                    c.name,
                    r.requests as f64 / r.seconds,
                    r.p50_us / 1000.0,
                    r.p99_us / 1000.0,
                    r.p999_us / 1000.0,
                    r.errors,
                    r.cpu / r.requests.max(1) as f64 * 10_000.0,
                    r.rss as f64 / 1048576.0
                );
                runs.entry(c.name).or_default().push(r);
            }
        }
        // Medians over rounds.
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let mut table: BTreeMap<&str, [f64; 6]> = BTreeMap::new();
        for (name, rs) in &runs {
            let mut rps: Vec<f64> = rs.iter().map(|r| r.requests as f64 / r.seconds).collect();
            let mut p50: Vec<f64> = rs.iter().map(|r| r.p50_us / 1000.0).collect();
            let mut p99: Vec<f64> = rs.iter().map(|r| r.p99_us / 1000.0).collect();
            let mut p999: Vec<f64> = rs.iter().map(|r| r.p999_us / 1000.0).collect();
            let mut cpu: Vec<f64> = rs
                .iter()
                .map(|r| r.cpu / r.requests.max(1) as f64 * 10_000.0)
                .collect();
            let mut rss: Vec<f64> = rs.iter().map(|r| r.rss as f64 / 1048576.0).collect();
            table.insert(
                name,
                [
                    med(&mut rps),
                    med(&mut p50),
                    med(&mut p99),
                    med(&mut p999),
                    med(&mut cpu),
                    med(&mut rss),
                ],
            );
        }
        let mut out = format!(
            "\n{} ({} connections, median of {} rounds of {} s)\n{:<8} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9}  errors\n",
            sc.name,
            sc.connections,
            args.rounds,
            args.seconds,
            "proxy",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "cpu-s/10k",
            "RSS MiB"
        );
        for (name, v) in &table {
            let errors: u64 = runs[name].iter().map(|r| r.errors).sum();
            out.push_str(&format!(
                "{name:<8} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>10.3} {:>9.1}  {errors}\n",
                v[0], v[1], v[2], v[3], v[4], v[5]
            ));
        }
        let b = table["banyan"];
        for other in ["nginx", "haproxy"] {
            let o = table[other];
            out.push_str(&format!(
                "banyan/{other}: req/s {:.3}  p99 {:.3}  cpu/req {:.3}  RSS {:.3}\n",
                b[0] / o[0],
                b[2] / o[2],
                b[4] / o[4],
                b[5] / o[5]
            ));
        }
        print!("{out}");
        summary.push(out);
        drop(contenders);
        drop(banyan_proc);
    }
    println!("\n==== summary ====");
    for s in summary {
        print!("{s}");
    }
    Ok(())
}
