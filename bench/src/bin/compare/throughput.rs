//! `small-64`, `small-1000`, `1mb-16`: requests/s and latency through each contender.

use super::*;

/// The throughput scenarios: the same path through every contender.
pub(crate) async fn throughput(
    sc: &Scenario,
    backend: &str,
    args: &Args,
    dir: &Path,
    lua: &Path,
) -> anyhow::Result<String> {
    let table = banyan_table(backend, args.workers, None);
    let banyan = Banyan::start(&sibling_binary("banyan")?, &table).await?;
    // The same Banyan with its circuit breakers off, in the same rounds: what they cost.
    let unbroken = Banyan::start(&sibling_binary("banyan")?, &without_breakers(&table)).await?;
    let mut cs = contenders(dir, backend, args, &banyan).await?;
    cs.push(Contender {
        name: "nobreaker",
        addr: unbroken.listen.to_string(),
        pids: vec![unbroken.pid()],
        children: vec![],
    });
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
    out.push_str(&breaker_cost(&runs));
    Ok(out)
}
