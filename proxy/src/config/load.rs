//! From text to a validated [`Config`], or to every problem in the file at once, each naming
//! `file:line:column` and what is wrong (`routes.toml:14:12: unknown upstream "catalgo"`).

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, Method};
use toml::Spanned;

use super::file::{
    FileConfig, HealthSection, RouteSection, ShadowSection, SplitSection, UpstreamSection,
};
use super::model::*;
use crate::shadow::compare::{PathPattern, Rules};

/// Shadows in flight per route when `max_in_flight` is not set.
pub const DEFAULT_SHADOW_IN_FLIGHT: usize = 64;
use crate::route_table::normalize::normalize;

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
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

struct Checker<'a> {
    text: &'a str,
    file: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        });
    }

    fn duration(
        &mut self,
        v: &Option<Spanned<String>>,
        default: Duration,
        range: (Duration, Duration),
        what: &str,
    ) -> Duration {
        let Some(v) = v else { return default };
        match parse_duration(v.get_ref()) {
            Some(d) if d >= range.0 && d <= range.1 => d,
            Some(_) => {
                self.at(
                    v.span(),
                    format!("{what} must be between {:?} and {:?}", range.0, range.1),
                );
                default
            }
            None => {
                self.at(v.span(), format!("invalid duration {:?}: expected a number and a unit, such as 500ms, 2s or 1m", v.get_ref()));
                default
            }
        }
    }

    fn size(&mut self, v: &Option<Spanned<String>>, default: usize, what: &str) -> usize {
        let Some(v) = v else { return default };
        match parse_size(v.get_ref()) {
            Some(n) if n <= 64 * 1024 * 1024 => n,
            Some(_) => {
                self.at(v.span(), format!("{what} must be at most 64MiB"));
                default
            }
            None => {
                self.at(
                    v.span(),
                    format!(
                        "invalid size {:?}: expected a number and a unit, such as 512B, 64KiB or 1MiB",
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn address(&mut self, v: &Spanned<String>) -> Option<SocketAddr> {
        let s = v.get_ref();
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Some(a);
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            self.at(
                v.span(),
                format!("invalid address {s:?}: expected host:port"),
            );
            return None;
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            self.at(
                v.span(),
                format!("invalid address {s:?}: expected host:port"),
            );
            return None;
        }
        match s.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => Some(a),
            _ => {
                self.at(v.span(), format!("address {s:?} does not resolve"));
                None
            }
        }
    }
}

/// `admin_token_file`, resolved against the table's directory: it must hold a token.
fn token_file(c: &mut Checker<'_>, f: &Spanned<String>) -> Option<std::path::PathBuf> {
    let raw = std::path::Path::new(f.get_ref());
    let path = if raw.is_absolute() {
        raw.to_owned()
    } else {
        std::path::Path::new(c.file)
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(raw)
    };
    match crate::admin::guard::read_token(&path) {
        Ok(_) => Some(path),
        Err(e) => {
            c.at(f.span(), format!("admin_token_file: {e}"));
            None
        }
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}

/// `500ms`, `2s`, `1m`, `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// `512B`, `64KiB`, `1MiB` (binary units; `KB`/`MB` are refused as ambiguous).
pub fn parse_size(s: &str) -> Option<usize> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: usize = n.parse().ok()?;
    match unit {
        "B" => Some(n),
        "KiB" => n.checked_mul(1024),
        "MiB" => n.checked_mul(1024 * 1024),
        _ => None,
    }
}

/// Parses and validates a route table; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
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
            let threads = match &p.threads {
                Some(t) if (1..=256).contains(t.get_ref()) => *t.get_ref() as usize,
                Some(t) => {
                    c.at(t.span(), "threads must be between 1 and 256");
                    defaults.threads
                }
                None => defaults.threads,
            };
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
                max_headers: match &p.max_request_headers {
                    Some(n) if (1..=1000).contains(n.get_ref()) => *n.get_ref() as usize,
                    Some(n) => {
                        c.at(n.span(), "max_request_headers must be between 1 and 1000");
                        defaults.head.max_headers
                    }
                    None => defaults.head.max_headers,
                },
                timeout: c.duration(
                    &p.request_head_timeout,
                    defaults.head.timeout,
                    (Duration::from_millis(100), Duration::from_secs(300)),
                    "request_head_timeout",
                ),
            };
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

fn upstream(
    c: &mut Checker<'_>,
    name: &Spanned<String>,
    up: &Spanned<UpstreamSection>,
) -> Option<UpstreamSpec> {
    let n = name.get_ref();
    if n.is_empty()
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        c.at(
            name.span(),
            format!("upstream name {n:?} may contain only letters, digits, '-' and '_'"),
        );
    }
    let up = up.get_ref();
    if up.addrs.get_ref().is_empty() {
        c.at(up.addrs.span(), format!("upstream {n:?} has no addrs"));
    }
    let mut addrs = Vec::new();
    for a in up.addrs.get_ref() {
        if let Some(addr) = c.address(a) {
            if addrs.contains(&addr) {
                c.at(
                    a.span(),
                    format!("address {:?} is listed twice", a.get_ref()),
                );
            }
            addrs.push(addr);
        }
    }
    let health = up.health.as_ref().map(|h| health(c, h));
    let limit = (Duration::from_millis(1), Duration::from_secs(3600));
    Some(UpstreamSpec {
        name: n.clone(),
        addrs,
        health,
        // Longer than Linux's first SYN retransmission (1 s): one SYN dropped by a busy
        // backend's full accept queue must not fail the request and eject the backend.
        connect_timeout: c.duration(
            &up.connect_timeout,
            Duration::from_secs(3),
            limit,
            "connect_timeout",
        ),
        read_timeout: c.duration(
            &up.read_timeout,
            Duration::from_secs(30),
            limit,
            "read_timeout",
        ),
        write_timeout: c.duration(
            &up.write_timeout,
            Duration::from_secs(30),
            limit,
            "write_timeout",
        ),
        idle_timeout: c.duration(
            &up.idle_timeout,
            Duration::from_secs(60),
            limit,
            "idle_timeout",
        ),
    })
}

