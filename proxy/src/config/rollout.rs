//! Checking a route's `[route.rollout]`: the steps, the gates' allowances, and the rules that
//! keep a migration safe whatever the file says.
//!
//! - the rollout drives the route's split, so the route has no `split` of its own (two
//!   sources for one share would leave the reader guessing which one is live);
//! - step 0 is shadow only: it can only be judged on comparisons, so a read route that starts
//!   at 0 must shadow to the rollout's `to`, and a route's shadow, if any, must compare that
//!   same upstream (the shadow gate judges the side that is moving in);
//! - a route that takes writes moves in one step (`steps = [0, 100]`), after the read route
//!   it names in `after` has migrated: two owners of the same rows at once would leave the
//!   last writer winning (README, "Data during the migration").

use std::time::Duration;

use http::Method;
use toml::Spanned;

use super::error::Checker;
use super::file::{RolloutSection, RouteSection};
use super::model::*;
use super::validate::{other_upstream, sticky};
use crate::rollout::traffic::Gates;

/// Whether a route with these methods (`None`: any) takes writes.
pub(crate) fn takes_writes(methods: Option<&[Method]>) -> bool {
    methods.is_none_or(|ms| ms.iter().any(|m| !m.is_safe()))
}

/// The rollout of route `r`, and the sticky key of the split it drives.
pub(super) fn rollout(
    c: &mut Checker<'_>,
    ro: &Spanned<RolloutSection>,
    r: &RouteSection,
    methods: Option<&[Method]>,
    known: &dyn Fn(&str) -> bool,
) -> Option<(RolloutSpec, StickyKey)> {
    let errors_before = c.errors.len();
    let s = ro.get_ref();
    let upstream = r.upstream.get_ref();
    other_upstream(c, &s.to, upstream, known, "rollout", ": nothing would move");
    let to = s.to.get_ref().clone();
    if let Some(split) = &r.split {
        c.at(
            split.span(),
            "a route with [route.rollout] has no split: the rollout sets the share step by step \
             (put the sticky key in the rollout block)",
        );
    }
    let writes = takes_writes(methods);
    let default_steps: &[f64] = if writes {
        &[0.0, 100.0]
    } else {
        &ROLLOUT_STEPS
    };
    let steps: Vec<f64> = match &s.steps {
        None => default_steps.to_vec(),
        Some(list) => {
            let mut out: Vec<f64> = Vec::new();
            for p in list.get_ref() {
                let v = *p.get_ref();
                if !(0.0..=100.0).contains(&v) {
                    c.at(
                        p.span(),
                        format!("a step is a percent between 0 and 100, not {v}"),
                    );
                } else if out.last().is_some_and(|last| v <= *last) {
                    c.at(
                        p.span(),
                        format!("steps must rise: {v} after {}", out.last().unwrap()),
                    );
                } else {
                    out.push(v);
                }
            }
            if list.get_ref().is_empty() {
                c.at(list.span(), "steps must not be empty: end them at 100");
            } else if out.last() != Some(&100.0) {
                c.at(
                    list.span(),
                    "steps must end at 100: a rollout that never gets there cannot migrate the route",
                );
            }
            out
        }
    };
    let steps_span = s.steps.as_ref().map_or(ro.span(), |l| l.span());
    if writes && steps != [0.0, 100.0] {
        c.at(
            steps_span.clone(),
            "this route takes writes: it moves in one step, steps = [0, 100] with after = \
             \"<its read route>\" (two owners of the same rows at once leave the last writer \
             winning; see the README's data section)",
        );
    }
    let after = match (&s.after, writes) {
        (Some(a), true) => Some(a.get_ref().clone()),
        (None, true) => {
            c.at(
                ro.span(),
                "this route takes writes: name the read route that must migrate first, \
                 after = \"<route id>\"",
            );
            None
        }
        (Some(a), false) => {
            c.at(
                a.span(),
                "after is for routes that take writes; this one only reads (its own gates judge it)",
            );
            None
        }
        (None, false) => None,
    };
    match (&r.shadow, steps.first()) {
        (Some(sh), _) if sh.get_ref().to.get_ref() != &to => c.at(
            sh.get_ref().to.span(),
            format!(
                "the shadow compares {:?} but the rollout moves the route to {to:?}: the shadow \
                 gate must judge the side that moves in",
                sh.get_ref().to.get_ref()
            ),
        ),
        (None, Some(&0.0)) if !writes => c.at(
            steps_span,
            format!(
                "step 0 is shadow only and is judged on comparisons: add [route.shadow] with to \
                 = {to:?}, or start the steps above 0"
            ),
        ),
        _ => {}
    }
    let interval = c.duration(
        &s.interval,
        ROLLOUT_INTERVAL,
        (
            Duration::from_millis(100),
            Duration::from_secs(7 * 24 * 3600),
        ),
        "interval",
    );
    let d = Gates::default();
    let ratio = |c: &mut Checker<'_>,
                 v: &Option<Spanned<f64>>,
                 default: f64,
                 range: (f64, f64),
                 what: &str| match v {
        None => default,
        Some(x) if (range.0..=range.1).contains(x.get_ref()) => *x.get_ref(),
        Some(x) => {
            c.at(
                x.span(),
                format!(
                    "{what} must be between {} and {}, not {}",
                    range.0,
                    range.1,
                    x.get_ref()
                ),
            );
            default
        }
    };
    let gates = Gates {
        min_requests: c.count(
            &s.min_requests,
            d.min_requests as usize,
            1_000_000_000,
            "min_requests",
        ) as u64,
        max_error_delta: ratio(
            c,
            &s.max_error_delta,
            d.max_error_delta,
            (0.0, 100.0),
            "max_error_delta",
        ),
        max_p99_ratio: ratio(
            c,
            &s.max_p99_ratio,
            d.max_p99_ratio,
            (1.0, 100.0),
            "max_p99_ratio",
        ),
        max_mismatch_percent: ratio(
            c,
            &s.max_mismatch_percent,
            d.max_mismatch_percent,
            (0.0, 100.0),
            "max_mismatch_percent",
        ),
        min_compared: c.count(
            &s.min_compared,
            d.min_compared as usize,
            1_000_000_000,
            "min_compared",
        ) as u64,
    };
    let mut approve_at = Vec::new();
    for a in s.approve_at.iter().flatten() {
        let v = *a.get_ref();
        if v >= 100.0 {
            c.at(
                a.span(),
                "approve_at 100: the route migrates on leaving the step before it; approve at that step",
            );
        } else if !steps.contains(&v) {
            c.at(a.span(), format!("approve_at {v} is not one of the steps"));
        } else if approve_at.contains(&v) {
            c.at(a.span(), format!("approve_at {v} is listed twice"));
        } else {
            approve_at.push(v);
        }
    }
    let failures = c.count(&s.failures, ROLLOUT_FAILURES as usize, 100, "failures") as u32;
    let sticky = sticky(c, s.sticky.as_ref());
    (c.errors.len() == errors_before).then_some((
        RolloutSpec {
            to,
            steps,
            interval,
            gates,
            approve_at,
            failures,
            after,
        },
        sticky,
    ))
}

