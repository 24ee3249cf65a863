//! Comparing a candidate's JSON answer with the primary's, field by field.
//!
//! A difference is reported at its concrete path (`/hits/3/score`) and at its template, the
//! path with array positions replaced by `*` (`/hits/*/score`): results are counted per
//! template, so a thousand hits differing in `score` are one finding, not a thousand.
//!
//! A route's [`Rules`] say what does not count:
//! - `ignore`: paths whose values may differ freely (`/items/*/updated_at`); `*` stands for
//!   any one key or array position;
//! - `unordered`: arrays compared as multisets (each element of one matched to an equal element
//!   of the other), for answers whose order is not part of the contract;
//! - `tolerance`: numbers at a path that may differ by up to an absolute amount.

use serde_json::Value;

/// A path pattern: segments separated by `/`, `*` matching any one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathPattern(Vec<String>);

impl PathPattern {
    /// Parses `/a/*/b`. The empty pattern `/` is the whole body.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let Some(rest) = s.strip_prefix('/') else {
            return Err(format!("path {s:?} must start with /"));
        };
        if rest.is_empty() {
            return Ok(Self(Vec::new()));
        }
        let segs: Vec<String> = rest.split('/').map(str::to_owned).collect();
        if segs.iter().any(String::is_empty) {
            return Err(format!("path {s:?} has an empty segment"));
        }
        Ok(Self(segs))
    }

    fn matches(&self, path: &[String]) -> bool {
        self.0.len() == path.len() && self.0.iter().zip(path).all(|(p, s)| p == "*" || p == s)
    }
}

impl std::fmt::Display for PathPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", self.0.join("/"))
    }
}

/// What a route allows to differ.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Rules {
    pub ignore: Vec<PathPattern>,
    pub unordered: Vec<PathPattern>,
    pub tolerance: Vec<(PathPattern, f64)>,
}

