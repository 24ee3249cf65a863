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
    let banyan = Banyan::start_with_access_log(&sibling_binary("banyan")?, &table).await?;
    // The same Banyan without its safety loop, in the same rounds: what the loop costs.
    let unguarded =
        Banyan::start_with_access_log(&sibling_binary("banyan")?, &unguarded(&table)).await?;
    let mut cs = contenders(dir, backend, args, &banyan).await?;
    cs.push(Contender {
        name: UNGUARDED,
        addr: unguarded.listen.to_string(),
        pids: vec![unguarded.pid()],
        children: vec![],
    });
    let load = if sc.split {
        Load::SplitPosts
    } else {
        Load::Wrk(lua)
    };
    let runs = measure(sc.name, &cs, sc.path, sc.connections, args, &load)?;
    let mut out = render(
        &format!(
            "{} ({} connections, median of {} rounds of {} s)",
            sc.name, sc.connections, args.rounds, args.seconds
        ),
        &runs,
        AGAINST_OTHERS,
    );
    // The targets name the GET scenarios; a write's figures are for reading.
    if !sc.big && !sc.post {
        out.push_str(&against_others(&runs, sc.name == "small-64"));
    }
    out.push_str(&safety_cost(&runs));
    Ok(out)
}
