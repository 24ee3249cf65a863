//! `banyan shadow report`: shadow comparison results, from a running proxy's admin API or
//! straight from the Redis that proxies share them through.

use crate::shadow::report;
use crate::shadow::results::Snapshot;
use crate::shadow::share::Shared;

use super::admin::{AdminArgs, block_on};

pub(super) fn report(
    admin: &AdminArgs,
    redis: Option<&str>,
    prefix: &str,
    route: Option<&str>,
    json: bool,
) -> anyhow::Result<String> {
    let admin = match redis {
        Some(_) => None,
        None => Some(admin.resolve()?),
    };
    let mut snap: Snapshot = block_on(async {
        match (redis, admin) {
            (Some(url), _) => {
                let shared = Shared::connect(url, prefix).await?;
                shared
                    .read()
                    .await
                    .map_err(|e| anyhow::anyhow!("reading shadow results from Redis: {e}"))
            }
            (None, Some(admin)) => {
                let body = admin.get_json("/shadow").await?;
                Ok(serde_json::from_value(body["routes"].clone())?)
            }
            (None, None) => unreachable!("an admin API is resolved when there is no Redis"),
        }
    })?;
    if let Some(r) = route {
        snap.retain(|id, _| id == r);
    }
    if json {
        for r in snap.values_mut() {
            r.samples.clear();
        }
        return Ok(format!("{}\n", serde_json::to_string_pretty(&snap)?));
    }
    Ok(report::render(&snap, route))
}