impl Rules {
    /// Each rule as an operator wrote it (`ignore /hits/*/score`), in a fixed order.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = self.ignore.iter().map(|p| format!("ignore {p}")).collect();
        out.extend(self.unordered.iter().map(|p| format!("unordered {p}")));
        out.extend(self.tolerance.iter().map(|(p, _)| format!("tolerance {p}")));
        out
    }

    /// How many rules there are.
    pub(crate) fn len(&self) -> usize {
        self.ignore.len() + self.unordered.len() + self.tolerance.len()
    }

    fn patterns(&self) -> impl Iterator<Item = &PathPattern> {
        self.ignore
            .iter()
            .chain(&self.unordered)
            .chain(self.tolerance.iter().map(|(p, _)| p))
    }

    /// Sets `seen[i]` for each rule (in [`Rules::names`] order) whose path some value in `v`
    /// has: a rule that never matches anything is a typo (`/hits/*/price` where the field is
    /// `price_cents`), and `banyan shadow report` says so.
    pub(crate) fn mark_seen(&self, v: &Value, seen: &mut [bool]) {
        fn walk(v: &Value, rules: &Rules, path: &mut Vec<String>, seen: &mut [bool]) {
            for (i, p) in rules.patterns().enumerate() {
                if !seen[i] && p.matches(path) {
                    seen[i] = true;
                }
            }
            match v {
                Value::Object(map) => {
                    for (k, x) in map {
                        path.push(k.clone());
                        walk(x, rules, path, seen);
                        path.pop();
                    }
                }
                Value::Array(items) => {
                    for (i, x) in items.iter().enumerate() {
                        path.push(i.to_string());
                        walk(x, rules, path, seen);
                        path.pop();
                    }
                }
                _ => {}
            }
        }
        walk(v, self, &mut Vec::new(), seen);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiffKind {
    /// Present in the primary's answer only.
    Missing,
    /// Present in the candidate's answer only.
    Extra,
    /// Different JSON types.
    Type,
    /// Same type, different value.
    Value,
    /// An element of an unordered array with no equal element on the other side.
    Unmatched,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Difference {
    /// JSON-pointer style, with the primary's array positions (`/hits/3/score`).
    pub path: String,
    /// Where the candidate's side of the difference is, when that is elsewhere: inside an
    /// unordered array the paired elements may sit at different positions.
    pub candidate_path: Option<String>,
    /// The same with positions as `*` (`/hits/*/score`): what results are counted by.
    pub template: String,
    pub kind: DiffKind,
}

/// The differences between `primary` and `candidate` under `rules`, in document order.
pub(crate) fn compare(primary: &Value, candidate: &Value, rules: &Rules) -> Vec<Difference> {
    let mut out = Vec::new();
    walk(primary, candidate, rules, &mut Cursor::default(), &mut out);
    out
}

/// Where the walk is: the path on each side (they differ only under unordered arrays) and the
/// template, with array positions as `*`.
#[derive(Debug, Default)]
struct Cursor {
    path: Vec<String>,
    candidate: Vec<String>,
    template: Vec<String>,
}

impl Cursor {
    fn key(&mut self, k: &str) {
        self.path.push(k.to_owned());
        self.candidate.push(k.to_owned());
        self.template.push(k.to_owned());
    }

    /// Position `i` of the primary's array paired with position `j` of the candidate's.
    fn positions(&mut self, i: usize, j: usize) {
        self.path.push(i.to_string());
        self.candidate.push(j.to_string());
    }

    fn leave_key(&mut self) {
        self.leave_position();
        self.template.pop();
    }

    fn leave_position(&mut self) {
        self.path.pop();
        self.candidate.pop();
    }

    fn push(&self, out: &mut Vec<Difference>, kind: DiffKind) {
        let path = render(&self.path);
        let candidate = render(&self.candidate);
        out.push(Difference {
            candidate_path: (candidate != path).then_some(candidate),
            path,
            template: render(&self.template),
            kind,
        });
    }
}

fn render(segs: &[String]) -> String {
    if segs.is_empty() {
        return "/".to_owned();
    }
    let mut s = String::new();
    for seg in segs {
        s.push('/');
        s.push_str(seg);
    }
    s
}

fn walk(a: &Value, b: &Value, rules: &Rules, at: &mut Cursor, out: &mut Vec<Difference>) {
    let ignored = |at: &Cursor| rules.ignore.iter().any(|p| p.matches(&at.path));
    if ignored(at) {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                at.key(k);
                match y.get(k) {
                    Some(vb) => walk(va, vb, rules, at, out),
                    None if !ignored(at) => at.push(out, DiffKind::Missing),
                    None => {}
                }
                at.leave_key();
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                at.key(k);
                if !ignored(at) {
                    at.push(out, DiffKind::Extra);
                }
                at.leave_key();
            }
        }
        (Value::Array(x), Value::Array(y))
            if rules.unordered.iter().any(|p| p.matches(&at.path)) =>
        {
            unordered(x, y, rules, at, out);
        }
        (Value::Array(x), Value::Array(y)) => {
            at.template.push("*".to_owned());
            for i in 0..x.len().max(y.len()) {
                at.positions(i, i);
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => walk(va, vb, rules, at, out),
                    (Some(_), None) => at.push(out, DiffKind::Missing),
                    (None, Some(_)) => at.push(out, DiffKind::Extra),
                    (None, None) => {}
                }
                at.leave_position();
            }
            at.template.pop();
        }
        (Value::Number(x), Value::Number(y)) => {
            let equal = x == y
                || match (x.as_f64(), y.as_f64()) {
                    (Some(fx), Some(fy)) => rules
                        .tolerance
                        .iter()
                        .any(|(p, tol)| p.matches(&at.path) && (fx - fy).abs() <= *tol),
                    _ => false,
                };
            if !equal {
                at.push(out, DiffKind::Value);
            }
        }
        _ if std::mem::discriminant(a) != std::mem::discriminant(b) => at.push(out, DiffKind::Type),
        _ if a != b => at.push(out, DiffKind::Value),
        _ => {}
    }
}

