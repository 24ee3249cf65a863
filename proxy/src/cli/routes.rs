//! `banyan routes`: the table a running proxy serves, with a refused reload on top, where an
//! operator who saved a bad file cannot miss it.

use serde_json::Value;

use super::admin::{AdminArgs, block_on};

/// Prints the live table; exit status 1 when the last reload was refused (the file on disk is
/// not what is served), 2 when the admin API cannot be reached.
pub(super) fn run(args: &AdminArgs, json: bool) -> std::process::ExitCode {
    let routes = match args
        .resolve()
        .and_then(|admin| block_on(async move { admin.get_json("/routes").await }))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let refused = routes["reloads"]["last_refused"].is_object();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&routes).unwrap_or_default()
        );
    } else {
        print!("{}", render(&routes));
    }
    if refused {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// The live table as text (see the module docs).
pub(super) fn render(routes: &Value) -> String {
    let mut out = String::new();
    let reloads = &routes["reloads"];
    if let Some(r) = reloads["last_refused"].as_object() {
        out.push_str(&format!(
            "REFUSED at {}: the file on disk is not what is served; the table below is.\n",
            r["at"].as_str().unwrap_or("?")
        ));
        for e in r["errors"].as_array().into_iter().flatten() {
            out.push_str(&format!("  {}\n", e.as_str().unwrap_or("")));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "{}: version {}, loaded {} ({} applied, {} refused since start)\n",
        routes["file"].as_str().unwrap_or("?"),
        routes["version"].as_str().unwrap_or("?"),
        routes["loaded_at"].as_str().unwrap_or("?"),
        reloads["applied"].as_u64().unwrap_or(0),
        reloads["refused"].as_u64().unwrap_or(0),
    ));
    for r in routes["routes"].as_array().into_iter().flatten() {
        out.push_str(&super::table::route_line(r));
        out.push('\n');
    }
    for (name, up) in routes["upstreams"].as_object().into_iter().flatten() {
        let backends: Vec<String> = up["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                let state = if b["in_rotation"].as_bool() == Some(true) {
                    "up"
                } else {
                    "out"
                };
                format!("{} {state}", b["addr"].as_str().unwrap_or("?"))
            })
            .collect();
        out.push_str(&format!("  upstream {name:<15} {}\n", backends.join(", ")));
    }
    out
}
