//! `banyan rollout approve|pause|resume ROUTE`, `banyan rollback ROUTE` and `banyan history`:
//! steering a rollout, and what happened to the table and the rollouts, with time and reason.
//!
//! Exit status: 0 done, 1 refused (the route has no rollout, or the action does not apply to
//! where it stands: the message says why), 2 when the admin API cannot be reached.

use std::process::ExitCode;

use serde_json::Value;

use super::admin::{AdminArgs, block_on};

/// Sends `action` for `route`.
pub(super) fn act(args: &AdminArgs, route: &str, action: &str) -> ExitCode {
    let admin = match args.resolve() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let path = format!("/rollouts/{}/{action}", percent_encode(route));
    match block_on(admin.post_json(&path)) {
        Ok(answer) => {
            println!(
                "{route}: {action} done, now {}",
                answer["phase"].as_str().unwrap_or("?")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!("error: {text}");
            // Answered (404, 409): refused; not answered at all: unreachable.
            if text.contains("cannot reach") {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// A route id in a URL path (ids are letters, digits, `-` and `_`, but the CLI takes any
/// text: anything else is escaped, and the proxy answers that no such route rolls out).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub(super) fn history(args: &AdminArgs, route: Option<&str>, json: bool) -> ExitCode {
    let admin = match args.resolve() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let path = match route {
        Some(r) => format!("/history?route={}", percent_encode(r)),
        None => "/history".to_owned(),
    };
    match block_on(admin.get_json(&path)) {
        Ok(h) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&h).unwrap_or_default());
            } else {
                print!("{}", render_history(&h));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// One line per entry: time, route, event, and its figures.
fn render_history(h: &Value) -> String {
    let mut out = String::new();
    for e in h["entries"].as_array().into_iter().flatten() {
        let mut fields: Vec<String> = Vec::new();
        for (k, v) in e.as_object().into_iter().flatten() {
            if matches!(
                k.as_str(),
                "time" | "at_ms" | "route" | "event" | "cause" | "gates"
            ) {
                continue;
            }
            fields.push(format!("{k}={}", v));
        }
        for g in e["gates"].as_array().into_iter().flatten() {
            fields.push(format!(
                "| {} {}: {}",
                g["gate"].as_str().unwrap_or("?"),
                g["verdict"].as_str().unwrap_or("?"),
                g["reason"].as_str().unwrap_or("")
            ));
        }
        if let Some(c) = e.get("cause") {
            fields.push(format!(
                "{} {}: {}",
                c["gate"].as_str().unwrap_or("?"),
                c["verdict"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("")
            ));
        }
        out.push_str(&format!(
            "{}  {:<20} {:<18} {}\n",
            e["time"].as_str().unwrap_or("?"),
            e["route"].as_str().unwrap_or("?"),
            e["event"].as_str().unwrap_or("?"),
            fields.join(" ")
        ));
    }
    if let Some(n) = h["unreadable_lines"].as_u64().filter(|n| *n > 0) {
        out.push_str(&format!(
            "({n} unreadable lines of the history file skipped)\n"
        ));
    }
    out
}
