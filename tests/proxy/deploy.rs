//! The files for teams with Prometheus and Grafana (`deploy/prometheus/alerts.yml`,
//! `deploy/grafana/banyan.json`): they parse, have the shape their tools load, and every metric
//! they name is one a running proxy exposes. Every expression is parsed by a PromQL parser (the
//! `promql-parser` crate), the rules' shape is checked here, and where promtool is at hand
//! (Debian's `prometheus` package; CI unpacks it) `promtool check rules` and `promtool test
//! rules` run the alerts' own unit tests.

use std::collections::BTreeSet;
use std::path::Path;

use banyan_tests::proxy::{spawn_proxy, table};
use banyan_tests::raw_origin::{RawOrigin, Reply, Seen};
use banyan_tests::recorder::{Behaviour, Recorder};
use serde_json::Value;

fn repo_file(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The `banyan_*` metric families an expression names (a histogram's series by its family).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("banyan_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &expr[start..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(family.to_owned());
        i = end;
    }
    out
}

fn duration_ok(s: &str) -> bool {
    let (n, unit) = s.split_at(s.len() - 1);
    n.parse::<u32>().is_ok() && ["s", "m", "h"].contains(&unit)
}

/// The expressions of the alert rules, after checking each rule's shape.
fn alert_expressions() -> Vec<String> {
    // The parser refuses what promtool would (so the checks below can fail).
    assert!(promql_parser::parser::parse("sum(rate(banyan_requests_total[5m])").is_err());
    assert!(promql_parser::parser::parse("rate(banyan_requests_total[5x])").is_err());
    let rules: Value = serde_yaml_ng::from_str(&repo_file("deploy/prometheus/alerts.yml"))
        .expect("alerts.yml is YAML");
    let groups = rules["groups"].as_array().expect("groups");
    assert!(!groups.is_empty());
    let mut exprs = Vec::new();
    let mut names = BTreeSet::new();
    for g in groups {
        assert!(g["name"].is_string(), "{g}");
        for r in g["rules"].as_array().expect("rules") {
            let alert = r["alert"].as_str().expect("alert");
            assert!(names.insert(alert.to_owned()), "{alert} twice");
            assert!(alert.starts_with("Banyan"), "{alert}");
            let expr = r["expr"].as_str().expect("expr").trim();
            assert!(!expr.is_empty(), "{alert}");
            if let Err(e) = promql_parser::parser::parse(expr) {
                panic!("{alert}: not PromQL: {e}\n{expr}");
            }
            if let Some(f) = r.get("for") {
                assert!(duration_ok(f.as_str().unwrap()), "{alert}: for {f}");
            }
            let severity = r["labels"]["severity"].as_str().expect("severity");
            assert!(["warning", "critical"].contains(&severity), "{alert}");
            assert!(r["annotations"]["summary"].is_string(), "{alert}");
            assert!(r["annotations"]["description"].is_string(), "{alert}");
            exprs.push(expr.to_owned());
        }
    }
    for wanted in [
        "BanyanBreakerOpen",
        "BanyanFallbackRate",
        "BanyanShadowMismatchRate",
        "BanyanReloadRefused",
        "BanyanSyncLag",
    ] {
        assert!(names.contains(wanted), "no {wanted} alert");
    }
    exprs
}

/// The expressions of the dashboard's panels, after checking its shape.
fn dashboard_expressions() -> Vec<String> {
    let d: Value = serde_json::from_str(&repo_file("deploy/grafana/banyan.json"))
        .expect("banyan.json is JSON");
    assert!(d["title"].is_string() && d["uid"].is_string());
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().expect("panels") {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel ids repeat");
        assert!(p["gridPos"]["w"].as_u64().unwrap() <= 24);
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().unwrap();
            // Every $variable used is defined.
            for (i, _) in expr.match_indices('$') {
                let name: String = expr[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(vars.contains(&name.as_str()), "${name} is not a variable");
            }
            // Grafana puts its variables in before Prometheus sees the query.
            let substituted = expr.replace("$legacy", "legacy").replace("$route", ".*");
            if let Err(e) = promql_parser::parser::parse(&substituted) {
                panic!("panel {}: not PromQL: {e}\n{expr}", p["title"]);
            }
            exprs.push(expr.to_owned());
        }
    }
    assert!(exprs.len() >= 10);
    exprs
}

