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