fn health(c: &mut Checker<'_>, h: &Spanned<HealthSection>) -> HealthSpec {
    let h = h.get_ref();
    let path = h.path.get_ref();
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        c.at(
            h.path.span(),
            format!("health path {path:?} must start with '/' and contain no spaces"),
        );
    }
    let interval = c.duration(
        &h.interval,
        Duration::from_secs(2),
        (Duration::from_millis(100), Duration::from_secs(300)),
        "health interval",
    );
    let timeout = c.duration(
        &h.timeout,
        Duration::from_secs(1).min(interval),
        (Duration::from_millis(10), Duration::from_secs(60)),
        "health timeout",
    );
    HealthSpec {
        path: path.clone(),
        interval,
        timeout,
    }
}

fn route(c: &mut Checker<'_>, r: &RouteSection, raw: &FileConfig) -> Option<RouteSpec> {
    let id = r.id.get_ref();
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        c.at(
            r.id.span(),
            format!("route id {id:?} may contain only letters, digits, '-' and '_'"),
        );
    }
    let raw_path = r.path.get_ref();
    let path = match normalize(raw_path) {
        Ok(p) => {
            let trimmed = if p.len() > 1 {
                p.trim_end_matches('/').to_owned()
            } else {
                p
            };
            if &trimmed != raw_path && raw_path.trim_end_matches('/') != trimmed {
                c.at(
                    r.path.span(),
                    format!("path {raw_path:?} is not normalized: write {trimmed:?}"),
                );
            }
            trimmed
        }
        Err(e) => {
            c.at(r.path.span(), format!("invalid path {raw_path:?}: {e}"));
            return None;
        }
    };
    let methods = r.methods.as_ref().map(|ms| {
        if ms.get_ref().is_empty() {
            c.at(
                ms.span(),
                "methods must not be empty (leave it out to match any method)",
            );
        }
        let mut out: Vec<Method> = Vec::new();
        for m in ms.get_ref() {
            match m.get_ref().parse::<Method>() {
                Ok(method) if m.get_ref().bytes().all(|b| b.is_ascii_uppercase()) => {
                    if out.contains(&method) {
                        c.at(m.span(), format!("method {} is listed twice", m.get_ref()));
                    }
                    out.push(method);
                }
                _ => c.at(
                    m.span(),
                    format!(
                        "invalid method {:?}: expected an upper-case HTTP method such as GET",
                        m.get_ref()
                    ),
                ),
            }
        }
        out
    });
    let mut headers = Vec::new();
    for (name, value) in &r.headers {
        match HeaderName::from_bytes(name.get_ref().as_bytes()) {
            Ok(h) => headers.push((h, value.get_ref().clone())),
            Err(_) => c.at(
                name.span(),
                format!("invalid header name {:?}", name.get_ref()),
            ),
        }
    }
    let known = |name: &str| raw.upstreams.keys().any(|k| k.get_ref() == name);
    let upstream = r.upstream.get_ref();
    if !known(upstream) {
        c.at(r.upstream.span(), format!("unknown upstream {upstream:?}"));
    }
    let split = r.split.as_ref().map(|s| split(c, s, upstream, &known));
    let shadow = r.shadow.as_ref().map(|s| shadow(c, s, upstream, &known));
    Some(RouteSpec {
        id: id.clone(),
        path,
        methods,
        headers,
        upstream: upstream.clone(),
        split: split.flatten(),
        shadow,
    })
}

