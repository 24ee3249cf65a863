//! Measuring: wrk runs, the interleaved rounds, medians, and the tables and ratios printed.

use super::*;

/// What wrk measured in one run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Run {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) cpu: f64,
    /// The part of `cpu` spent in the kernel on the contender's behalf.
    pub(crate) sys: f64,
    pub(crate) rss: u64,
}

pub(crate) const WRK_LUA: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %.1f %.1f %.1f\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#;

/// A write's body: a 512-byte JSON cart update, the size of the catalog API's writes.
pub(crate) const POST_LUA: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"sku":"KET-0042","quantity":2,"note":"' .. string.rep("x", 471) .. '"}'
"#;

/// How a scenario's load is generated.
pub(crate) enum Load<'a> {
    /// wrk with this script (which prints the `RESULT` line).
    Wrk(&'a Path),
    /// [`split_posts`]: the write scenario's requests, head and body in two writes.
    SplitPosts,
}

impl Load<'_> {
    pub(crate) fn run(
        &self,
        addr: &str,
        path: &str,
        connections: usize,
        seconds: u64,
    ) -> anyhow::Result<Run> {
        match self {
            Load::Wrk(lua) => wrk(addr, path, connections, seconds, lua),
            Load::SplitPosts => split_posts(addr, path, connections, seconds),
        }
    }
}

pub(crate) fn wrk(
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

pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) path: &'static str,
    pub(crate) connections: usize,
    pub(crate) big: bool,
    /// Requests are `POST`s with the body of [`POST_LUA`].
    pub(crate) post: bool,
    /// The `POST`s' heads and bodies are written separately ([`split_posts`]).
    pub(crate) split: bool,
}

pub(crate) fn measured_run(
    c: &Contender,
    path: &str,
    connections: usize,
    seconds: u64,
    load: &Load<'_>,
) -> anyhow::Result<Run> {
    let before = usage(&c.pids);
    let mut r = load.run(&c.addr, path, connections, seconds)?;
    let after = usage(&c.pids);
    r.cpu = after.cpu - before.cpu;
    r.sys = after.system - before.system;
    r.rss = after.rss;
    Ok(r)
}

pub(crate) fn print_run(scenario: &str, round: usize, name: &str, r: &Run) {
    println!(
        "{scenario} round {round} {name:<9} {:>9.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  p99.9 {:>8.3} ms  errors {}  cpu-s/10k {:.3}  sys {:.3}  rss {:.1} MiB",
        r.requests as f64 / r.seconds,
        r.p50_us / 1000.0,
        r.p99_us / 1000.0,
        r.p999_us / 1000.0,
        r.errors,
        r.cpu / r.requests.max(1) as f64 * 10_000.0,
        r.sys / r.requests.max(1) as f64 * 10_000.0,
        r.rss as f64 / 1048576.0
    );
}

pub(crate) type Runs = BTreeMap<&'static str, Vec<Run>>;

/// Every contender once per round, rounds interleaved, after one warm-up run each. Each round
/// starts one contender further along, so no contender always runs first or last in a round
/// (right after another's load, or as the machine drifts within a round).
pub(crate) fn measure(
    scenario: &str,
    contenders: &[Contender],
    path: &str,
    connections: usize,
    args: &Args,
    load: &Load<'_>,
) -> anyhow::Result<Runs> {
    for c in contenders {
        load.run(&c.addr, path, connections, 2)?;
    }
    let mut runs = Runs::new();
    for round in 1..=args.rounds {
        for i in 0..contenders.len() {
            let c = &contenders[(i + round - 1) % contenders.len()];
            let r = measured_run(c, path, connections, args.seconds, load)?;
            print_run(scenario, round, c.name, &r);
            runs.entry(c.name).or_default().push(r);
        }
    }
    Ok(runs)
}

/// Medians over rounds: req/s, p50, p99, p99.9 (ms), CPU s per 10k requests, RSS MiB, and the
/// system part of the CPU s per 10k requests.
pub(crate) fn medians(runs: &Runs) -> BTreeMap<&'static str, [f64; 7]> {
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
                    col(&|r| r.sys / r.requests.max(1) as f64 * 10_000.0),
                ],
            )
        })
        .collect()
}

