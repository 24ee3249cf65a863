//! A route table as text: one line per route, as `banyan check` and `banyan routes` print it
//! (both from the JSON of [`crate::config::describe`]).

use serde_json::Value;

pub(super) fn percent(v: &Value) -> String {
    let p = v.as_f64().unwrap_or(0.0);
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p}")
    }
}

/// One route: id, methods, path, where it goes; with `sides` (from the live table), the share
/// each upstream actually served.
pub(super) fn route_line(r: &Value) -> String {
    let methods = r["methods"].as_array().map_or_else(
        || "*".to_owned(),
        |ms| {
            ms.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        },
    );
    let mut line = format!(
        "  {:<24} {:<21} {:<28} -> {}",
        r["id"].as_str().unwrap_or(""),
        methods,
        r["path"].as_str().unwrap_or(""),
        r["upstream"].as_str().unwrap_or("")
    );
    if let Some(s) = r["split"].as_object() {
        line.push_str(&format!(
            " + {}% -> {} (sticky {})",
            percent(&s["percent"]),
            s["to"].as_str().unwrap_or(""),
            s["sticky"].as_str().unwrap_or("")
        ));
    }
    if let Some(s) = r["shadow"].as_object() {
        line.push_str(&format!(
            " (shadow {}% -> {}",
            percent(&s["percent"]),
            s["to"].as_str().unwrap_or("")
        ));
        if s["writes"].as_bool() == Some(true) {
            line.push_str(", writes too");
        }
        if let Some(p) = s["second_primary"].as_str() {
            line.push_str(&format!(", noise from {p}"));
        }
        line.push(')');
    }
    if let Some(ro) = r["rollout"].as_object() {
        let steps: Vec<String> = ro["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(percent)
            .collect();
        line.push_str(&format!(
            " (rollout -> {} through [{}] %, every {} ms; banyan status shows where it stands)",
            ro["to"].as_str().unwrap_or(""),
            steps.join(", "),
            ro["interval_ms"]
        ));
    }
    if let Some(sides) = r["sides"].as_object() {
        let total: u64 = sides.values().filter_map(|s| s["total"].as_u64()).sum();
        if total > 0 {
            let shares: Vec<String> = sides
                .iter()
                .map(|(up, s)| {
                    let n = s["total"].as_u64().unwrap_or(0);
                    let errors = s["5xx"].as_u64().unwrap_or(0);
                    format!(
                        "{up} {n} ({:.1}%, {errors} 5xx)",
                        n as f64 * 100.0 / total as f64
                    )
                })
                .collect();
            line.push_str(&format!("\n  {:<24} served: {}", "", shares.join(", ")));
        }
    }
    line
}
