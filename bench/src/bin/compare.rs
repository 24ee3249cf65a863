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
//! - `banyan`: a realistic table of 50 routes, the benchmarked one with a sticky split (both
//!   sides the same backend, so the work is comparable), metrics on (they always are).
//!
//! Scenarios (`--only` picks some): `small-64`, `small-1000` (keep-alive, 70-byte answers),
//! `1mb-16` (1 MB answers), `idle-10k` (RSS with 10,000 idle keep-alive connections),
//! `reload-1s` (the route table rewritten every second under load, against no reloads),
//! `shadow-100` (every request shadowed, against no shadowing) and `reference` (the monolith
//! with 10,000 products behind each proxy, on catalog endpoints).
//!
//! Load scenarios run the contenders in interleaved rounds so the machine's drift hits all
//! alike, and print requests/s, p50/p99/p99.9, proxy CPU seconds per 10,000 requests, proxy
//! RSS, the ratios Banyan/nginx, Banyan/HAProxy and Banyan/bare Pingora, and a verdict for each
//! of the issue's targets.

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
    children: Vec<Child>,
}

impl Drop for Contender {
    /// nginx and HAProxy would outlive the benchmark (and keep its stdout open) otherwise.
    fn drop(&mut self) {
        if !self.children.is_empty() {
            // nginx's workers outlive a killed master: stop them too.
            let mut pids = self.pids.clone();
            for child in &self.children {
                pids.extend(children_of(child.id()));
            }
            for pid in &pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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

/// The edge work Banyan does on every request, asked of nginx too, so both do the same job:
/// `X-Forwarded-For`/`-Proto`/`-Host`, a request id and `Via` to the backend, the request id and
/// `Via` back to the client.
const EDGE_NGINX: &str = "proxy_set_header X-Forwarded-For $remote_addr; \
     proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host; \
     proxy_set_header X-Request-Id $request_id; proxy_set_header Via \"1.1 nginx\"; \
     add_header X-Request-Id $request_id always; add_header Via \"1.1 nginx\" always;";

/// [`EDGE_NGINX`] for HAProxy.
const EDGE_HAPROXY: &str = "  unique-id-format %[uuid()]\n  unique-id-header X-Request-Id\n  \
     option forwardfor\n  http-request set-header X-Forwarded-Proto http\n  \
     http-request set-header X-Forwarded-Host %[req.hdr(host)]\n  \
     http-request add-header Via \"1.1 haproxy\"\n  \
     http-response set-header X-Request-Id %[unique-id]\n  \
     http-response add-header Via \"1.1 haproxy\"\n";

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
             location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering on;\n\
               {EDGE_NGINX} }}\n  }}\n}}\n",
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
        .stderr(Stdio::inherit())
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
        children: vec![child],
    })
}

/// The soft limit on open files of this process (children inherit it), from /proc.
fn fd_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1024)
}

async fn start_haproxy(dir: &Path, backend: &str, workers: usize) -> anyhow::Result<Contender> {
    let port = free_port();
    // HAProxy refuses to start when maxconn needs more descriptors than it may open.
    let maxconn = (fd_limit().saturating_sub(200) / 2).max(1000);
    let conf = dir.join("haproxy.cfg");
    std::fs::write(
        &conf,
        format!(
            "global\n  nbthread {workers}\n  maxconn {maxconn}\n\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n\n\
             frontend f\n  bind 127.0.0.1:{port}\n{EDGE_HAPROXY}  default_backend b\n\n\
             backend b\n  http-reuse always\n  server s1 {backend}\n"
        ),
    )?;
    let child = Command::new("haproxy")
        .arg("-f")
        .arg(&conf)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting haproxy")?;
    let addr = format!("127.0.0.1:{port}");
    wait_port(&addr).await?;
    let pid = child.id();
    Ok(Contender {
        name: "haproxy",
        addr,
        pids: vec![pid],
        children: vec![child],
    })
}

