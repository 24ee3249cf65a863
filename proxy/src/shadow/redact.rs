//! Redaction of what a stored mismatch sample must never hold: credentials in headers and
//! secret-looking fields in JSON bodies. Samples are shown in the admin API, in reports and
//! possibly shared through Redis, so they are redacted before they are stored, not when shown.

use serde_json::Value;

pub(crate) const REDACTED: &str = "[redacted]";

/// Headers whose values are credentials.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
    "x-csrf-token",
];

/// Substrings of JSON field names (lower-cased) whose values are treated as secrets.
const SECRET_FIELDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "sid",
    "session",
    "cookie",
    "authorization",
    "credit_card",
    "card_number",
    "cvv",
];

/// True when a header's value must not be stored.
pub(crate) fn is_secret_header(name: &str) -> bool {
    SECRET_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

fn is_secret_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    // `sid` only as a whole word, so `side` or `considered` are kept.
    SECRET_FIELDS.iter().any(|s| {
        if *s == "sid" {
            n == "sid" || n.ends_with("_sid") || n.starts_with("sid_")
        } else {
            n.contains(s)
        }
    })
}

/// Replaces the value of every secret-looking field, at any depth.
pub(crate) fn redact_json(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if is_secret_field(k) {
                    *val = Value::String(REDACTED.to_owned());
                } else {
                    redact_json(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

/// Headers as stored in a sample: secrets replaced, names lower-cased.
pub(crate) fn redact_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(k, v)| {
            let value = if is_secret_header(k) { REDACTED } else { v };
            (k.to_ascii_lowercase(), value.to_owned())
        })
        .collect()
}

/// A request target with the values of secret-looking query parameters replaced
/// (`/login?token=abc&next=/` becomes `/login?token=[redacted]&next=/`).
pub(crate) fn redact_target(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_field(k) => format!("{k}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", params.join("&"))
}

/// The secret values a request carries: cookie values, credentials in headers, and secret-named
/// query parameters. An answer may echo them anywhere (a redirect target, an echoed URL, a debug
/// field), so a stored sample has every occurrence scrubbed with [`scrub`].
pub(crate) fn secrets_of<'a>(
    target: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((_, query)) = target.split_once('?') {
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=')
                && is_secret_field(k)
            {
                out.push(v.to_owned());
            }
        }
    }
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("cookie") {
            for c in value.split(';') {
                if let Some((_, v)) = c.split_once('=') {
                    out.push(v.trim().to_owned());
                }
            }
        } else if is_secret_header(name) {
            out.push(value.to_owned());
            if let Some((_, credential)) = value.split_once(' ') {
                out.push(credential.to_owned());
            }
        }
    }
    // Very short values would scrub innocent text; they are too short to be credentials.
    out.retain(|s| s.len() >= 6);
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// Replaces every occurrence of every secret in the strings of `v`.
pub(crate) fn scrub(v: &mut Value, secrets: &[String]) {
    if secrets.is_empty() {
        return;
    }
    match v {
        Value::String(s) => scrub_text(s, secrets),
        Value::Object(map) => map.values_mut().for_each(|x| scrub(x, secrets)),
        Value::Array(items) => items.iter_mut().for_each(|x| scrub(x, secrets)),
        _ => {}
    }
}

/// Replaces every occurrence of every secret in `s`.
pub(crate) fn scrub_text(s: &mut String, secrets: &[String]) {
    for secret in secrets {
        if s.contains(secret.as_str()) {
            *s = s.replace(secret.as_str(), REDACTED);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_are_replaced_at_any_depth() {
        let mut v = json!({
            "user": {"email": "a@b.co", "password": "hunter2", "session_id": "abc"},
            "items": [{"access_token": "t", "side": "left"}],
            "sid": "s", "considered": true, "Api_Key": "k"
        });
        redact_json(&mut v);
        assert_eq!(
            v,
            json!({
                "user": {"email": "a@b.co", "password": REDACTED, "session_id": REDACTED},
                "items": [{"access_token": REDACTED, "side": "left"}],
                "sid": REDACTED, "considered": true, "Api_Key": REDACTED
            })
        );
    }

    #[test]
    fn secret_query_values_are_replaced() {
        assert_eq!(
            redact_target("/login?token=abc&next=/x&api_key=k"),
            format!("/login?token={REDACTED}&next=/x&api_key={REDACTED}")
        );
        assert_eq!(redact_target("/api/search?q=lamp"), "/api/search?q=lamp");
        assert_eq!(redact_target("/plain"), "/plain");
    }

    #[test]
    fn echoed_secrets_are_scrubbed_anywhere() {
        let secrets = secrets_of(
            "/x?token=tok-123456&q=lamp",
            [
                ("Cookie", "sid=sess-abcdef; theme=dark"),
                ("Authorization", "Bearer bear-999999"),
            ],
        );
        assert_eq!(secrets.len(), 4, "{secrets:?}");
        let mut v = json!({"echo": "/x?token=tok-123456", "note": ["hi sess-abcdef", "bear-999999"], "theme": "dark"});
        scrub(&mut v, &secrets);
        assert_eq!(
            v,
            json!({"echo": format!("/x?token={REDACTED}"), "note": [format!("hi {REDACTED}"), REDACTED], "theme": "dark"})
        );
    }

    #[test]
    fn credential_headers_are_replaced() {
        let h = redact_headers([
            ("Cookie", "sid=abc"),
            ("Set-Cookie", "sid=def; HttpOnly"),
            ("Authorization", "Bearer x"),
            ("Content-Type", "application/json"),
        ]);
        assert_eq!(
            h,
            vec![
                ("cookie".to_owned(), REDACTED.to_owned()),
                ("set-cookie".to_owned(), REDACTED.to_owned()),
                ("authorization".to_owned(), REDACTED.to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ]
        );
    }
}
