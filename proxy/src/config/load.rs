//! From text to a validated [`Config`], or to every problem in the file at once, each naming
//! `file:line:column` and what is wrong. This file is the whole flow (read, parse the TOML,
//! validate each section); [`super::error`] locates problems, [`super::units`] reads durations,
//! sizes and addresses, [`super::validate`] checks each section.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::file::FileConfig;
use super::model::*;

use super::error::Checker;
pub(crate) use super::error::{ConfigError, ConfigErrors};
pub(crate) use super::units::parse_size;
use super::validate::{check_ties, route, token_file, upstream};

/// Reads and validates `path`.
pub(crate) fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &name),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: name,
            line: 0,
            column: 0,
            message: format!("cannot read the file: {e}"),
        }])),
    }
}

/// Parses and validates a route table; `file` names it in errors.
pub(crate) fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let mut c = Checker {
        text,
        file,
        errors: Vec::new(),
    };
    let raw: FileConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            // The toml crate's message repeats the location over several lines; keep its gist.
            let message = e.message().trim().to_owned();
            c.at(span, message);
            return Err(ConfigErrors(c.errors));
        }
    };

    let defaults = ProxySettings::default();
    let proxy = match &raw.proxy {
        None => defaults,
        Some(p) => {
            let p = p.get_ref();
            let listen = p
                .listen
                .as_ref()
                .and_then(|a| c.address(a))
                .unwrap_or(defaults.listen);
            let admin = p
                .admin
                .as_ref()
                .and_then(|a| c.address(a))
                .unwrap_or(defaults.admin);
            let threads = c.count(&p.threads, defaults.threads, 256, "threads");
            let reload_settle = c.duration(
                &p.reload_settle,
                defaults.reload_settle,
                (Duration::ZERO, Duration::from_secs(5)),
                "reload_settle",
            );
            let head = HeadLimits {
                max_bytes: match &p.max_request_head {
                    Some(v) => match parse_size(v.get_ref()) {
                        Some(n) if (1024..=1024 * 1024).contains(&n) => n,
                        _ => {
                            c.at(v.span(), "max_request_head must be a size between 1KiB and 1MiB, such as 32KiB");
                            defaults.head.max_bytes
                        }
                    },
                    None => defaults.head.max_bytes,
                },
                max_headers: c.count(
                    &p.max_request_headers,
                    defaults.head.max_headers,
                    1000,
                    "max_request_headers",
                ),
                timeout: c.duration(
                    &p.request_head_timeout,
                    defaults.head.timeout,
                    (Duration::from_millis(100), Duration::from_secs(300)),
                    "request_head_timeout",
                ),
            };
            let client_write_timeout = c.duration(
                &p.client_write_timeout,
                defaults.client_write_timeout,
                (Duration::from_millis(100), Duration::from_secs(300)),
                "client_write_timeout",
            );
            let admin_token_file = p
                .admin_token_file
                .as_ref()
                .and_then(|f| token_file(&mut c, f));
            let mut admin_hosts = Vec::new();
            for h in p.admin_hosts.iter().flatten() {
                let name = h.get_ref().to_ascii_lowercase();
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    c.at(
                        h.span(),
                        format!(
                            "admin_hosts: {:?} is not a host name (no port, no scheme)",
                            h.get_ref()
                        ),
                    );
                } else {
                    admin_hosts.push(name);
                }
            }
            ProxySettings {
                listen,
                admin,
                debug_headers: p.debug_headers.unwrap_or(false),
                fast_path: p.fast_path.unwrap_or(defaults.fast_path),
                threads,
                reload_settle,
                admin_token_file,
                admin_hosts,
                head,
                client_write_timeout,
                state_dir: match &p.state_dir {
                    Some(d) if d.get_ref().trim().is_empty() => {
                        c.at(d.span(), "state_dir must name a directory");
                        defaults.state_dir
                    }
                    Some(d) => std::path::PathBuf::from(d.get_ref()),
                    None => defaults.state_dir,
                },
            }
        }
    };

    let mut upstreams = BTreeMap::new();
    for (name, up) in &raw.upstreams {
        if let Some(spec) = upstream(&mut c, name, up) {
            upstreams.insert(name.get_ref().clone(), spec);
        }
    }

    let mut routes = Vec::new();
    let mut ids = HashSet::new();
    for r in &raw.routes {
        if !ids.insert(r.get_ref().id.get_ref().clone()) {
            let id = &r.get_ref().id;
            c.at(id.span(), format!("duplicate route id {:?}", id.get_ref()));
        }
        if let Some(spec) = route(&mut c, r.get_ref(), &raw) {
            routes.push((r.span(), spec));
        }
    }
    if raw.routes.is_empty() {
        c.at(0..0, "the table has no [[route]]");
    }
    check_ties(&mut c, &routes);
    super::rollout::check_after(&mut c, &routes, &raw.routes);

    if c.errors.is_empty() {
        Ok(Config {
            proxy,
            upstreams,
            routes: routes.into_iter().map(|(_, r)| r).collect(),
        })
    } else {
        Err(ConfigErrors(c.errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::parse_duration;

    /// `proxy/reference.toml` gives every key its default: parsed, it must equal the model's
    /// `Default`s, so neither can change without the other.
    #[test]
    fn the_reference_documents_the_models_defaults() {
        let c = parse(include_str!("../../reference.toml"), "reference.toml").unwrap();
        assert_eq!(c.proxy, ProxySettings::default());
        let legacy = &c.upstreams["legacy"];
        let d = UpstreamSpec::default();
        assert_eq!(
            (
                legacy.connect_timeout,
                legacy.read_timeout,
                legacy.write_timeout,
                legacy.idle_timeout
            ),
            (
                d.connect_timeout,
                d.read_timeout,
                d.write_timeout,
                d.idle_timeout
            )
        );
        assert_eq!(legacy.health.as_ref(), Some(&HealthSpec::default()));
        assert_eq!(legacy.outlier, OutlierSpec::default());
        assert_eq!(c.routes[0].breaker, BreakerSpec::default());
        let rolling = c.routes.iter().find(|r| r.rollout.is_some()).unwrap();
        let ro = rolling.rollout.as_ref().unwrap();
        assert_eq!(
            (
                ro.steps.as_slice(),
                ro.interval,
                &ro.gates,
                ro.approve_at.as_slice(),
                ro.failures
            ),
            (
                &ROLLOUT_STEPS[..],
                ROLLOUT_INTERVAL,
                &crate::rollout::traffic::Gates::default(),
                &[][..],
                ROLLOUT_FAILURES
            )
        );
        assert!(!c.routes[0].fallback_writes);
        assert_eq!(c.routes[0].timeout, ROUTE_TIMEOUT);
        let shadow = c.routes[0].shadow.as_ref().unwrap();
        let d = ShadowSpec::default();
        assert_eq!(
            (
                shadow.basis_points,
                shadow.writes,
                shadow.timeout,
                shadow.max_in_flight
            ),
            (d.basis_points, d.writes, d.timeout, d.max_in_flight)
        );
        assert_eq!(
            (
                shadow.max_request_body,
                shadow.max_response_body,
                &shadow.headers
            ),
            (d.max_request_body, d.max_response_body, &d.headers)
        );
    }

    const GOOD: &str = r#"
[proxy]
listen = "127.0.0.1:8080"

[upstreams.legacy]
addrs = ["127.0.0.1:3000"]
health = { path = "/health", interval = "2s" }

[upstreams.catalog]
addrs = ["127.0.0.1:4001", "127.0.0.1:4011"]

[[route]]
id = "products-read"
path = "/api/products"
methods = ["GET", "HEAD"]
upstream = "catalog"

[[route]]
id = "products-write"
path = "/api/products"
methods = ["POST"]
upstream = "legacy"
split = { to = "catalog", percent = 12.5, sticky = "cookie:sid" }

[[route]]
id = "rest"
path = "/"
upstream = "legacy"
"#;

    fn errors(text: &str) -> Vec<String> {
        parse(text, "routes.toml")
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn good_file() {
        let c = parse(GOOD, "routes.toml").unwrap();
        assert_eq!(c.routes.len(), 3);
        assert_eq!(c.upstreams["catalog"].addrs.len(), 2);
        let split = c.routes[1].split.as_ref().unwrap();
        assert_eq!(split.basis_points, 1250);
        assert_eq!(split.sticky, StickyKey::Cookie("sid".into()));
        assert_eq!(
            c.upstreams["legacy"].health.as_ref().unwrap().interval,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn every_error_is_located() {
        let bad = GOOD
            .replace("upstream = \"catalog\"\n", "upstream = \"catalgo\"\n")
            .replace("12.5", "150");
        let e = errors(&bad);
        assert!(
            e.iter()
                .any(|m| m.starts_with("routes.toml:16:12: unknown upstream \"catalgo\"")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("percent must be between 0 and 100")),
            "{e:?}"
        );
    }

    /// A read route with a rollout, and a write route that follows it.
    const ROLLING: &str = r#"
[upstreams.legacy]
addrs = ["127.0.0.1:3000"]

[upstreams.catalog]
addrs = ["127.0.0.1:4001"]

[[route]]
id = "read"
path = "/api/products"
methods = ["GET"]
upstream = "legacy"
shadow = { to = "catalog", percent = 100 }
rollout = { to = "catalog", steps = [0, 5, 100], interval = "2s", sticky = "header:x-user", min_requests = 50, approve_at = [5] }

[[route]]
id = "write"
path = "/api/products"
methods = ["POST"]
upstream = "legacy"
rollout = { to = "catalog", steps = [0, 100], after = "read" }

[[route]]
id = "rest"
path = "/"
upstream = "legacy"
"#;

    #[test]
    fn a_rollout_drives_its_routes_split() {
        let c = parse(ROLLING, "routes.toml").unwrap();
        let read = &c.routes[0];
        let ro = read.rollout.as_ref().unwrap();
        assert_eq!(
            (
                ro.steps.as_slice(),
                ro.interval,
                ro.gates.min_requests,
                ro.approve_at.as_slice()
            ),
            (
                &[0.0, 5.0, 100.0][..],
                Duration::from_secs(2),
                50,
                &[5.0][..]
            )
        );
        let split = read.split.as_ref().unwrap();
        assert_eq!((split.to.as_str(), split.basis_points), ("catalog", 0));
        assert_eq!(split.sticky, StickyKey::Header("x-user".parse().unwrap()));
        assert_eq!(
            c.routes[1].rollout.as_ref().unwrap().after.as_deref(),
            Some("read")
        );
        // The fingerprint changes with any edit of the block.
        let edited = parse(
            &ROLLING.replace("interval = \"2s\"", "interval = \"3s\""),
            "routes.toml",
        )
        .unwrap();
        assert_ne!(
            ro.fingerprint(&split.sticky),
            edited.routes[0]
                .rollout
                .as_ref()
                .unwrap()
                .fingerprint(&split.sticky)
        );
    }

    #[test]
    fn rollout_mistakes_are_located_and_explained() {
        let read_line = "rollout = { to = \"catalog\", steps = [0, 5, 100], interval = \"2s\", sticky = \"header:x-user\", min_requests = 50, approve_at = [5] }";
        let with = |replacement: &str| ROLLING.replace(read_line, replacement);
        for (text, wanted) in [
            (
                with("rollout = { to = \"legacy\" }"),
                "rollout goes to \"legacy\", the route's own upstream",
            ),
            (
                with("rollout = { to = \"catalog\", steps = [0, 50, 25, 100] }"),
                "steps must rise: 25 after 50",
            ),
            (
                with("rollout = { to = \"catalog\", steps = [0, 50] }"),
                "steps must end at 100",
            ),
            (
                with("rollout = { to = \"catalog\", steps = [0, 150] }"),
                "a step is a percent between 0 and 100",
            ),
            (
                with("rollout = { to = \"catalog\", approve_at = [7] }"),
                "approve_at 7 is not one of the steps",
            ),
            (
                with("rollout = { to = \"catalog\", approve_at = [100] }"),
                "approve_at 100",
            ),
            (
                with("rollout = { to = \"catalog\", max_p99_ratio = 0.5 }"),
                "max_p99_ratio must be between 1 and 100",
            ),
            (
                with("rollout = { to = \"catalog\", interval = \"10ms\" }"),
                "interval",
            ),
            (
                with("rollout = { to = \"catalog\", failures = 0 }"),
                "failures must be between 1 and 100",
            ),
            (
                with("rollout = { to = \"catalog\", stepz = [100] }"),
                "unknown field `stepz`",
            ),
            (
                with("split = { to = \"catalog\", percent = 5 }\nrollout = { to = \"catalog\" }"),
                "a route with [route.rollout] has no split",
            ),
            (
                ROLLING.replace("shadow = { to = \"catalog\", percent = 100 }\n", ""),
                "step 0 is shadow only",
            ),
            (
                ROLLING.replace(
                    "steps = [0, 100], after = \"read\"",
                    "steps = [0, 50, 100], after = \"read\"",
                ),
                "this route takes writes: it moves in one step",
            ),
            (
                ROLLING.replace(", after = \"read\"", ""),
                "name the read route that must migrate first",
            ),
            (
                ROLLING.replace("after = \"read\"", "after = \"raed\""),
                "after names no route: \"raed\"",
            ),
            (
                ROLLING.replace("after = \"read\"", "after = \"write\""),
                "after names this route itself",
            ),
        ] {
            let e = errors(&text);
            assert!(
                e.iter()
                    .any(|m| m.starts_with("routes.toml:") && m.contains(wanted)),
                "{wanted:?} not in {e:?}"
            );
        }
        // Where: the offending value's line and column.
        let e = errors(&with(
            "rollout = { to = \"catalog\", steps = [0, 50, 25, 100] }",
        ));
        assert!(
            e.iter().any(|m| m.starts_with("routes.toml:14:45:")),
            "{e:?}"
        );
    }

    #[test]
    fn fallback_and_breaker_keys_are_checked_where_they_stand() {
        let route = |keys: &str| {
            GOOD.replace(
                "[[route]]\nid = \"rest\"\npath = \"/\"\nupstream = \"legacy\"\n",
                &format!("[[route]]\nid = \"rest\"\npath = \"/\"\nupstream = \"legacy\"\n{keys}"),
            )
        };
        let c = parse(
            &route("fallback = \"legacy\"\nbreaker = { min_requests = 5, reset = \"1s\", statuses = [500, 429] }\n"),
            "routes.toml",
        )
        .unwrap();
        let rest = &c.routes[2];
        assert_eq!(rest.fallback.as_deref(), Some("legacy"));
        assert_eq!(
            (
                rest.breaker.min_requests,
                rest.breaker.reset,
                &rest.breaker.statuses
            ),
            (5, Duration::from_secs(1), &vec![500, 429])
        );
        // Each bad key is named at its own line and column.
        let line = GOOD.lines().count() + 1;
        for (keys, column, message) in [
            ("fallback = \"legcy\"\n", 12, "unknown upstream \"legcy\""),
            (
                "fallback_writes = true\n",
                19,
                "fallback_writes needs a fallback",
            ),
            (
                "breaker = { min_requests = 0 }\n",
                28,
                "min_requests must be between 1 and",
            ),
            (
                "breaker = { error_percent = 150 }\n",
                29,
                "error_percent must be above 0",
            ),
            ("breaker = { reset = \"0s\" }\n", 21, "reset"),
            (
                "breaker = { statuses = [200] }\n",
                25,
                "status 200 is not a 4xx or 5xx status",
            ),
            (
                "breaker = { statuses = [] }\n",
                24,
                "statuses must not be empty",
            ),
            ("breaker = { probs = 3 }\n", 13, "unknown field `probs`"),
        ] {
            let e = errors(&route(keys));
            let at = format!("routes.toml:{line}:{column}: ");
            assert!(
                e.iter().any(|m| m.starts_with(&at) && m.contains(message)),
                "{keys:?}: {e:?}"
            );
        }
    }

    #[test]
    fn syntax_unknown_keys_addresses_durations_ties() {
        assert!(
            errors("[proxy\n")
                .iter()
                .any(|m| m.starts_with("routes.toml:1:"))
        );
        let e = errors(&GOOD.replace("listen =", "lisen ="));
        assert!(
            e[0].starts_with("routes.toml:3:1: unknown field `lisen`"),
            "{e:?}"
        );
        let e = errors(&GOOD.replace("127.0.0.1:4011", "127.0.0.1:99999"));
        assert!(
            e[0].contains("invalid address \"127.0.0.1:99999\""),
            "{e:?}"
        );
        let e = errors(&GOOD.replace("\"2s\"", "\"2 seconds\""));
        assert!(e[0].contains("invalid duration \"2 seconds\""), "{e:?}");
        let e = errors(&GOOD.replace("methods = [\"POST\"]", "methods = [\"GET\"]"));
        assert!(e[0].contains("ties with route \"products-read\""), "{e:?}");
        let e = errors(&GOOD.replace("path = \"/\"", "path = \"/api//x/../products\""));
        assert!(e[0].contains("is not normalized"), "{e:?}");
    }

    #[test]
    fn header_conditions_break_ties() {
        let t = GOOD.replace(
            "methods = [\"POST\"]\n",
            "methods = [\"GET\"]\nheaders = { x-beta = \"1\" }\n",
        );
        assert!(parse(&t, "routes.toml").is_ok());
    }

    const SHADOWED: &str = r#"
[upstreams.legacy]
addrs = ["127.0.0.1:3000"]

[upstreams.legacy-b]
addrs = ["127.0.0.1:3001"]

[upstreams.search]
addrs = ["127.0.0.1:4003"]

[[route]]
id = "search"
path = "/api/search"
upstream = "legacy"

[route.shadow]
to = "search"
percent = 25
second_primary = "legacy-b"
timeout = "500ms"
max_in_flight = 10
max_request_body = "16KiB"
max_response_body = "2MiB"
headers = ["content-type", "cache-control"]
ignore = ["/took_ms", "/hits/*/score"]
unordered = ["/hits"]
tolerance = { "/hits/*/price" = 0.5 }
"#;

    #[test]
    fn shadow_section() {
        let c = parse(SHADOWED, "routes.toml").unwrap();
        let s = c.routes[0].shadow.as_ref().unwrap();
        assert_eq!(s.to, "search");
        assert_eq!(s.basis_points, 2500);
        assert!(!s.writes, "writes are opt-in");
        assert_eq!(s.second_primary.as_deref(), Some("legacy-b"));
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert_eq!(s.max_in_flight, 10);
        assert_eq!(
            (s.max_request_body, s.max_response_body),
            (16 * 1024, 2 * 1024 * 1024)
        );
        assert_eq!(s.headers.len(), 2);
        assert_eq!(s.rules.ignore.len(), 2);
        assert_eq!(s.rules.unordered.len(), 1);
        assert_eq!(s.rules.tolerance[0].1, 0.5);
        // Defaults.
        let minimal = SHADOWED
            .split("timeout =")
            .next()
            .unwrap()
            .replace("second_primary = \"legacy-b\"\n", "");
        let c = parse(&minimal, "routes.toml").unwrap();
        let s = c.routes[0].shadow.as_ref().unwrap();
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert_eq!(s.max_in_flight, ShadowSpec::default().max_in_flight);
        assert_eq!(s.headers, vec![http::header::CONTENT_TYPE]);
        assert_eq!(s.max_request_body, 64 * 1024);
    }

    #[test]
    fn shadow_errors_are_located() {
        let e = errors(&SHADOWED.replace("to = \"search\"", "to = \"serch\""));
        assert!(
            e[0].starts_with("routes.toml:17:6: unknown upstream \"serch\""),
            "{e:?}"
        );
        let e = errors(&SHADOWED.replace("to = \"search\"", "to = \"legacy\""));
        assert!(e[0].contains("the route's own upstream"), "{e:?}");
        let e = errors(&SHADOWED.replace("percent = 25", "percent = 101"));
        assert!(
            e[0].starts_with("routes.toml:18:11: percent must be between 0 and 100"),
            "{e:?}"
        );
        let e = errors(&SHADOWED.replace("percent = 25", "percent = 25\nwrites = true"));
        assert!(
            e[0].contains("second_primary cannot be used with writes = true"),
            "{e:?}"
        );
        let e = errors(&SHADOWED.replace("\"16KiB\"", "\"16KB\""));
        assert!(e[0].contains("invalid size \"16KB\""), "{e:?}");
        let e = errors(&SHADOWED.replace("\"/took_ms\"", "\"took_ms\""));
        assert!(
            e[0].contains("invalid field path: path \"took_ms\" must start with /"),
            "{e:?}"
        );
        let e = errors(&SHADOWED.replace("= 0.5", "= -1"));
        assert!(e[0].contains("tolerance must be a number >= 0"), "{e:?}");
        let e = errors(&SHADOWED.replace("max_in_flight = 10", "max_in_flight = 0"));
        assert!(
            e[0].contains("max_in_flight must be between 1 and 100000"),
            "{e:?}"
        );
        let e = errors(&SHADOWED.replace("percent = 25", "percent = 25\nmirror_posts = true"));
        assert!(
            e[0].starts_with("routes.toml:19:1: unknown field `mirror_posts`"),
            "{e:?}"
        );
        let e = errors(&SHADOWED.replace(
            "second_primary = \"legacy-b\"",
            "second_primary = \"search\"",
        ));
        assert!(e[0].contains("must run the old code"), "{e:?}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512B"), Some(512));
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("1MB"), None);
        assert_eq!(parse_size("1024"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5 s"), None);
    }
}