fn percent_to_basis_points(c: &mut Checker<'_>, p: &Spanned<f64>) -> u32 {
    let percent = *p.get_ref();
    if (0.0..=100.0).contains(&percent) {
        (percent * 100.0).round() as u32
    } else {
        c.at(
            p.span(),
            format!("percent must be between 0 and 100, not {percent}"),
        );
        0
    }
}

fn shadow(
    c: &mut Checker<'_>,
    s: &Spanned<ShadowSection>,
    upstream: &str,
    known: &dyn Fn(&str) -> bool,
) -> ShadowSpec {
    let s = s.get_ref();
    let to = s.to.get_ref();
    if !known(to) {
        c.at(s.to.span(), format!("unknown upstream {to:?}"));
    } else if to == upstream {
        c.at(
            s.to.span(),
            format!("shadow goes to {to:?}, the route's own upstream: nothing to compare"),
        );
    }
    let basis_points = percent_to_basis_points(c, &s.percent);
    let writes = s.writes.unwrap_or(false);
    if let Some(second) = &s.second_primary {
        let name = second.get_ref();
        if !known(name) {
            c.at(second.span(), format!("unknown upstream {name:?}"));
        } else if name == to {
            c.at(
                second.span(),
                "second_primary must run the old code, not the candidate's",
            );
        } else if writes {
            c.at(
                second.span(),
                "second_primary cannot be used with writes = true: every mirrored write would reach the old code twice",
            );
        }
    }
    let timeout = c.duration(
        &s.timeout,
        Duration::from_secs(2),
        (Duration::from_millis(10), Duration::from_secs(60)),
        "shadow timeout",
    );
    let max_in_flight = match &s.max_in_flight {
        Some(n) if (1..=100_000).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            c.at(n.span(), "max_in_flight must be between 1 and 100000");
            DEFAULT_SHADOW_IN_FLIGHT
        }
        None => DEFAULT_SHADOW_IN_FLIGHT,
    };
    let max_request_body = c.size(&s.max_request_body, 64 * 1024, "max_request_body");
    let max_response_body = c.size(&s.max_response_body, 1024 * 1024, "max_response_body");
    let mut headers = Vec::new();
    match &s.headers {
        None => headers.push(http::header::CONTENT_TYPE),
        Some(list) => {
            for h in list {
                match HeaderName::from_bytes(h.get_ref().as_bytes()) {
                    Ok(name) => headers.push(name),
                    Err(_) => c.at(h.span(), format!("invalid header name {:?}", h.get_ref())),
                }
            }
        }
    }
    let pattern = |c: &mut Checker<'_>, p: &Spanned<String>| match PathPattern::parse(p.get_ref()) {
        Ok(pat) => Some(pat),
        Err(e) => {
            c.at(p.span(), format!("invalid field path: {e}"));
            None
        }
    };
    let mut rules = Rules::default();
    for p in s.ignore.iter().flatten() {
        rules.ignore.extend(pattern(c, p));
    }
    for p in s.unordered.iter().flatten() {
        rules.unordered.extend(pattern(c, p));
    }
    for (p, tol) in s.tolerance.iter().flatten() {
        if let Some(pat) = pattern(c, p) {
            let t = *tol.get_ref();
            if t.is_finite() && t >= 0.0 {
                rules.tolerance.push((pat, t));
            } else {
                c.at(
                    tol.span(),
                    format!("tolerance must be a number >= 0, not {t}"),
                );
            }
        }
    }
    ShadowSpec {
        to: to.clone(),
        basis_points,
        writes,
        second_primary: s.second_primary.as_ref().map(|n| n.get_ref().clone()),
        timeout,
        max_in_flight,
        max_request_body,
        max_response_body,
        headers,
        rules,
    }
}

