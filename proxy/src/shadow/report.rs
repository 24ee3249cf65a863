//! The shadow report as a person reads it (`banyan shadow report`): per route, how many answers
//! were compared and how many differed, what was dropped or failed, the fields that differ most
//! with an example each, and what was classified as noise.

use std::fmt::Write;

use super::results::{Example, RouteStats, Snapshot};

/// Fields listed per route.
pub(crate) const TOP_FIELDS: usize = 5;

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".to_owned()
    } else {
        format!("{:.2}%", part as f64 * 100.0 / whole as f64)
    }
}

/// One differing field of a route, summed over nothing: per endpoint.
struct Field<'a> {
    endpoint: &'a str,
    field: &'a str,
    count: u64,
    compared: u64,
    example: Option<&'a Example>,
}

fn fields(r: &RouteStats, noise: bool) -> Vec<Field<'_>> {
    let mut out: Vec<Field<'_>> = r
        .endpoints
        .iter()
        .flat_map(|(ep, e)| {
            e.fields.iter().filter_map(move |(name, f)| {
                let count = if noise { f.noise } else { f.mismatches };
                (count > 0).then_some(Field {
                    endpoint: ep,
                    field: name,
                    count,
                    compared: e.counts.compared,
                    example: f.example.as_ref(),
                })
            })
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.field.cmp(b.field)));
    out
}

/// The report for `snapshot`, restricted to `route` when given.
pub(crate) fn render(snapshot: &Snapshot, route: Option<&str>) -> String {
    let mut out = String::new();
    let routes: Vec<(&String, &RouteStats)> = snapshot
        .iter()
        .filter(|(id, _)| route.is_none_or(|r| r == id.as_str()))
        .collect();
    if routes.is_empty() {
        return match route {
            Some(r) => format!("no shadow results for route {r:?}\n"),
            None => "no shadow results yet\n".to_owned(),
        };
    }
    let _ = writeln!(
        out,
        "{:<20} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "ROUTE",
        "COMPARED",
        "MISMATCH",
        "MISMATCH%",
        "NOISE-ONLY",
        "DROPPED",
        "TOO-LARGE",
        "CAND-ERR",
        "TIMEOUTS",
        "WRITES-SKIP"
    );
    for (id, r) in &routes {
        let c = r.totals();
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>12}",
            id,
            c.compared,
            c.mismatched,
            percent(c.mismatched, c.compared),
            c.noise_only,
            c.dropped_in_flight,
            c.too_large,
            c.candidate_errors,
            c.candidate_timeouts,
            c.writes_not_mirrored
        );
    }
    for (id, r) in &routes {
        let top = fields(r, false);
        let noise = fields(r, true);
        let unused: Vec<&str> = r
            .rules
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(rule, _)| rule.as_str())
            .collect();
        if top.is_empty() && noise.is_empty() && unused.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{id}:");
        if !unused.is_empty() {
            let _ = writeln!(
                out,
                "  rules that matched no field in {} answers looked at (a typo?):",
                r.rules_checked
            );
            for rule in unused {
                let _ = writeln!(out, "    {rule}");
            }
        }
        if !top.is_empty() {
            let _ = writeln!(out, "  top differing fields:");
        }
        for f in top.iter().take(TOP_FIELDS) {
            let _ = writeln!(
                out,
                "    {:<32} {:<36} {:>7} ({} of compared)",
                f.field,
                f.endpoint,
                f.count,
                percent(f.count, f.compared)
            );
            if let Some(ex) = f.example {
                let moved = ex
                    .candidate_path
                    .as_ref()
                    .map_or_else(String::new, |p| format!(" (at {p})"));
                let _ = writeln!(
                    out,
                    "      e.g. {}  {} ({}): primary {}  candidate {}{moved}",
                    ex.request, ex.path, ex.kind, ex.primary, ex.candidate
                );
            }
        }
        if top.len() > TOP_FIELDS {
            let _ = writeln!(out, "    … and {} more", top.len() - TOP_FIELDS);
        }
        if !noise.is_empty() {
            let _ = writeln!(out, "  noise (not counted as mismatches):");
            for f in noise.iter().take(TOP_FIELDS) {
                let _ = writeln!(out, "    {:<32} {:<36} {:>7}", f.field, f.endpoint, f.count);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::compare::{DiffKind, Difference};
    use super::super::results::Results;
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn names_route_counts_top_field_example_and_noise() {
        let r = Results::new(Arc::new(Metrics::new()));
        let d = |p: &str, t: &str| Difference {
            path: p.into(),
            candidate_path: None,
            template: t.into(),
            kind: DiffKind::Value,
        };
        for _ in 0..3 {
            r.compared("search", "GET /api/search", vec![], true, Some(&[]));
        }
        r.compared(
            "search",
            "GET /api/search",
            vec![d("/hits/0/price", "/hits/*/price"), d("/at", "/at")],
            true,
            Some(&[d("/at", "/at")]),
        );
        r.mismatch(
            "search",
            "GET /api/search",
            vec![(
                "/hits/*/price".into(),
                Example {
                    request: "GET /api/search?q=lamp".into(),
                    path: "/hits/0/price".into(),
                    candidate_path: None,
                    kind: "value differs".into(),
                    primary: "1299".into(),
                    candidate: "1300".into(),
                },
            )],
            serde_json::from_value(serde_json::json!({
                "at": "", "endpoint": "GET /api/search",
                "request": {"method": "GET", "target": "/api/search?q=lamp", "headers": []},
                "primary": {"status": 200, "headers": [], "body": null},
                "candidate": {"status": 200, "headers": [], "body": null},
                "differences": []
            }))
            .unwrap(),
        );
        let text = render(&r.snapshot(), None);
        assert!(text.contains("search"), "{text}");
        assert!(text.contains("25.00%"), "1 of 4 mismatched: {text}");
        assert!(text.contains("/hits/*/price"), "{text}");
        assert!(
            text.contains("e.g. GET /api/search?q=lamp  /hits/0/price (value differs): primary 1299  candidate 1300"),
            "{text}"
        );
        let noise_part = text.split("noise (not counted").nth(1).unwrap();
        assert!(noise_part.contains("/at"), "{text}");
        assert_eq!(
            render(&r.snapshot(), Some("other")),
            "no shadow results for route \"other\"\n"
        );
    }
}
