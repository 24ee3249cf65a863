//! `idle-10k`: RSS with 10,000 idle keep-alive connections.

use super::*;

/// Opens `n` connections to `addr`, each sends one request and reads the whole answer, and
/// keeps them open. Returns the open connections and how many failed.
pub(crate) async fn open_idle(addr: &str, n: usize) -> (Vec<tokio::net::TcpStream>, usize) {
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
pub(crate) async fn idle(
    backend: &str,
    args: &Args,
    dir: &Path,
    lua: &Path,
) -> anyhow::Result<String> {
    const N: usize = 10_000;
    let banyan = Banyan::start_with_access_log(
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
    let mut banyan_per = f64::INFINITY;
    for c in cs.iter().filter(|c| c.name != "direct") {
        // Steady state first: pools, buffers and caches warmed by real load.
        wrk(&c.addr, "/api/products/42", 64, 2, lua)?;
        let n = if own < N + 500 {
            own.saturating_sub(500)
        } else {
            N
        };
        let before = usage(&c.pids).rss;
        let (open, failed) = open_idle(&c.addr, n).await;
        let with = usage(&c.pids).rss;
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
            banyan_per = per;
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
        "banyan KiB per idle keep-alive connection",
        banyan_per,
        "<= 2",
        banyan_per <= 2.0,
    ));
    Ok(out)
}
