//! The contenders: nginx, HAProxy, bare Pingora and Banyan, each started on its own port in
//! front of the backend with the same edge work, and stopped by its pid.

use super::*;

/// A proxy under test: its address and the processes whose CPU and memory count.
pub(crate) struct Contender {
    pub(crate) name: &'static str,
    pub(crate) addr: String,
    pub(crate) pids: Vec<u32>,
    pub(crate) children: Vec<Child>,
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

pub(crate) fn children_of(pid: u32) -> Vec<u32> {
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

/// What the processes `pids` hold and have spent so far, summed.
pub(crate) fn usage(pids: &[u32]) -> Usage {
    pids.iter()
        .map(|p| usage_of(*p))
        .fold(Usage::default(), |a, b| a + b)
}

pub(crate) async fn wait_port(addr: &str) -> anyhow::Result<()> {
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
pub(crate) const EDGE_NGINX: &str = "proxy_set_header X-Forwarded-For $remote_addr; \
     proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host; \
     proxy_set_header X-Request-Id $request_id; proxy_set_header Via \"1.1 nginx\"; \
     add_header X-Request-Id $request_id always; add_header Via \"1.1 nginx\" always;";

/// [`EDGE_NGINX`] for HAProxy.
pub(crate) const EDGE_HAPROXY: &str = "  unique-id-format %[uuid()]\n  unique-id-header X-Request-Id\n  \
     option forwardfor\n  http-request set-header X-Forwarded-Proto http\n  \
     http-request set-header X-Forwarded-Host %[req.hdr(host)]\n  \
     http-request add-header Via \"1.1 haproxy\"\n  \
     http-response set-header X-Request-Id %[unique-id]\n  \
     http-response add-header Via \"1.1 haproxy\"\n";

pub(crate) async fn start_nginx(
    dir: &Path,
    backend: &str,
    workers: usize,
) -> anyhow::Result<Contender> {
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
pub(crate) fn fd_limit() -> u64 {
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

pub(crate) async fn start_haproxy(
    dir: &Path,
    backend: &str,
    workers: usize,
) -> anyhow::Result<Contender> {
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
pub(crate) async fn start_bare_pingora(backend: &str, workers: usize) -> anyhow::Result<Contender> {
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

/// The table a migration really runs (issue 24): 50 routes, each with its circuit breaker (on
/// by default); half of the 48 filler routes already moved to `catalog` with the monolith as
/// their fallback; the benchmarked route in a rollout held at its 50 % step (a sticky split
/// the rollout drives, both sides the same backend so the work is comparable, with a fallback,
/// its per-side records and latency histograms kept on every request); with `shadow`, that
/// route also mirrors every request to the `candidate` upstream at that address.
pub(crate) fn banyan_table(backend: &str, workers: usize, shadow: Option<&str>) -> String {
    let mut t = format!(
        "[proxy]\nthreads = {workers}\n\n[upstreams.legacy]\naddrs = [\"{backend}\"]\n\n[upstreams.catalog]\naddrs = [\"{backend}\"]\n\n"
    );
    if let Some(candidate) = shadow {
        t.push_str(&format!(
            "[upstreams.candidate]\naddrs = [\"{candidate}\"]\n\n"
        ));
    }
    for i in 0..48 {
        let side = if i % 2 == 0 {
            "upstream = \"catalog\"\nfallback = \"legacy\"\n"
        } else {
            "upstream = \"legacy\"\n"
        };
        t.push_str(&format!(
            "[[route]]\nid = \"r{i}\"\npath = \"/api/area{i}\"\nmethods = [\"GET\", \"HEAD\"]\n{side}\n"
        ));
    }
    // The rollout waits at 50 % for an approval nobody gives, so every round sees the same
    // split whatever its gates would say.
    t.push_str("[[route]]\nid = \"products\"\npath = \"/api/products\"\nmethods = [\"GET\", \"HEAD\"]\nupstream = \"legacy\"\nfallback = \"legacy\"\nrollout = { to = \"catalog\", steps = [50, 100], interval = \"1h\", approve_at = [50], sticky = \"cookie:sid\" }\n");
    if shadow.is_some() {
        t.push_str("shadow = { to = \"candidate\", percent = 100 }\n");
    }
    t.push('\n');
    t.push_str("[[route]]\nid = \"rest\"\npath = \"/\"\nupstream = \"legacy\"\n");
    t
}

/// `table` without the safety loop: every breaker off, no fallback, and the rollout replaced by
/// the plain sticky split it drives. What is left is routing, the split, headers, metrics and
/// the access log, so the difference in the same rounds is what the loop costs.
pub(crate) fn unguarded(table: &str) -> String {
    table
        .replace("fallback = \"legacy\"\n", "")
        .replace(
            "rollout = { to = \"catalog\", steps = [50, 100], interval = \"1h\", approve_at = [50], sticky = \"cookie:sid\" }",
            "split = { to = \"catalog\", percent = 50, sticky = \"cookie:sid\" }",
        )
        .replace(
            "upstream = \"legacy\"\n",
            "upstream = \"legacy\"\nbreaker = { enabled = false }\n",
        )
        .replace(
            "upstream = \"catalog\"\n",
            "upstream = \"catalog\"\nbreaker = { enabled = false }\n",
        )
}

/// nginx, HAProxy, bare Pingora and Banyan in front of `backend`, equal workers.
pub(crate) async fn contenders(
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
