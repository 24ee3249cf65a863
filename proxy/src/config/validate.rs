//! The checks a route table's sections must pass, one validator a section: upstreams and
//! their health checks, routes, splits and shadows, and the ties between routes. Each reports
//! every problem it finds to the [`Checker`] and returns its part of the model with defaults
//! (the model's `Default`s) where the file is silent.

use std::ops::Range;
use std::time::Duration;

use http::{HeaderName, Method};
use toml::Spanned;

use super::file::{
    BreakerSection, FileConfig, HealthSection, OutlierSection, RouteSection, ShadowSection,
    SplitSection, UpstreamSection,
};
use super::model::*;
use crate::shadow::compare::{PathPattern, Rules};

use crate::route_table::normalize::normalize;

use super::error::Checker;

/// `admin_token_file`, resolved against the table's directory: it must hold a token.
pub(super) fn token_file(c: &mut Checker<'_>, f: &Spanned<String>) -> Option<std::path::PathBuf> {
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

pub(super) fn upstream(
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
    let d = UpstreamSpec::default();
    Some(UpstreamSpec {
        name: n.clone(),
        addrs,
        health,
        connect_timeout: c.duration(
            &up.connect_timeout,
            d.connect_timeout,
            limit,
            "connect_timeout",
        ),
        read_timeout: c.duration(&up.read_timeout, d.read_timeout, limit, "read_timeout"),
        write_timeout: c.duration(&up.write_timeout, d.write_timeout, limit, "write_timeout"),
        idle_timeout: c.duration(&up.idle_timeout, d.idle_timeout, limit, "idle_timeout"),
        outlier: up
            .outlier
            .as_ref()
            .map_or_else(OutlierSpec::default, |o| outlier(c, o.get_ref())),
    })
}

fn outlier(c: &mut Checker<'_>, o: &OutlierSection) -> OutlierSpec {
    let d = OutlierSpec::default();
    let consecutive = c.count(&o.consecutive, d.consecutive as usize, 1000, "consecutive") as u32;
    let max_eject_percent = match &o.max_eject_percent {
        Some(p) if (0..=100).contains(p.get_ref()) => *p.get_ref() as u32,
        Some(p) => {
            c.at(p.span(), "max_eject_percent must be between 0 and 100");
            d.max_eject_percent
        }
        None => d.max_eject_percent,
    };
    OutlierSpec {
        enabled: o.enabled.unwrap_or(d.enabled),
        consecutive,
        base: c.duration(
            &o.base,
            d.base,
            (Duration::from_millis(100), Duration::from_secs(300)),
            "outlier base",
        ),
        max_eject_percent,
    }
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
    let d = HealthSpec::default();
    let interval = c.duration(
        &h.interval,
        d.interval,
        (Duration::from_millis(100), Duration::from_secs(300)),
        "health interval",
    );
    let timeout = c.duration(
        &h.timeout,
        d.timeout.min(interval),
        (Duration::from_millis(10), Duration::from_secs(60)),
        "health timeout",
    );
    HealthSpec {
        path: path.clone(),
        interval,
        timeout,
    }
}

pub(super) fn route(c: &mut Checker<'_>, r: &RouteSection, raw: &FileConfig) -> Option<RouteSpec> {
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
                p.into_owned()
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
    let timeout = c.duration(
        &r.timeout,
        ROUTE_TIMEOUT,
        (Duration::from_millis(10), Duration::from_secs(600)),
        "timeout",
    );
    let fallback = r.fallback.as_ref().map(|f| {
        let name = f.get_ref();
        if !known(name) {
            c.at(f.span(), format!("unknown upstream {name:?}"));
        }
        name.clone()
    });
    let fallback_writes = match &r.fallback_writes {
        Some(w) if *w.get_ref() && fallback.is_none() => {
            c.at(
                w.span(),
                "fallback_writes needs a fallback: name the upstream that still owns the writes",
            );
            false
        }
        Some(w) => *w.get_ref(),
        None => false,
    };
    let breaker = r
        .breaker
        .as_ref()
        .map_or_else(BreakerSpec::default, |b| breaker(c, b.get_ref()));
    let mut split = split.flatten();
    let rollout = r.rollout.as_ref().and_then(|ro| {
        let (spec, sticky) = super::rollout::rollout(c, ro, r, methods.as_deref(), &known)?;
        // The rollout drives the route's split: its side and sticky key, its share per step.
        split = Some(SplitSpec {
            to: spec.to.clone(),
            basis_points: 0,
            sticky,
        });
        Some(spec)
    });
    Some(RouteSpec {
        id: id.clone(),
        path,
        methods,
        headers,
        upstream: upstream.clone(),
        split,
        shadow,
        timeout,
        fallback,
        fallback_writes,
        breaker,
        rollout,
    })
}

fn breaker(c: &mut Checker<'_>, b: &BreakerSection) -> BreakerSpec {
    let d = BreakerSpec::default();
    let min_requests = c.count(
        &b.min_requests,
        d.min_requests as usize,
        1_000_000,
        "min_requests",
    ) as u32;
    let probes = c.count(&b.probes, d.probes as usize, 100, "probes") as u32;
    let error_percent = match &b.error_percent {
        Some(p) if *p.get_ref() > 0.0 && *p.get_ref() <= 100.0 => *p.get_ref(),
        Some(p) => {
            c.at(p.span(), "error_percent must be above 0 and at most 100");
            d.error_percent
        }
        None => d.error_percent,
    };
    let window = c.duration(
        &b.window,
        d.window,
        (Duration::from_secs(1), Duration::from_secs(600)),
        "window",
    );
    let reset = c.duration(
        &b.reset,
        d.reset,
        (Duration::from_millis(100), Duration::from_secs(3600)),
        "reset",
    );
    let mut statuses = Vec::new();
    match &b.statuses {
        Some(list) if list.get_ref().is_empty() => c.at(
            list.span(),
            "statuses must not be empty (connect errors and timeouts count anyway; list at least one)",
        ),
        Some(list) => {
            for s in list.get_ref() {
                match u16::try_from(*s.get_ref()) {
                    Ok(code @ 400..=599) if !statuses.contains(&code) => statuses.push(code),
                    Ok(code @ 400..=599) => c.at(s.span(), format!("status {code} is listed twice")),
                    _ => c.at(
                        s.span(),
                        format!("status {} is not a 4xx or 5xx status", s.get_ref()),
                    ),
                }
            }
        }
        None => statuses = d.statuses.clone(),
    }
    BreakerSpec {
        enabled: b.enabled.unwrap_or(d.enabled),
        window,
        min_requests,
        error_percent,
        reset,
        probes,
        statuses,
    }
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
    other_upstream(c, &s.to, upstream, known, "shadow", ": nothing to compare");
    let basis_points = percent_to_basis_points(c, &s.percent);
    let writes = s.writes.unwrap_or(ShadowSpec::default().writes);
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
    let d = ShadowSpec::default();
    let timeout = c.duration(
        &s.timeout,
        d.timeout,
        (Duration::from_millis(10), Duration::from_secs(60)),
        "shadow timeout",
    );
    let max_in_flight = c.count(&s.max_in_flight, d.max_in_flight, 100_000, "max_in_flight");
    let max_request_body = c.size(&s.max_request_body, d.max_request_body, "max_request_body");
    let max_response_body = c.size(
        &s.max_response_body,
        d.max_response_body,
        "max_response_body",
    );
    let mut headers = Vec::new();
    match &s.headers {
        None => headers.clone_from(&d.headers),
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
    other_upstream(c, &s.to, upstream, known, "split", "");
    let basis_points = percent_to_basis_points(c, &s.percent);
    let sticky = sticky(c, s.sticky.as_ref());
    Some(SplitSpec {
        to: to.clone(),
        basis_points,
        sticky,
    })
}

/// A split's or rollout's `sticky`: what keeps a user on one side (none: each request alone).
pub(super) fn sticky(c: &mut Checker<'_>, key: Option<&Spanned<String>>) -> StickyKey {
    match key.map(|k| (k, k.get_ref().as_str())) {
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
    }
}

/// Two routes tie when some request would match both with the same specificity: same path,
/// both with or both without a method list (and the lists overlap), the same number of header
/// conditions, and no header condition that tells them apart.
pub(super) fn check_ties(c: &mut Checker<'_>, routes: &[(Range<usize>, RouteSpec)]) {
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

/// A shadow's or split's `to`: a known upstream, and not the route's own.
pub(super) fn other_upstream(
    c: &mut Checker<'_>,
    to: &Spanned<String>,
    upstream: &str,
    known: &dyn Fn(&str) -> bool,
    what: &str,
    why: &str,
) {
    let name = to.get_ref();
    if !known(name) {
        c.at(to.span(), format!("unknown upstream {name:?}"));
    } else if name == upstream {
        c.at(
            to.span(),
            format!("{what} goes to {name:?}, the route's own upstream{why}"),
        );
    }
}