/// `bare-pingora`: Pingora with nothing on top, on Banyan's Pingora settings (one
/// work-stealing runtime, `workers` threads). The gap between it and Banyan is what Banyan's
/// features cost; the gap between it and nginx is what the framework costs.
async fn start_bare_pingora(backend: &str, workers: usize) -> anyhow::Result<Contender> {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(sibling_binary("bare-pingora")?)
        .args(["--listen", &addr, "--backend", backend, "--steal"])
        .args(["--threads", &workers.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting bare-pingora")?;
    wait_port(&addr).await?;
    Ok(Contender {
        name: "pingora",
        addr,
        pids: vec![child.id()],
        children: vec![child],
    })
}

/// 50 routes, the benchmarked path with a sticky split (both sides the same backend); with
/// `shadow`, that route also mirrors every request to the `candidate` upstream at that address.
fn banyan_table(backend: &str, workers: usize, shadow: Option<&str>) -> String {
    let mut t = format!(
        "[proxy]\nthreads = {workers}\n\n[upstreams.legacy]\naddrs = [\"{backend}\"]\n\n[upstreams.catalog]\naddrs = [\"{backend}\"]\n\n"
    );
    if let Some(candidate) = shadow {
        t.push_str(&format!(
            "[upstreams.candidate]\naddrs = [\"{candidate}\"]\n\n"
        ));
    }
    for i in 0..48 {
        t.push_str(&format!(
            "[[route]]\nid = \"r{i}\"\npath = \"/api/area{i}\"\nmethods = [\"GET\", \"HEAD\"]\nupstream = \"legacy\"\n\n"
        ));
    }
    t.push_str("[[route]]\nid = \"products\"\npath = \"/api/products\"\nupstream = \"legacy\"\nsplit = { to = \"catalog\", percent = 50, sticky = \"cookie:sid\" }\n");
    if shadow.is_some() {
        t.push_str("shadow = { to = \"candidate\", percent = 100 }\n");
    }
    t.push('\n');
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

/// The reference stack's requests: mostly single products (ids 1..=10,000), some list pages.
const REFERENCE_LUA: &str = r#"
math.randomseed(42)
request = function()
  if math.random(10) <= 8 then
    return wrk.format("GET", "/api/products/" .. math.random(10000))
  end
  return wrk.format("GET", "/api/products?page=" .. math.random(50) .. "&per_page=20")
end
"#;

struct Scenario {
    name: &'static str,
    path: &'static str,
    connections: usize,
    big: bool,
}

fn measured_run(
    c: &Contender,
    path: &str,
    connections: usize,
    seconds: u64,
    lua: &Path,
) -> anyhow::Result<Run> {
    let (_, cpu0) = usage(&c.pids);
    let mut r = wrk(&c.addr, path, connections, seconds, lua)?;
    let (rss, cpu1) = usage(&c.pids);
    r.cpu = cpu1 - cpu0;
    r.rss = rss;
    Ok(r)
}

fn print_run(scenario: &str, round: usize, name: &str, r: &Run) {
    println!(
        "{scenario} round {round} {name:<9} {:>9.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  p99.9 {:>8.3} ms  errors {}  cpu-s/10k {:.3}  rss {:.1} MiB",
        r.requests as f64 / r.seconds,
        r.p50_us / 1000.0,
        r.p99_us / 1000.0,
        r.p999_us / 1000.0,
        r.errors,
        r.cpu / r.requests.max(1) as f64 * 10_000.0,
        r.rss as f64 / 1048576.0
    );
}

type Runs = BTreeMap<&'static str, Vec<Run>>;

/// Every contender once per round, rounds interleaved, after one warm-up run each. Each round
/// starts one contender further along, so no contender always runs first or last in a round
/// (right after another's load, or as the machine drifts within a round).
fn measure(
    scenario: &str,
    contenders: &[Contender],
    path: &str,
    connections: usize,
    args: &Args,
    lua: &Path,
) -> anyhow::Result<Runs> {
    for c in contenders {
        wrk(&c.addr, path, connections, 2, lua)?;
    }
    let mut runs = Runs::new();
    for round in 1..=args.rounds {
        for i in 0..contenders.len() {
            let c = &contenders[(i + round - 1) % contenders.len()];
            let r = measured_run(c, path, connections, args.seconds, lua)?;
            print_run(scenario, round, c.name, &r);
            runs.entry(c.name).or_default().push(r);
        }
    }
    Ok(runs)
}

/// Medians over rounds: req/s, p50, p99, p99.9 (ms), CPU s per 10k requests, RSS MiB.
fn medians(runs: &Runs) -> BTreeMap<&'static str, [f64; 6]> {
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    runs.iter()
        .map(|(name, rs)| {
            let col = |f: &dyn Fn(&Run) -> f64| med(rs.iter().map(f).collect());
            (
                *name,
                [
                    col(&|r| r.requests as f64 / r.seconds),
                    col(&|r| r.p50_us / 1000.0),
                    col(&|r| r.p99_us / 1000.0),
                    col(&|r| r.p999_us / 1000.0),
                    col(&|r| r.cpu / r.requests.max(1) as f64 * 10_000.0),
                    col(&|r| r.rss as f64 / 1048576.0),
                ],
            )
        })
        .collect()
}

/// The scenario's table, then `a/b` ratios for each pair.
fn render(title: &str, runs: &Runs, pairs: &[(&str, &str)]) -> String {
    let table = medians(runs);
    let mut out = format!(
        "\n{title}\n{:<9} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9}  errors\n",
        "proxy", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "cpu-s/10k", "RSS MiB"
    );
    for (name, v) in &table {
        let errors: u64 = runs[name].iter().map(|r| r.errors).sum();
        out.push_str(&format!(
            "{name:<9} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>10.3} {:>9.1}  {errors}\n",
            v[0], v[1], v[2], v[3], v[4], v[5]
        ));
    }
    for (a, b) in pairs {
        let (x, y) = (table[a], table[b]);
        out.push_str(&format!(
            "{a}/{b}: req/s {:.3}  p99 {:.3}  cpu/req {:.3}  RSS {:.3}\n",
            x[0] / y[0],
            x[2] / y[2],
            x[4] / y[4],
            x[5] / y[5]
        ));
    }
    out
}

/// A verdict line for one target.
fn target(what: &str, value: f64, bound: &str, met: bool) -> String {
    let verdict = if met { "met" } else { "NOT met" };
    format!("target {what}: {value:.3} ({bound}): {verdict}\n")
}

/// nginx, HAProxy, bare Pingora and Banyan in front of `backend`, equal workers.
async fn contenders(
    dir: &Path,
    backend: &str,
    args: &Args,
    banyan: &Banyan,
) -> anyhow::Result<Vec<Contender>> {
    Ok(vec![
        Contender {
            name: "direct",
            addr: backend.to_owned(),
            pids: vec![],
            children: vec![],
        },
        start_nginx(dir, backend, args.workers).await?,
        start_haproxy(dir, backend, args.workers).await?,
        start_bare_pingora(backend, args.workers).await?,
        Contender {
            name: "banyan",
            addr: banyan.listen.to_string(),
            pids: vec![banyan.pid()],
            children: vec![],
        },
    ])
}

/// The verdicts on the two targets against nginx: requests/s at least nginx's, p99 at most.
fn against_nginx(runs: &Runs) -> String {
    let t = medians(runs);
    let (b, n) = (t["banyan"], t["nginx"]);
    target("banyan/nginx req/s", b[0] / n[0], ">= 1", b[0] >= n[0])
        + &target("banyan/nginx p99", b[2] / n[2], "<= 1", b[2] <= n[2])
}

const AGAINST_OTHERS: &[(&str, &str)] = &[
    ("banyan", "nginx"),
    ("banyan", "haproxy"),
    ("banyan", "pingora"),
];

/// The throughput scenarios: the same path through every contender.
async fn throughput(
    sc: &Scenario,
    backend: &str,
    args: &Args,
    dir: &Path,
    lua: &Path,
) -> anyhow::Result<String> {
    let banyan = Banyan::start(
        &sibling_binary("banyan")?,
        &banyan_table(backend, args.workers, None),
    )
    .await?;
    let cs = contenders(dir, backend, args, &banyan).await?;
    let runs = measure(sc.name, &cs, sc.path, sc.connections, args, lua)?;
    let mut out = render(
        &format!(
            "{} ({} connections, median of {} rounds of {} s)",
            sc.name, sc.connections, args.rounds, args.seconds
        ),
        &runs,
        AGAINST_OTHERS,
    );
    out.push_str(&against_nginx(&runs));
    Ok(out)
}

/// Shadowing every request of the benchmarked route to a candidate, against the same table
/// without shadowing. The candidate is an idle-priority process, standing in for another
/// machine: what is measured is the proxy's own cost of mirroring and comparing.
async fn shadow(backend: &str, args: &Args, lua: &Path) -> anyhow::Result<String> {
    let workers = args.workers.to_string();
    let candidate = BackendProcess::start(&["--threads", &workers, "--idle"])?;
    let binary = sibling_binary("banyan")?;
    let off = Banyan::start(&binary, &banyan_table(backend, args.workers, None)).await?;
    let on = Banyan::start(
        &binary,
        &banyan_table(backend, args.workers, Some(&candidate.addr.to_string())),
    )
    .await?;
    let cs = [
        Contender {
            name: "banyan",
            addr: off.listen.to_string(),
            pids: vec![off.pid()],
            children: vec![],
        },
        Contender {
            name: "shadow100",
            addr: on.listen.to_string(),
            pids: vec![on.pid()],
            children: vec![],
        },
    ];
    let path = "/api/products/42";
    let runs = measure("shadow-100", &cs, path, 64, args, lua)?;
    let mut out = render(
        &format!(
            "shadow-100 (64 connections, shadow at 100 % vs off, median of {} rounds of {} s)",
            args.rounds, args.seconds
        ),
        &runs,
        &[("shadow100", "banyan")],
    );
    let snap = on.admin_json("/shadow").await?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    if let Some(endpoints) = snap["routes"]["products"]["endpoints"].as_object() {
        for e in endpoints.values() {
            if let Some(c) = e["counts"].as_object() {
                for (k, v) in c {
                    *counts.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
                }
            }
        }
    }
    let sampled: u64 = [
        "compared",
        "dropped_in_flight",
        "candidate_errors",
        "candidate_timeouts",
    ]
    .iter()
    .map(|k| counts.get(*k).copied().unwrap_or(0))
    .sum();
    out.push_str(&format!(
        "shadow side, warm-up included ({:.1} % of sampled requests compared, the rest dropped at the in-flight bound or failed): {}\n",
        counts.get("compared").copied().unwrap_or(0) as f64 * 100.0 / sampled.max(1) as f64,
        counts
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let t = medians(&runs);
    let ratio = t["shadow100"][0] / t["banyan"][0];
    out.push_str(&target(
        "shadow 100 % throughput vs off",
        ratio,
        ">= 0.8",
        ratio >= 0.8,
    ));
    Ok(out)
}

/// The `banyan_reloads_total{result="..."}` counter from the admin API's metrics.
async fn reloads(banyan: &Banyan, result: &str) -> anyhow::Result<u64> {
    let text = banyan.admin_text("/metrics").await?;
    let prefix = format!("banyan_reloads_total{{result=\"{result}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

/// Load with the route table rewritten every second (the split's percentage toggling), against
/// the same load without reloads, interleaved.
async fn reload(backend: &str, args: &Args, lua: &Path) -> anyhow::Result<String> {
    let table = banyan_table(backend, args.workers, None);
    let other = table.replace("percent = 50", "percent = 40");
    anyhow::ensure!(other != table, "the reload variant must differ");
    let banyan = Banyan::start(&sibling_binary("banyan")?, &table).await?;
    let c = Contender {
        name: "banyan",
        addr: banyan.listen.to_string(),
        pids: vec![banyan.pid()],
        children: vec![],
    };
    let path = "/api/products/42";
    wrk(&c.addr, path, 64, 2, lua)?;
    let (applied0, refused0) = (
        reloads(&banyan, "applied").await?,
        reloads(&banyan, "refused").await?,
    );
    let mut runs = Runs::new();
    let mut written = 0u64;
    for round in 1..=args.rounds {
        let r = measured_run(&c, path, 64, args.seconds, lua)?;
        print_run("reload-1s", round, "steady", &r);
        runs.entry("steady").or_default().push(r);

        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (stop, config) = (stop.clone(), banyan.config.clone());
            let tables = [other.clone(), table.clone()];
            std::thread::spawn(move || {
                let mut n = 0u64;
                let tick = Duration::from_secs(1);
                let mut next = Instant::now() + tick;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if Instant::now() >= next {
                        if std::fs::write(&config, &tables[(n % 2) as usize]).is_ok() {
                            n += 1;
                        }
                        next += tick;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                n
            })
        };
        let r = measured_run(&c, path, 64, args.seconds, lua)?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        written += writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))?;
        print_run("reload-1s", round, "reloading", &r);
        runs.entry("reloading").or_default().push(r);
    }
    // Let the last write be picked up before counting.
    let deadline = Instant::now() + Duration::from_secs(5);
    while reloads(&banyan, "applied").await? - applied0 < written && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let applied = reloads(&banyan, "applied").await? - applied0;
    let refused = reloads(&banyan, "refused").await? - refused0;
    let mut out = render(
        &format!(
            "reload-1s (64 connections, route table rewritten every second vs not, median of {} rounds of {} s)",
            args.rounds, args.seconds
        ),
        &runs,
        &[("reloading", "steady")],
    );
    out.push_str(&format!(
        "route table written {written} times, reloads applied {applied}, refused {refused}\n"
    ));
    let errors: u64 = runs["reloading"].iter().map(|r| r.errors).sum();
    out.push_str(&target(
        "errors during reloads",
        errors as f64,
        "== 0",
        errors == 0,
    ));
    let t = medians(&runs);
    let ratio = t["reloading"][2] / t["steady"][2];
    out.push_str(&target("p99 reloading/steady", ratio, "<= 2", ratio <= 2.0));
    Ok(out)
}

/// Opens `n` connections to `addr`, each sends one request and reads the whole answer, and
/// keeps them open. Returns the open connections and how many failed.
async fn open_idle(addr: &str, n: usize) -> (Vec<tokio::net::TcpStream>, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn one(addr: String) -> anyhow::Result<tokio::net::TcpStream> {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(b"GET /api/products/42 HTTP/1.1\r\nHost: bench\r\nCookie: sid=idle\r\n\r\n")
            .await?;
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        loop {
            let k = s.read(&mut chunk).await?;
            anyhow::ensure!(k > 0, "closed before the answer was complete");
            buf.extend_from_slice(&chunk[..k]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                anyhow::ensure!(head.starts_with("http/1.1 200"), "answered {head}");
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .context("no content-length")?;
                if buf.len() >= end + 4 + length {
                    return Ok(s);
                }
            }
        }
    }
    let mut set = tokio::task::JoinSet::new();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(200));
    for _ in 0..n {
        let (addr, gate) = (addr.to_owned(), gate.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            tokio::time::timeout(Duration::from_secs(10), one(addr)).await
        });
    }
    let (mut open, mut failed) = (Vec::with_capacity(n), 0);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(Ok(s))) => open.push(s),
            _ => failed += 1,
        }
    }
    (open, failed)
}

