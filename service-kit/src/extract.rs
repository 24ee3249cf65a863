//! Extractors whose rejections speak the catalog API's error format.
//!
//! axum's own `Json` and `Query` reject with plain-text bodies and statuses that differ from the
//! contract (a wrong field type is a 422 with axum's message, for instance). These extractors
//! do only the *syntactic* part: is this JSON, is it an object, is the query string decodable,
//! is the body within the size limit. Field semantics are left to [`crate::validate`] so that a
//! 422 can name every bad field at once.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use futures::StreamExt;
use serde_json::{Map, Value};

use crate::error::ErrorResponse;
use crate::validate::{Fields, Params};

/// Largest JSON body any service accepts; larger bodies get a 413.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// How much of an oversized body is read and thrown away before answering 413, and for how
/// long. Closing a socket that still holds unread data makes the kernel send a reset, which
/// can destroy the 413 before the client reads it; draining a bounded amount first (what
/// nginx calls a lingering close) lets ordinary clients see the error. Bodies declared larger
/// than this are refused without draining.
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads a body of at most `limit` bytes; see [`DRAIN_LIMIT`] for what happens past it.
pub async fn read_limited(req: Request, limit: usize) -> Result<Bytes, ErrorResponse> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(DRAIN_LIMIT)) {
        return Err(ErrorResponse::payload_too_large());
    }
    let mut stream = req.into_body().into_data_stream();
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| ErrorResponse::bad_request("could not read the request body"))?;
        if buf.len() + chunk.len() > limit {
            let mut seen = buf.len() + chunk.len();
            let drain = async {
                while let Some(Ok(chunk)) = stream.next().await {
                    seen += chunk.len();
                    if seen > limit.saturating_add(DRAIN_LIMIT) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
            return Err(ErrorResponse::payload_too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// A request body that is a JSON object.
#[derive(Debug)]
pub struct JsonObject(pub Map<String, Value>);

impl JsonObject {
    pub fn fields(&self) -> Fields<'_> {
        Fields::new(&self.0)
    }
}

fn is_json_content_type(value: &str) -> bool {
    let mime = value.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
        || (mime.len() > 5
            && mime[..mime.len() - 5]
                .to_ascii_lowercase()
                .starts_with("application/")
            && mime[mime.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// Middleware: reads every request body (at most [`MAX_JSON_BODY`]) before routing.
///
/// A handler may answer without reading the body (a 401 before the body is looked at, a 415).
/// Unread bytes make the HTTP/1 connection unusable, so the server closes it, and a client that
/// already sent its next request on that keep-alive connection sees it fail. With the body read
/// up front, every answer leaves the connection clean. The bodies these services accept are
/// small JSON documents, so holding one in memory is what a JSON extractor would do anyway.
pub async fn buffer_body(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let has_body = req.headers().contains_key(CONTENT_LENGTH)
        || req
            .headers()
            .contains_key(axum::http::header::TRANSFER_ENCODING);
    if !has_body {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match read_limited(Request::from_parts(parts.clone(), body), MAX_JSON_BODY).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ErrorResponse;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        // Requiring the JSON content type is also what keeps a cross-site HTML form from
        // posting to a cookie-authenticated endpoint without a CORS preflight.
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json_content_type(content_type) {
            return Err(ErrorResponse::unsupported_media_type());
        }
        // Normally already in memory (see [`buffer_body`]); read_limited keeps the limit even
        // on a router without that layer.
        let bytes = read_limited(req, MAX_JSON_BODY).await?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(ErrorResponse::bad_request(
                "request body must be a JSON object",
            )),
            Err(e) => Err(ErrorResponse::bad_request(format!("malformed JSON: {e}"))),
        }
    }
}

/// The decoded query string; a parameter given twice is refused (400) rather than silently
/// resolved one way or the other.
#[derive(Debug, Default)]
pub struct QueryParams(pub HashMap<String, String>);

impl QueryParams {
    pub fn params(self) -> Params {
        Params::new(self.0)
    }

    pub fn parse(query: &str) -> Result<Self, ErrorResponse> {
        // serde_urlencoded decodes leniently: `%ZZ` stays as it is and bytes that are not UTF-8
        // become U+FFFD. A query string that is not well formed is the client's mistake (400).
        if !well_formed_escapes(query) {
            return Err(ErrorResponse::bad_request(
                "malformed query string: '%' must be followed by two hex digits",
            ));
        }
        if !decodes_to_utf8(query) {
            return Err(ErrorResponse::bad_request(
                "malformed query string: escapes must decode to UTF-8",
            ));
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| ErrorResponse::bad_request("malformed query string"))?;
        let mut map = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            if map.contains_key(&k) {
                return Err(ErrorResponse::bad_request(format!(
                    "query parameter {k} is given more than once"
                )));
            }
            map.insert(k, v);
        }
        Ok(QueryParams(map))
    }
}

/// Every `%` is followed by two hex digits.
fn well_formed_escapes(query: &str) -> bool {
    let b = query.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        match (b.get(i + 1), b.get(i + 2)) {
            (Some(x), Some(y)) if x.is_ascii_hexdigit() && y.is_ascii_hexdigit() => i += 3,
            _ => return false,
        }
    }
    true
}

/// Each name and value percent-decodes to UTF-8 (the escapes are well formed).
fn decodes_to_utf8(query: &str) -> bool {
    fn hex(d: u8) -> u8 {
        (d as char).to_digit(16).unwrap_or(0) as u8
    }
    query.split(['&', '=']).all(|part| {
        let b = part.as_bytes();
        let mut bytes = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                bytes.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
                i += 3;
            } else {
                bytes.push(b[i]);
                i += 1;
            }
        }
        std::str::from_utf8(&bytes).is_ok()
    })
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ErrorResponse;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::parse(parts.uri.query().unwrap_or(""))
    }
}

/// Parses a numeric id from a path segment. Anything that is not a positive integer cannot name
/// an existing row, so callers answer 404 for `None`.
pub fn parse_id(segment: &str) -> Option<i64> {
    if segment.is_empty() || segment.len() > 18 || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok().filter(|id| *id > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/merge-patch+json"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/x-www-form-urlencoded"));
        assert!(!is_json_content_type(""));
    }

    #[test]
    fn duplicate_query_parameters_are_refused() {
        assert!(QueryParams::parse("page=1&page=2").is_err());
        for bad in ["category=%ZZ", "q=%", "q=%4", "q=a%2", "q=%FF", "q=%C3"] {
            assert!(QueryParams::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(QueryParams::parse("q=100%25").unwrap().0["q"], "100%");
        let q = QueryParams::parse("q=caf%C3%A9+noir&page=2").unwrap();
        assert_eq!(q.0["q"], "café noir");
    }

    #[test]
    fn ids() {
        assert_eq!(parse_id("42"), Some(42));
        assert_eq!(parse_id("0"), None);
        assert_eq!(parse_id("-1"), None);
        assert_eq!(parse_id("4a"), None);
        assert_eq!(parse_id("99999999999999999999"), None);
    }
}