/// An origin that answers its health checks with a sync lag, as Banyan's services do.
async fn service_with_a_sync() -> RawOrigin {
    RawOrigin::start(|seen: &Seen| {
        let body = if seen.target() == "/health" {
            r#"{"status":"ok","sync":{"lag":{"products from the monolith":{"lag_ms":120,"caught_up":true,"failing":false}}}}"#.to_owned()
        } else {
            r#"{"from":"service"}"#.to_owned()
        };
        Reply::raw(&format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_and_the_grafana_dashboard_name_only_metrics_the_proxy_exposes() {
    let mut used = BTreeSet::new();
    for e in alert_expressions().iter().chain(&dashboard_expressions()) {
        used.extend(metric_names(e));
    }
    assert!(used.len() >= 8, "{used:?}");

    // A proxy that has done everything the files watch: served, shadowed with differences,
    // fallen back, retried, health-checked a service that reports its sync, refused a reload.
    let legacy = Recorder::start("legacy", Behaviour::Answer).await;
    let candidate = Recorder::start("candidate", Behaviour::Answer).await;
    let service = service_with_a_sync().await;
    let closed = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (dead, dead2) = (closed(), closed());
    let routes = format!(
        "[upstreams.service.health]\npath = \"/health\"\ninterval = \"100ms\"\n\n\
         [upstreams.dead]\naddrs = [\"{dead}\"]\n\n\
         [upstreams.flaky]\naddrs = [\"{dead2}\", \"{legacy}\"]\n\n\
         [[route]]\nid = \"shadowed\"\npath = \"/shadowed\"\nupstream = \"legacy\"\n\
         shadow = {{ to = \"candidate\", percent = 100 }}\n\n\
         [[route]]\nid = \"falls-back\"\npath = \"/falls-back\"\nupstream = \"dead\"\nfallback = \"legacy\"\n\n\
         [[route]]\nid = \"retried\"\npath = \"/retried\"\nupstream = \"flaky\"\n\n\
         [[route]]\nid = \"moved\"\npath = \"/moved\"\nupstream = \"service\"\n",
        legacy = legacy.addr,
    );
    let config = table(
        &[
            ("legacy", vec![legacy.addr]),
            ("candidate", vec![candidate.addr]),
            ("service", vec![service.addr]),
        ],
        &routes,
    );
    let proxy = spawn_proxy(&config).await;
    for path in ["/retried/1", "/shadowed/1", "/falls-back/1", "/moved/1"] {
        for _ in 0..3 {
            let (status, _) = proxy.get(path).await;
            assert_eq!(status, 200, "{path}");
        }
    }
    std::fs::write(&proxy.config, format!("{config}\nnot toml")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let missing = loop {
        let text = proxy.admin_text("/metrics").await;
        let exposed: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let missing: Vec<&String> = used
            .iter()
            .filter(|n| !exposed.contains(n.as_str()))
            .collect();
        if missing.is_empty() {
            break missing;
        }
        if std::time::Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        missing.is_empty(),
        "named in deploy/ but not exposed: {missing:?}"
    );
}

/// Where promtool is: `BANYAN_PROMTOOL`, else `promtool` on the PATH.
fn promtool() -> String {
    std::env::var("BANYAN_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned())
}

/// `promtool check rules` accepts the alerts, and `promtool test rules` runs their unit tests
/// (`deploy/prometheus/alerts.test.yml`: each alert fires on the series it is for, after its
/// `for`, and not before). Ignored by default: promtool comes with Debian's `prometheus`
/// package; CI unpacks it (without installing the server) and runs this in its
/// `--include-ignored` pass.
#[test]
#[ignore = "needs promtool (Debian's prometheus package; CI unpacks it into target/)"]
fn promtool_checks_the_alerts_and_runs_their_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = std::process::Command::new(promtool())
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): set BANYAN_PROMTOOL or put promtool on the PATH",
                    promtool()
                )
            });
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
