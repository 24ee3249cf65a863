//! Comparing two whole answers: status, the route's chosen headers, and the body. JSON bodies are
//! compared field by field ([`super::compare`]); anything else byte for byte.
//!
//! The differences that are not JSON fields have names that cannot be JSON pointers (those always
//! start with `/`): `status`, `header:<name>` and `body` (bytes differ, or one side is not JSON).

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use serde_json::Value;

use super::compare::{DiffKind, Difference, Rules, compare};

/// One answer, as received (the body possibly cut at the route's cap: see `complete`).
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

fn named(name: String, kind: DiffKind) -> Difference {
    Difference {
        path: name.clone(),
        candidate_path: None,
        template: name,
        kind,
    }
}

/// A body as JSON, when it is JSON. Empty bodies are not JSON (they compare as bytes).
pub(crate) fn json_of(body: &[u8]) -> Option<Value> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if !matches!(first, b'{' | b'[' | b'"') && !first.is_ascii_digit() && !b"-tfn".contains(first) {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// The differences between `primary` and `candidate`, statuses and headers first.
pub(crate) fn diff(
    primary: &Answer,
    candidate: &Answer,
    headers: &[HeaderName],
    rules: &Rules,
) -> Vec<Difference> {
    let mut out = Vec::new();
    if primary.status != candidate.status {
        out.push(named("status".into(), DiffKind::Value));
    }
    for h in headers {
        let (a, b) = (primary.headers.get(h), candidate.headers.get(h));
        let kind = match (a, b) {
            (Some(x), Some(y)) if x == y => continue,
            (None, None) => continue,
            (Some(_), Some(_)) => DiffKind::Value,
            (Some(_), None) => DiffKind::Missing,
            (None, Some(_)) => DiffKind::Extra,
        };
        out.push(named(format!("header:{h}"), kind));
    }
    // Equal bytes are equal under any rules (rules only ever excuse differences): the common
    // case needs no parsing.
    if primary.body == candidate.body {
        return out;
    }
    match (json_of(&primary.body), json_of(&candidate.body)) {
        (Some(a), Some(b)) => out.extend(compare(&a, &b, rules)),
        (Some(_), None) | (None, Some(_)) => out.push(named("body".into(), DiffKind::Type)),
        (None, None) => out.push(named("body".into(), DiffKind::Value)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, ctype: &str, body: &str) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", ctype.parse().unwrap());
        headers.insert("date", "whenever".parse().unwrap());
        Answer {
            status,
            headers,
            body: Bytes::from(body.to_owned()),
        }
    }

    fn names(d: &[Difference]) -> Vec<&str> {
        d.iter().map(|d| d.path.as_str()).collect()
    }

    #[test]
    fn status_chosen_headers_and_fields() {
        let ct = [http::header::CONTENT_TYPE];
        let a = answer(200, "application/json", r#"{"a":1,"b":[1,2]}"#);
        let same = answer(200, "application/json", r#"{ "b": [1, 2], "a": 1 }"#);
        assert!(
            diff(&a, &same, &ct, &Rules::default()).is_empty(),
            "formatting and key order do not count"
        );
        let b = answer(404, "text/plain", r#"{"a":2,"b":[1,2]}"#);
        assert_eq!(
            names(&diff(&a, &b, &ct, &Rules::default())),
            ["status", "header:content-type", "/a"]
        );
        // `date` is not a chosen header.
        assert!(diff(&a, &same, &[], &Rules::default()).is_empty());
    }

    #[test]
    fn other_bodies_compare_as_bytes() {
        let a = answer(200, "text/html", "<p>hi</p>");
        assert!(diff(&a, &a.clone(), &[], &Rules::default()).is_empty());
        let b = answer(200, "text/html", "<p>ho</p>");
        let d = diff(&a, &b, &[], &Rules::default());
        assert_eq!((d[0].path.as_str(), d[0].kind), ("body", DiffKind::Value));
        let j = answer(200, "text/html", "{}");
        let d = diff(&a, &j, &[], &Rules::default());
        assert_eq!((d[0].path.as_str(), d[0].kind), ("body", DiffKind::Type));
        assert_eq!(json_of(b"  [1]"), Some(serde_json::json!([1])));
        assert_eq!(json_of(b""), None);
        assert_eq!(json_of(b"hello"), None);
    }
}