/// Every `after` names a read route of the table that moves to the same upstream (by its own
/// rollout, or already there).
pub(super) fn check_after(
    c: &mut Checker<'_>,
    routes: &[(std::ops::Range<usize>, RouteSpec)],
    raw: &[Spanned<RouteSection>],
) {
    for r in routes.iter().map(|(_, r)| r) {
        let raw_ro = raw
            .iter()
            .find(|x| x.get_ref().id.get_ref() == &r.id)
            .and_then(|x| x.get_ref().rollout.as_ref());
        let (Some(ro), Some(raw_ro)) = (&r.rollout, raw_ro) else {
            continue;
        };
        let (Some(after), Some(span)) = (&ro.after, raw_ro.get_ref().after.as_ref()) else {
            continue;
        };
        match routes.iter().map(|(_, r)| r).find(|o| &o.id == after) {
            None => c.at(span.span(), format!("after names no route: {after:?}")),
            Some(o) if o.id == r.id => c.at(span.span(), "after names this route itself"),
            Some(o) if takes_writes(o.methods.as_deref()) => c.at(
                span.span(),
                format!("after names {after:?}, which takes writes too: name the read route"),
            ),
            Some(o) => {
                let moves_to_same =
                    o.rollout.as_ref().is_some_and(|x| x.to == ro.to) || o.upstream == ro.to;
                if !moves_to_same {
                    c.at(
                        span.span(),
                        format!(
                            "after names {after:?}, which does not move to {:?} (its rollout or upstream must)",
                            ro.to
                        ),
                    );
                }
            }
        }
    }
}
