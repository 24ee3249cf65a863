//! `shadow-100`: every request shadowed, against no shadowing.

use super::*;

/// Shadowing every request of the benchmarked route to a candidate, against the same table
/// without shadowing. The candidate is an idle-priority process, standing in for another
/// machine: what is measured is the proxy's own cost of mirroring and comparing.
pub(crate) async fn shadow(backend: &str, args: &Args, lua: &Path) -> anyhow::Result<String> {
    let workers = args.workers.to_string();
    let candidate = BackendProcess::start(&["--threads", &workers, "--idle"])?;
    let binary = sibling_binary("banyan")?;
    let off =
        Banyan::start_with_access_log(&binary, &banyan_table(backend, args.workers, None)).await?;
    let on = Banyan::start_with_access_log(
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
    let runs = measure("shadow-100", &cs, path, 64, args, &Load::Wrk(lua))?;
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
