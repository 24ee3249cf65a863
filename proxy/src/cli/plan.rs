//! `banyan plan routes.toml`: what saving this file would change on the running proxy, before
//! it is saved — which routes move which share of their traffic to which upstream, and roughly
//! what share of all current traffic that is; which rollouts start over, which freeze.
//!
//! The file is validated exactly as a reload would; a bad one prints its file:line:column
//! errors and the plan stops there (exit 1). "Current traffic" is what each route served
//! since the proxy started (the admin API's counters), so a route that has served nothing
//! moves nothing of it. Exit status: 0, 1 for a file that would be refused, 2 when the admin
//! API cannot be reached.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use super::admin::{AdminArgs, block_on};
use crate::config::{Config, RouteSpec};

/// Where a route's traffic goes: upstream -> share (0..=1).
type Sides = BTreeMap<String, f64>;

fn sides(upstream: &str, to: Option<&str>, percent: f64) -> Sides {
    let mut out = Sides::new();
    let p = (percent / 100.0).clamp(0.0, 1.0);
    *out.entry(upstream.to_owned()).or_default() += 1.0 - p;
    if let Some(to) = to {
        *out.entry(to.to_owned()).or_default() += p;
    }
    out.retain(|_, v| *v > 0.0);
    out
}

/// The share of a route's traffic that changes upstream between `a` and `b`.
fn moved(a: &Sides, b: &Sides) -> f64 {
    b.iter()
        .map(|(u, share)| (share - a.get(u).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

fn describe(s: &Sides) -> String {
    s.iter()
        .map(|(u, v)| format!("{u} {:.0} %", v * 100.0))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Where route `r` of the planned file would send its traffic, and what happens to its
/// rollout, given what the live route (`live`) does now.
fn planned(r: &RouteSpec, live: Option<&Value>) -> (Sides, Option<String>) {
    let Some(ro) = &r.rollout else {
        let frozen_by_removal =
            live.is_some_and(|l| l["rollout"]["fingerprint"].is_string()) && r.split.is_none();
        if frozen_by_removal {
            let l = live.expect("checked");
            let now = sides(
                l["upstream"].as_str().unwrap_or(&r.upstream),
                l["to"].as_str(),
                l["percent"].as_f64().unwrap_or(0.0),
            );
            return (
                if l["to"].as_str() == Some(r.upstream.as_str()) {
                    sides(&r.upstream, None, 0.0)
                } else {
                    now
                },
                Some("rollout removed: the route freezes at its current share".into()),
            );
        }
        let (to, p) = r.split.as_ref().map_or((None, 0.0), |s| {
            (Some(s.to.as_str()), f64::from(s.basis_points) / 100.0)
        });
        return (sides(&r.upstream, to, p), None);
    };
    let fingerprint = r.split.as_ref().map(|s| ro.fingerprint(&s.sticky));
    let same = live.is_some_and(|l| l["rollout"]["fingerprint"].as_str() == fingerprint.as_deref());
    if same {
        let l = live.expect("checked");
        let p = l["percent"].as_f64().unwrap_or(0.0);
        return (sides(&r.upstream, Some(&ro.to), p), None);
    }
    let first = ro.steps.first().copied().unwrap_or(0.0);
    let note = if live.is_some_and(|l| l["rollout"].is_object()) {
        format!("rollout restarts at its first step ({first} %)")
    } else {
        format!("rollout starts at {first} %")
    };
    (sides(&r.upstream, Some(&ro.to), first), Some(note))
}

pub(super) fn run(args: &AdminArgs, file: &Path) -> ExitCode {
    let config: Config = match crate::config::load_file(file) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("the proxy would refuse this file and keep serving the current table");
            return ExitCode::FAILURE;
        }
    };
    let mut args = args.clone();
    if args.admin.is_none() && args.config.is_none() {
        args.config = Some(file.to_owned());
    }
    let status = match args
        .resolve()
        .and_then(|admin| block_on(async move { admin.get_json("/status").await }))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", render(&config, &status));
    ExitCode::SUCCESS
}

/// The plan as text.
pub(super) fn render(config: &Config, status: &Value) -> String {
    let live: BTreeMap<&str, &Value> = status["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["id"].as_str()?, r)))
        .collect();
    let total: u64 = live
        .values()
        .map(|r| r["requests"].as_u64().unwrap_or(0))
        .sum();
    let share_of = |id: &str| {
        let n = live
            .get(id)
            .and_then(|r| r["requests"].as_u64())
            .unwrap_or(0);
        if total == 0 {
            0.0
        } else {
            n as f64 / total as f64
        }
    };
    let mut out = String::new();
    let (mut moved_total, mut changes, mut restarts) = (0.0, 0usize, 0usize);
    for r in &config.routes {
        let current = live.get(r.id.as_str()).copied();
        let (after, note) = planned(r, current);
        let Some(current) = current else {
            changes += 1;
            out.push_str(&format!(
                "+ {:<24} new route {} -> {}{}\n",
                r.id,
                r.path,
                describe(&after),
                note.map(|n| format!("; {n}")).unwrap_or_default()
            ));
            continue;
        };
        let before = sides(
            current["upstream"].as_str().unwrap_or("?"),
            current["to"].as_str(),
            current["percent"].as_f64().unwrap_or(0.0),
        );
        let m = moved(&before, &after);
        if note
            .as_deref()
            .is_some_and(|n| n.starts_with("rollout restarts"))
        {
            restarts += 1;
        }
        if m < 1e-9 && note.is_none() {
            continue;
        }
        changes += 1;
        let of_all = m * share_of(&r.id);
        moved_total += of_all;
        out.push_str(&format!(
            "~ {:<24} {} -> {}: moves {:.0} % of the route, about {:.1} % of current traffic{}\n",
            r.id,
            describe(&before),
            describe(&after),
            m * 100.0,
            of_all * 100.0,
            note.map(|n| format!("; {n}")).unwrap_or_default()
        ));
    }
    for (id, r) in &live {
        if !config.routes.iter().any(|c| c.id == *id) {
            changes += 1;
            out.push_str(&format!(
                "- {id:<24} removed: its requests ({:.1} % of current traffic) go to whichever route matches them then\n",
                share_of(id) * 100.0
            ));
            let _ = r;
        }
    }
    if changes == 0 {
        out.push_str("no change: saving this file moves no traffic\n");
    } else {
        out.push_str(&format!(
            "{changes} route(s) change; about {:.1} % of current traffic changes upstream; {restarts} rollout(s) restart\n",
            moved_total * 100.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_raised_from_10_to_50_moves_40_percent_of_its_route() {
        let before = sides("legacy", Some("catalog"), 10.0);
        let after = sides("legacy", Some("catalog"), 50.0);
        assert!((moved(&before, &after) - 0.4).abs() < 1e-9);
        assert!((moved(&after, &before) - 0.4).abs() < 1e-9);
        assert_eq!(moved(&before, &before), 0.0);
        // A migrated route sent back: all of it.
        assert!(
            (moved(&sides("catalog", None, 0.0), &sides("legacy", None, 0.0)) - 1.0).abs() < 1e-9
        );
    }
}