/// The scenario's table, then `a/b` ratios for each pair.
pub(crate) fn render(title: &str, runs: &Runs, pairs: &[(&str, &str)]) -> String {
    let table = medians(runs);
    let mut out = format!(
        "\n{title}\n{:<9} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9}  errors\n",
        "proxy", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "cpu-s/10k", "of it sys", "RSS MiB"
    );
    for (name, v) in &table {
        let errors: u64 = runs[name].iter().map(|r| r.errors).sum();
        out.push_str(&format!(
            "{name:<9} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>10.3} {:>9.3} {:>9.1}  {errors}\n",
            v[0], v[1], v[2], v[3], v[4], v[6], v[5]
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
pub(crate) fn target(what: &str, value: f64, bound: &str, met: bool) -> String {
    let verdict = if met { "met" } else { "NOT met" };
    format!("target {what}: {value:.3} ({bound}): {verdict}\n")
}

/// Issue 24's verdicts against nginx and HAProxy: the median req/s at least 1.25x each one's,
/// the median p99 at most 0.8x, and no single round below 1.0x (rounds are interleaved, so
/// round i of every contender ran under the same conditions); with `cpu`, CPU per request at
/// most 0.75x nginx's.
pub(crate) fn against_others(runs: &Runs, cpu: bool) -> String {
    let t = medians(runs);
    let b = t["banyan"];
    let mut out = String::new();
    for other in ["nginx", "haproxy"] {
        let o = t[other];
        let rps = |r: &Run| r.requests as f64 / r.seconds;
        let worst = runs["banyan"]
            .iter()
            .zip(&runs[other])
            .map(|(x, y)| rps(x) / rps(y))
            .fold(f64::INFINITY, f64::min);
        out.push_str(&target(
            &format!("banyan/{other} req/s (median)"),
            b[0] / o[0],
            ">= 1.25",
            b[0] >= 1.25 * o[0],
        ));
        out.push_str(&target(
            &format!("banyan/{other} req/s (worst round)"),
            worst,
            ">= 1.0",
            worst >= 1.0,
        ));
        out.push_str(&target(
            &format!("banyan/{other} p99 (median)"),
            b[2] / o[2],
            "<= 0.8",
            b[2] <= 0.8 * o[2],
        ));
    }
    if cpu {
        let n = t["nginx"];
        out.push_str(&target(
            "banyan/nginx CPU per request",
            b[4] / n[4],
            "<= 0.75",
            b[4] <= 0.75 * n[4],
        ));
        // What user-space work can reach: the kernel's part of a request (system calls, the
        // loopback network stack, waking the peer) is paid whatever the proxy's own code does.
        out.push_str(&format!(
            "kernel floor: banyan's system CPU per request is {:.3}x nginx's whole CPU per \
             request (nginx's own system part: {:.3}x); the 0.75 target leaves {:.3}x for user \
             space, banyan's user part is {:.3}x\n",
            b[6] / n[4],
            n[6] / n[4],
            0.75 - b[6] / n[4],
            (b[4] - b[6]) / n[4],
        ));
    }
    out
}

/// What the safety loop costs: Banyan as a migration runs it (breakers, fallback, a rollout)
/// against the same table with breakers off, no fallback and a plain split, in the same
/// rounds.
pub(crate) fn safety_cost(runs: &Runs) -> String {
    let t = medians(runs);
    let (on, off) = (t["banyan"], t[UNGUARDED]);
    target(
        "safety loop on/off req/s",
        on[0] / off[0],
        ">= 0.97",
        on[0] >= 0.97 * off[0],
    )
}

/// The contender name of Banyan without its safety loop.
pub(crate) const UNGUARDED: &str = "unguarded";

pub(crate) const AGAINST_OTHERS: &[(&str, &str)] = &[
    ("banyan", "nginx"),
    ("banyan", "haproxy"),
    ("banyan", "pingora"),
];

/// The write scenario's requests (the `POST`s of [`POST_LUA`]) as Java's `HttpURLConnection` and
/// `HttpClient` send them: the head in one write and the body in a second, on a socket with
/// `TCP_NODELAY`, so the body can arrive after the proxy has read the head. wrk cannot split a
/// request, so this is a small closed-loop client of its own: `connections` keep-alive
/// connections on two threads (as `wrk -t2`), one request in flight on each, for `seconds`.
/// It reads answers framed by `Content-Length` (every contender sends the backend's).
pub(crate) fn split_posts(
    addr: &str,
    path: &str,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<Run> {
    let addr: std::net::SocketAddr = addr.parse().context("the contender's address")?;
    let body = format!(
        "{{\"sku\":\"KET-0042\",\"quantity\":2,\"note\":\"{}\"}}",
        "x".repeat(471)
    );
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Cookie: sid=bench-session\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // A runtime of its own on threads of its own: the caller may be on a runtime's thread.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let started = Instant::now();
            let until = started + Duration::from_secs(seconds);
            let (head, body) = (head.into_bytes(), body.into_bytes());
            let tasks: Vec<_> = (0..connections)
                .map(|_| {
                    let (head, body) = (head.clone(), body.clone());
                    tokio::spawn(split_connection(addr, head, body, until))
                })
                .collect();
            let mut latency = hdrhistogram::Histogram::<u64>::new(3)?;
            let (mut ok, mut errors) = (0, 0);
            for t in tasks {
                let (h, o, e) = t.await?;
                latency.add(&h)?;
                ok += o;
                errors += e;
            }
            Ok(Run {
                requests: ok,
                errors,
                seconds: started.elapsed().as_secs_f64(),
                p50_us: latency.value_at_quantile(0.5) as f64,
                p99_us: latency.value_at_quantile(0.99) as f64,
                p999_us: latency.value_at_quantile(0.999) as f64,
                ..Run::default()
            })
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the split-write client panicked"))?
}

/// One connection of [`split_posts`]: latencies (µs) of its 2xx answers, their count, and the
/// errors (non-2xx answers and broken connections; a broken connection is opened again).
async fn split_connection(
    addr: std::net::SocketAddr,
    head: Vec<u8>,
    body: Vec<u8>,
    until: Instant,
) -> (hdrhistogram::Histogram<u64>, u64, u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut latency = hdrhistogram::Histogram::<u64>::new(3).expect("histogram bounds");
    let (mut ok, mut errors) = (0u64, 0u64);
    'connect: while Instant::now() < until {
        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
            errors += 1;
            continue;
        };
        let _ = s.set_nodelay(true);
        let mut buf = Vec::with_capacity(4096);
        while Instant::now() < until {
            let sent = Instant::now();
            if s.write_all(&head).await.is_err() || s.write_all(&body).await.is_err() {
                errors += 1;
                continue 'connect;
            }
            // The answer: its head, then `Content-Length` bytes.
            let (end, length, status) = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let text = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                    let length = text.lines().find_map(|l| {
                        l.strip_prefix("content-length:")
                            .and_then(|v| v.trim().parse::<usize>().ok())
                    });
                    break (end + 4, length, status);
                }
                match s.read_buf(&mut buf).await {
                    Ok(n) if n > 0 => {}
                    _ => {
                        errors += 1;
                        continue 'connect;
                    }
                }
            };
            let Some(length) = length else {
                errors += 1;
                continue 'connect;
            };
            while buf.len() < end + length {
                match s.read_buf(&mut buf).await {
                    Ok(n) if n > 0 => {}
                    _ => {
                        errors += 1;
                        continue 'connect;
                    }
                }
            }
            buf.drain(..end + length);
            if (200..300).contains(&status) {
                ok += 1;
                let _ = latency.record(sent.elapsed().as_micros() as u64);
            } else {
                errors += 1;
            }
        }
    }
    (latency, ok, errors)
}