/// 10,000 idle keep-alive connections (each has made one request) held open against each
/// proxy in turn: RSS before, RSS with them open, the difference per connection.
async fn idle(backend: &str, args: &Args, dir: &Path, lua: &Path) -> anyhow::Result<String> {
    const N: usize = 10_000;
    let banyan = Banyan::start(
        &sibling_binary("banyan")?,
        &banyan_table(backend, args.workers, None),
    )
    .await?;
    let cs = contenders(dir, backend, args, &banyan).await?;
    // This process holds the client side of every connection.
    let own = fd_limit() as usize;
    let mut out = format!(
        "\nidle-10k ({N} idle keep-alive connections held open, one proxy at a time)\n{:<9} {:>8} {:>8} {:>12} {:>12} {:>13}\n",
        "proxy", "opened", "failed", "RSS before", "RSS open", "KiB per conn"
    );
    let mut banyan_rss = 0.0;
    for c in cs.iter().filter(|c| c.name != "direct") {
        // Steady state first: pools, buffers and caches warmed by real load.
        wrk(&c.addr, "/api/products/42", 64, 2, lua)?;
        let n = if own < N + 500 {
            own.saturating_sub(500)
        } else {
            N
        };
        let (before, _) = usage(&c.pids);
        let (open, failed) = open_idle(&c.addr, n).await;
        let (with, _) = usage(&c.pids);
        let per = (with.saturating_sub(before)) as f64 / 1024.0 / open.len().max(1) as f64;
        out.push_str(&format!(
            "{:<9} {:>8} {:>8} {:>8.1} MiB {:>8.1} MiB {:>13.1}\n",
            c.name,
            open.len(),
            failed,
            before as f64 / 1048576.0,
            with as f64 / 1048576.0,
            per
        ));
        if c.name == "banyan" {
            banyan_rss = with as f64 / 1048576.0;
            if open.len() < N {
                out.push_str(&format!(
                    "(banyan held only {} connections: this process may open {own} descriptors)\n",
                    open.len()
                ));
            }
        }
        drop(open);
    }
    out.push_str(
        "(HAProxy reserves two descriptors per connection: with a descriptor limit under 20,000 its maxconn stays under 10,000 and the rest wait unaccepted)\n",
    );
    out.push_str(&target(
        "banyan RSS with 10,000 idle connections, MB",
        banyan_rss * 1.048576,
        "<= 100",
        banyan_rss * 1.048576 <= 100.0,
    ));
    Ok(out)
}