fn split(
    c: &mut Checker<'_>,
    s: &Spanned<SplitSection>,
    upstream: &str,
    known: &dyn Fn(&str) -> bool,
) -> Option<SplitSpec> {
    let s = s.get_ref();
    let to = s.to.get_ref();
    if !known(to) {
        c.at(s.to.span(), format!("unknown upstream {to:?}"));
    } else if to == upstream {
        c.at(
            s.to.span(),
            format!("split goes to {to:?}, the route's own upstream"),
        );
    }
    let basis_points = percent_to_basis_points(c, &s.percent);
    let sticky = match s.sticky.as_ref().map(|k| (k, k.get_ref().as_str())) {
        None => StickyKey::PerRequest,
        Some((_, "client")) => StickyKey::ClientAddr,
        Some((k, key)) => match key.split_once(':') {
            Some(("cookie", name))
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"=;,\"".contains(&b)) =>
            {
                StickyKey::Cookie(name.to_owned())
            }
            Some(("header", name)) if HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                StickyKey::Header(HeaderName::from_bytes(name.as_bytes()).unwrap())
            }
            _ => {
                c.at(k.span(), format!("invalid sticky key {key:?}: expected \"cookie:NAME\", \"header:NAME\" or \"client\""));
                StickyKey::PerRequest
            }
        },
    };
    Some(SplitSpec {
        to: to.clone(),
        basis_points,
        sticky,
    })
}

/// Two routes tie when some request would match both with the same specificity: same path,
/// both with or both without a method list (and the lists overlap), the same number of header
/// conditions, and no header condition that tells them apart.
fn check_ties(c: &mut Checker<'_>, routes: &[(Range<usize>, RouteSpec)]) {
    for (i, (_, a)) in routes.iter().enumerate() {
        for (span_b, b) in &routes[i + 1..] {
            if a.path != b.path || a.headers.len() != b.headers.len() {
                continue;
            }
            let methods_overlap = match (&a.methods, &b.methods) {
                (None, None) => true,
                (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
                _ => false,
            };
            let headers_disjoint = a
                .headers
                .iter()
                .any(|(n, v)| b.headers.iter().any(|(m, w)| n == m && v != w));
            if methods_overlap && !headers_disjoint {
                c.at(span_b.clone(), format!("route {:?} ties with route {:?}: same path {:?} and equally specific; add methods or headers to one of them", b.id, a.id, a.path));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.max_in_flight, DEFAULT_SHADOW_IN_FLIGHT);
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