/// The differences between element `i` of the primary's array and element `j` of the
/// candidate's, without recording them.
/// `walk` leaves the cursor as it found it, so no copy is needed.
fn probe(
    a: &Value,
    b: &Value,
    rules: &Rules,
    at: &mut Cursor,
    i: usize,
    j: usize,
) -> Vec<Difference> {
    let mut d = Vec::new();
    at.positions(i, j);
    walk(a, b, rules, at, &mut d);
    at.leave_position();
    d
}

/// Arrays compared as multisets. Elements with an equal counterpart pair up first. What is left
/// pairs by resemblance (each leftover primary element with the leftover candidate element it
/// differs from least, when they share at least one field), so a changed field is reported at
/// its own path (`/hits/3/price`, the primary's position, with the candidate's position beside
/// it) instead of as a whole element without a match. What still has no partner is `Unmatched`
/// (at the primary's position) or `Extra` (at the candidate's).
fn unordered(x: &[Value], y: &[Value], rules: &Rules, at: &mut Cursor, out: &mut Vec<Difference>) {
    let mut used = vec![false; y.len()];
    let mut left = Vec::new();
    at.template.push("*".to_owned());
    for (i, va) in x.iter().enumerate() {
        let equal =
            (0..y.len()).find(|&j| !used[j] && probe(va, &y[j], rules, at, i, j).is_empty());
        match equal {
            Some(j) => used[j] = true,
            None => left.push(i),
        }
    }
    for i in left {
        let best = (0..y.len())
            .filter(|&j| !used[j] && shares_a_field(&x[i], &y[j]))
            .map(|j| (probe(&x[i], &y[j], rules, at, i, j), j))
            .min_by_key(|(d, _)| d.len());
        match best {
            Some((d, j)) => {
                used[j] = true;
                out.extend(d);
            }
            None => {
                at.positions(i, i);
                at.push(out, DiffKind::Unmatched);
                at.leave_position();
            }
        }
    }
    for (j, _) in used.iter().enumerate().filter(|(_, u)| !**u) {
        at.positions(j, j);
        at.push(out, DiffKind::Extra);
        at.leave_position();
    }
    at.template.pop();
}

