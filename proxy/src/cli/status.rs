//! `banyan status`: how far the migration is, route by route, with each rollout's gates and
//! their figures; `--wait ROUTE` blocks until that route's rollout has migrated or stopped,
//! for a CI pipeline to wait on.
//!
//! Exit status: 0 (with `--wait`: migrated), 1 (with `--wait`: aborted or rolled back), 2 when
//! the admin API cannot be reached or the route has no rollout, 3 when `--timeout` ran out.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::admin::{AdminArgs, block_on};
use super::table::percent;

pub(super) fn run(
    args: &AdminArgs,
    json: bool,
    wait: Option<&str>,
    timeout: Option<Duration>,
) -> ExitCode {
    let admin = match args.resolve() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let Some(route) = wait else {
        return match block_on(admin.get_json("/status")) {
            Ok(status) => {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&status).unwrap_or_default()
                    );
                } else {
                    print!("{}", render(&status));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    };
    let started = Instant::now();
    let mut last_phase = String::new();
    let outcome = block_on(async {
        loop {
            let status = admin.get_json("/status").await?;
            let entry = status["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["id"] == route)
                .cloned();
            let Some(entry) = entry else {
                anyhow::bail!("route {route:?} is not in the live table");
            };
            let Some(rollout) = entry.get("rollout").filter(|r| r.is_object()) else {
                anyhow::bail!("route {route:?} has no rollout");
            };
            let phase = rollout["phase"].as_str().unwrap_or("?").to_owned();
            if phase != last_phase {
                eprintln!("{route}: {phase}");
                last_phase.clone_from(&phase);
            }
            match rollout["state"]["phase"].as_str() {
                Some("migrated") => return Ok((0u8, entry)),
                Some("aborted" | "rolled_back") => return Ok((1, entry)),
                _ => {}
            }
            if timeout.is_some_and(|t| started.elapsed() >= t) {
                return Ok((3, entry));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    match outcome {
        Ok((code, entry)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&entry).unwrap_or_default()
                );
            } else {
                print!("{}", route_block(&entry));
            }
            if code == 3 {
                eprintln!("timed out waiting for {route} (still {last_phase})");
            }
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The whole status as text.
pub(super) fn render(status: &Value) -> String {
    let mut out = String::new();
    let ex = &status["extracted"];
    out.push_str(&format!(
        "table {} (loaded {}): extracted services served {:.1} % of {} requests; {} of {} routes migrated\n",
        status["version"].as_str().unwrap_or("?"),
        status["loaded_at"].as_str().unwrap_or("?"),
        ex["percent"].as_f64().unwrap_or(0.0),
        ex["of"].as_u64().unwrap_or(0),
        status["migrated"]["routes"].as_u64().unwrap_or(0),
        status["migrated"]["of"].as_u64().unwrap_or(0),
    ));
    if let Some(r) = status["reloads"]["last_refused"].as_object() {
        out.push_str(&format!(
            "REFUSED at {}: the file on disk is not what is served\n",
            r["at"].as_str().unwrap_or("?")
        ));
        for e in r["errors"].as_array().into_iter().flatten() {
            out.push_str(&format!("  {}\n", e.as_str().unwrap_or("")));
        }
    }
    for r in status["routes"].as_array().into_iter().flatten() {
        out.push_str(&route_block(r));
    }
    out
}

/// One route: its line, then its rollout's gates.
fn route_block(r: &Value) -> String {
    let mut out = format!(
        "{:<24} {:<34} {:<30} {:>9} req\n",
        r["id"].as_str().unwrap_or("?"),
        r["path"].as_str().unwrap_or("?"),
        r["phase"].as_str().unwrap_or("?"),
        r["requests"].as_u64().unwrap_or(0),
    );
    let Some(ro) = r.get("rollout").filter(|v| v.is_object()) else {
        return out;
    };
    let steps: Vec<String> = ro["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(percent)
        .collect();
    out.push_str(&format!(
        "    rollout to {}: steps [{}] %, now {} %",
        ro["to"].as_str().unwrap_or("?"),
        steps.join(", "),
        percent(&ro["percent"])
    ));
    match ro["next_check_in_ms"].as_u64() {
        Some(ms) => {
            let w = &ro["window"];
            out.push_str(&format!(
                ", next check in {:.1} s; this step so far: new side {} requests ({} failed), \
                 old side {} ({} failed) in {:.0} s\n",
                ms as f64 / 1000.0,
                w["new_requests"],
                w["new_errors"],
                w["old_requests"],
                w["old_errors"],
                w["seconds"].as_f64().unwrap_or(0.0)
            ));
        }
        None => match ro["step_since"].as_str() {
            Some(since) => out.push_str(&format!(" (since {since})\n")),
            // Not taken up by the controller yet (see `/status`).
            None => out.push_str(" (starting)\n"),
        },
    }
    if let Some(cause) = ro["state"].get("cause") {
        out.push_str(&format!(
            "    aborted by {} {}: {}\n",
            cause["gate"].as_str().unwrap_or("?"),
            cause["verdict"].as_str().unwrap_or("?"),
            cause["reason"].as_str().unwrap_or("")
        ));
    }
    if ro["gates"].as_array().is_some_and(|g| !g.is_empty()) {
        out.push_str("    last check:\n");
    }
    for g in ro["gates"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "      {:<11} {:<13} {}\n",
            g["gate"].as_str().unwrap_or("?"),
            g["verdict"].as_str().unwrap_or("?"),
            g["reason"].as_str().unwrap_or("")
        ));
    }
    out
}