/// The monolith (embedded storage, 10,000 products) behind each proxy, on catalog endpoints.
async fn reference(args: &Args, dir: &Path, lua_dir: &Path) -> anyhow::Result<String> {
    let monolith = Monolith::start(&dir.join("monolith"))?;
    let backend = monolith.addr.clone();
    let lua = lua_dir.join("reference.lua");
    std::fs::write(&lua, format!("{REFERENCE_LUA}{WRK_LUA}"))?;
    let banyan = Banyan::start(
        &sibling_binary("banyan")?,
        &banyan_table(&backend, args.workers, None),
    )
    .await?;
    let cs = contenders(dir, &backend, args, &banyan).await?;
    let runs = measure("reference", &cs, "/", 64, args, &lua)?;
    let mut out = render(
        &format!(
            "reference (monolith, embedded storage, 10,000 products; GET /api/products/{{1..10000}} 80 %, list pages 20 %; 64 connections, median of {} rounds of {} s)",
            args.rounds, args.seconds
        ),
        &runs,
        AGAINST_OTHERS,
    );
    out.push_str(&against_nginx(&runs));
    Ok(out)
}

/// `legacy-monolith demo` on embedded storage in its own directory: seeds 10,000 products.
struct Monolith {
    child: Child,
    addr: String,
}

impl Monolith {
    fn start(data: &Path) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let mut child = Command::new(sibling_binary("legacy-monolith")?)
            .arg("--data-dir")
            .arg(data)
            .args(["demo", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting legacy-monolith")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                bail!("legacy-monolith exited before listening");
            }
            if let Some(addr) = line.trim().strip_prefix("listening on http://") {
                return Ok(Self {
                    addr: addr.to_owned(),
                    child,
                });
            }
        }
    }
}

impl Drop for Monolith {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let small_addr = small.addr.to_string();
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);

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
        report(throughput(sc, &backend, &args, dir.path(), &lua).await?);
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
