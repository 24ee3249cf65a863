//! `reload-1s`: the route table rewritten every second under load, against no reloads.

use super::*;

/// The `banyan_reloads_total{result="..."}` counter from the admin API's metrics.
pub(crate) async fn reloads(banyan: &Banyan, result: &str) -> anyhow::Result<u64> {
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
pub(crate) async fn reload(backend: &str, args: &Args, lua: &Path) -> anyhow::Result<String> {
    let table = banyan_table(backend, args.workers, None);
    let other = table.replace("percent = 50", "percent = 40");
    anyhow::ensure!(other != table, "the reload variant must differ");
    let banyan = Banyan::start_with_access_log(&sibling_binary("banyan")?, &table).await?;
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
        let r = measured_run(&c, path, 64, args.seconds, &Load::Wrk(lua))?;
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
        let r = measured_run(&c, path, 64, args.seconds, &Load::Wrk(lua))?;
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