/// Two objects with at least one key whose values are equal: plausibly the same item changed.
fn shares_a_field(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.iter().any(|(k, v)| y.get(k) == Some(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules(ignore: &[&str], unordered: &[&str], tolerance: &[(&str, f64)]) -> Rules {
        let p = |s: &&str| PathPattern::parse(s).unwrap();
        Rules {
            ignore: ignore.iter().map(p).collect(),
            unordered: unordered.iter().map(p).collect(),
            tolerance: tolerance
                .iter()
                .map(|(s, t)| (PathPattern::parse(s).unwrap(), *t))
                .collect(),
        }
    }

    fn found(d: &[Difference]) -> Vec<(&str, &str, DiffKind)> {
        d.iter()
            .map(|d| (d.path.as_str(), d.template.as_str(), d.kind))
            .collect()
    }

    #[test]
    fn equal_answers_have_no_differences() {
        let v = json!({"a": [1, {"b": null}], "c": "x"});
        assert!(compare(&v, &v, &Rules::default()).is_empty());
    }

    #[test]
    fn differences_are_located_and_templated() {
        let a = json!({"items": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "total": 2, "gone": true});
        let b = json!({"items": [{"id": 1, "name": "a"}, {"id": 2, "name": "B"}], "total": "2", "new": 1});
        assert_eq!(
            found(&compare(&a, &b, &Rules::default())),
            vec![
                ("/gone", "/gone", DiffKind::Missing),
                ("/items/1/name", "/items/*/name", DiffKind::Value),
                ("/total", "/total", DiffKind::Type),
                ("/new", "/new", DiffKind::Extra),
            ]
        );
    }

    #[test]
    fn ignored_paths_do_not_count() {
        let a = json!({"items": [{"id": 1, "updated_at": "x"}], "at": 1});
        let b = json!({"items": [{"id": 1, "updated_at": "y"}]});
        let r = rules(&["/items/*/updated_at", "/at"], &[], &[]);
        assert!(compare(&a, &b, &r).is_empty());
        let d = compare(&a, &b, &rules(&["/items/*/updated_at"], &[], &[]));
        assert_eq!(found(&d), vec![("/at", "/at", DiffKind::Missing)]);
    }

    #[test]
    fn unordered_arrays_match_as_multisets() {
        let r = rules(&["/hits/*/score"], &["/hits"], &[]);
        let a =
            json!({"hits": [{"id": 1, "score": 3}, {"id": 2, "score": 2}, {"id": 2, "score": 1}]});
        let b =
            json!({"hits": [{"id": 2, "score": 9}, {"id": 1, "score": 8}, {"id": 2, "score": 7}]});
        assert!(compare(&a, &b, &r).is_empty());
        let c = json!({"hits": [{"id": 2}, {"id": 1}, {"id": 3}]});
        // The leftover pair shares no field: one unmatched, one extra.
        assert_eq!(
            found(&compare(&a, &c, &r)),
            vec![
                ("/hits/2", "/hits/*", DiffKind::Unmatched),
                ("/hits/2", "/hits/*", DiffKind::Extra),
            ]
        );
        // A changed field of an element that moved is reported at its own path (the primary's
        // position).
        let p =
            json!({"hits": [{"id": 1, "price": 5}, {"id": 2, "price": 7}, {"id": 3, "price": 9}]});
        let q =
            json!({"hits": [{"id": 3, "price": 9}, {"id": 2, "price": 8}, {"id": 1, "price": 5}]});
        assert_eq!(
            found(&compare(&p, &q, &r)),
            vec![("/hits/1/price", "/hits/*/price", DiffKind::Value)]
        );
        // ... and says where the candidate's side of it is.
        let moved = compare(&p, &q, &r);
        assert_eq!(moved[0].candidate_path, None, "same position on both sides");
        let q2 =
            json!({"hits": [{"id": 2, "price": 8}, {"id": 3, "price": 9}, {"id": 1, "price": 5}]});
        let moved = compare(&p, &q2, &r);
        assert_eq!(
            found(&moved),
            vec![("/hits/1/price", "/hits/*/price", DiffKind::Value)]
        );
        assert_eq!(moved[0].candidate_path.as_deref(), Some("/hits/0/price"));
        // Without the rule, order matters.
        assert!(!compare(&a, &b, &rules(&["/hits/*/score"], &[], &[])).is_empty());
    }

    #[test]
    fn numbers_within_tolerance_are_equal() {
        let r = rules(&[], &[], &[("/price", 0.5)]);
        assert!(compare(&json!({"price": 10.0}), &json!({"price": 10.4}), &r).is_empty());
        assert_eq!(
            compare(&json!({"price": 10}), &json!({"price": 11}), &r).len(),
            1
        );
        assert!(
            compare(&json!(1), &json!(1.0), &Rules::default()).len() == 1,
            "1 and 1.0 differ as JSON"
        );
    }

    #[test]
    fn rules_that_match_no_path_are_found() {
        let r = rules(&["/hits/*/score"], &["/hits"], &[("/hits/*/price", 0.5)]);
        assert_eq!(
            r.names(),
            [
                "ignore /hits/*/score",
                "unordered /hits",
                "tolerance /hits/*/price"
            ]
        );
        let mut seen = vec![false; 3];
        r.mark_seen(
            &json!({"hits": [{"score": 1, "price_cents": 5}]}),
            &mut seen,
        );
        assert_eq!(seen, [true, true, false]);
    }

    #[test]
    fn patterns_are_checked() {
        assert!(PathPattern::parse("items").is_err());
        assert!(PathPattern::parse("/a//b").is_err());
        assert_eq!(PathPattern::parse("/").unwrap(), PathPattern(vec![]));
        let r = rules(&["/"], &[], &[]);
        assert!(
            compare(&json!(1), &json!("x"), &r).is_empty(),
            "/ ignores the whole body"
        );
    }
}
