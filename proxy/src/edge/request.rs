//! What the edge requires of a request before any pipeline forwards it: a request line and a
//! `Host` it can trust, and a body whose length cannot be read two ways.
//!
//! The connection loop reads every head whole ([`super::head`]) and asks [`inspect`] about it
//! before it chooses a pipeline, so the fast path and Pingora's pipeline refuse exactly the
//! same requests, with the same answer. A strict proxy refuses what its upstreams could read
//! differently from it (RFC 9112 §3.2, §6.3; RFC 9110 §8.6):
//! - a request-target that is not origin-form (`/path?query`), absolute-form (`http://host/path`)
//!   or `*` for `OPTIONS`: `x/api/admin` or `@evil/api/admin` would otherwise be forwarded as a
//!   request for `/`;
//! - no `Host` in an HTTP/1.1 request, more than one, or one that is not `host[:port]`
//!   (`user@evil`, `a b`, empty, `[::1`);
//! - a `Content-Length` that is a list or repeated (`1,1`, two equal lines), or one beside
//!   `Transfer-Encoding`: RFC 9110 §8.6 forbids forwarding either.
//!
//! It also says how much of a body the edge reads before choosing a pipeline
//! ([`Inspected::body_still_coming`]): a small `Content-Length` body is read whole with the head,
//! whichever pipeline then serves it. Many clients write a request's head and body separately
//! (Java's `HttpURLConnection` and `java.net.http.HttpClient` both do: two `write`s, seen with
//! `strace`), so the body often arrives a moment after the head; read at the edge, the request is
//! the same whole request on both pipelines, and the fast path can take it.

use std::borrow::Cow;

use super::failure::Failure;
use super::headers::{Headers, tokens};

/// The request line and headers as [`inspect`] found them acceptable.
#[derive(Debug)]
pub(crate) struct Inspected<'a> {
    /// The path part of the target (origin-form; the path of an absolute-form target; `*`).
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    /// The host the request is for: the target's authority (absolute-form), else `Host`.
    pub(crate) host: Option<&'a [u8]>,
    /// The target was absolute-form: the edge rewrites the head ([`origin_form`]) before a
    /// pipeline sees it.
    pub(crate) host_from_target: bool,
    pub(crate) body: Body,
    /// The request has an `Expect` header: a client that sent `100-continue` waits for an
    /// interim answer before its body, so the edge never waits for that body itself.
    pub(crate) expect: bool,
}

/// The largest body the edge reads whole with the head (see [`Inspected::body_still_coming`]);
/// larger ones stream through Pingora's pipeline as they arrive. As nginx's
/// `client_body_buffer_size` on 64-bit machines: small JSON writes fit, uploads do not.
pub(crate) const SMALL_BODY: u64 = 16 * 1024;

impl Inspected<'_> {
    /// How many bytes of the request (head and body) the edge holds before choosing a
    /// pipeline, when that is more than the `in_hand` bytes after the head it already has: a
    /// `Content-Length` body of at most [`SMALL_BODY`] bytes, unless the client waits for
    /// `100 Continue` before sending it. `None`: what is in hand is enough (no body, a body in
    /// hand, chunked, large or expecting), and the request goes on as it is.
    ///
    /// The rest is read within the head's own deadline (`request_head_timeout` from its first
    /// byte, [`super::head::read_rest`]), else 408, on both pipelines alike.
    pub(crate) fn body_still_coming(&self, head_end: usize, in_hand: usize) -> Option<usize> {
        match self.body {
            Body::Length(n) if n > in_hand as u64 && n <= SMALL_BODY && !self.expect => {
                Some(head_end + n as usize)
            }
            _ => None,
        }
    }
}

/// How the request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    None,
    Length(u64),
    Chunked,
}

/// Checks a parsed request head (see the module docs). `Err`: the edge answers it (400) and
/// forwards nothing.
pub(crate) fn inspect<'a>(req: &httparse::Request<'_, 'a>) -> Result<Inspected<'a>, Failure> {
    let bad = |why: &'static str| Err(Failure::BadRequest(Cow::Borrowed(why)));
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return bad("malformed request line");
    };
    let headers: &[httparse::Header<'a>] = req.headers;
    let mut hosts = values(headers, "host");
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return bad("more than one Host header");
    }
    if version == 1 && host_header.is_none() {
        return bad("an HTTP/1.1 request needs a Host header");
    }
    if host_header.is_some_and(|h| !valid_host(h)) {
        return bad("the Host header is not host[:port]");
    }
    let (authority, path_and_query) = match target_form(method, target) {
        Some(parts) => parts,
        None => return bad("the request target is not origin-form, absolute-form or *"),
    };
    if authority.is_some_and(|a| !valid_host(a)) {
        return bad("the request target's authority is not host[:port]");
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    Ok(Inspected {
        path,
        query,
        host: authority.or(host_header),
        host_from_target: authority.is_some(),
        body: body(headers)?,
        expect: values(headers, "expect").next().is_some(),
    })
}

/// The head of a request with an absolute-form target, rewritten as origin-form with its
/// authority as `Host` (RFC 9112 §3.2.2: the target's authority wins over any `Host`), so that
/// every pipeline and the mirror see one form only.
pub(crate) fn origin_form(req: &httparse::Request<'_, '_>, inspected: &Inspected<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(inspected.path.as_bytes());
    if let Some(q) = inspected.query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out.extend_from_slice(if req.version == Some(0) {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for h in req
        .headers
        .iter()
        .filter(|h| !h.name.eq_ignore_ascii_case("host"))
    {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Host: ");
    out.extend_from_slice(inspected.host.unwrap_or_default());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// The values of header `name`, borrowed from the head's buffer (not from the header array).
fn values<'h, 'a>(
    headers: &'h [httparse::Header<'a>],
    name: &'h str,
) -> impl Iterator<Item = &'a [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The authority (absolute-form) and the path-and-query of a request target; `None` when the
/// target has none of the forms a server accepts (RFC 9112 §3.2).
fn target_form<'a>(method: &str, target: &'a str) -> Option<(Option<&'a [u8]>, &'a str)> {
    if target == "*" {
        return (method == "OPTIONS").then_some((None, target));
    }
    if target.starts_with('/') {
        return (!target.contains('#')).then_some((None, target));
    }
    let scheme_end = target.find("://")?;
    let scheme = &target[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
        // `http://host?q`: an empty path is `/` (RFC 9112 §3.2.2).
        Some(_) | None => return None,
    };
    if authority.is_empty() || path.contains('#') {
        return None;
    }
    Some((Some(authority.as_bytes()), path))
}

/// `uri-host [":" port]` (RFC 9110 §7.2): a reg-name, IPv4 address or IP-literal, no userinfo.
pub(crate) fn valid_host(h: &[u8]) -> bool {
    let port = if h.first() == Some(&b'[') {
        let Some(close) = h.iter().position(|b| *b == b']') else {
            return false;
        };
        let literal = &h[1..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        match &h[close + 1..] {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return false,
        }
    } else {
        let (host, port) = match h.iter().rposition(|b| *b == b':') {
            Some(i) => (&h[..i], Some(&h[i + 1..])),
            None => (h, None),
        };
        if host.is_empty() || !host.iter().all(|&b| reg_name(b)) {
            return false;
        }
        port
    };
    port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit))
}

/// The body's framing; `Err` for a length that could be read two ways.
fn body(headers: &[httparse::Header<'_>]) -> Result<Body, Failure> {
    let bad = |why: &'static str| Err(Failure::BadRequest(Cow::Borrowed(why)));
    let mut lengths = headers.values("content-length");
    let length = lengths.next();
    if lengths.next().is_some() {
        return bad("more than one Content-Length header");
    }
    let mut codings = headers.values("transfer-encoding").peekable();
    if codings.peek().is_some() {
        if length.is_some() {
            return bad("Content-Length beside Transfer-Encoding");
        }
        let last = codings.flat_map(tokens).last();
        // A request's body must end where its framing says: chunked last (RFC 9112 §6.3).
        return match last {
            Some(t) if t.eq_ignore_ascii_case(b"chunked") => Ok(Body::Chunked),
            _ => bad("Transfer-Encoding does not end in chunked"),
        };
    }
    match length {
        None => Ok(Body::None),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .map(Body::Length)
            .map_or_else(|| bad("Content-Length is not one number"), Ok),
    }
}

/// A byte RFC 3986's `reg-name` may hold: unreserved, sub-delims, or `%` of an escape.
pub(super) fn reg_name(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Path, query, host and body framing of an accepted request.
    type Parts = (String, Option<String>, Option<Vec<u8>>, Body);

    fn inspect_raw(raw: &[u8]) -> Result<Parts, String> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(raw).map_err(|e| e.to_string())?;
        inspect(&req)
            .map(|i| {
                (
                    i.path.to_owned(),
                    i.query.map(str::to_owned),
                    i.host.map(<[u8]>::to_vec),
                    i.body,
                )
            })
            .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn a_small_body_still_coming_is_waited_for_unless_the_client_expects_100() {
        let coming = |raw: &str, in_hand: usize| {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            let end = match req.parse(raw.as_bytes()).unwrap() {
                httparse::Status::Complete(end) => end,
                httparse::Status::Partial => panic!("partial head"),
            };
            inspect(&req).unwrap().body_still_coming(end, in_hand)
        };
        let post = |length: u64, extra: &str| {
            format!("POST /o HTTP/1.1\r\nHost: a\r\nContent-Length: {length}\r\n{extra}\r\n")
        };
        let head = post(430, "");
        // The head's length plus the body's: everything up to there is this request's.
        assert_eq!(coming(&head, 0), Some(head.len() + 430));
        assert_eq!(coming(&head, 429), Some(head.len() + 430));
        assert_eq!(coming(&head, 430), None, "in hand");
        assert_eq!(
            coming(&head, 900),
            None,
            "in hand, the next request after it"
        );
        assert!(coming(&post(SMALL_BODY, ""), 0).is_some());
        assert_eq!(coming(&post(SMALL_BODY + 1, ""), 0), None, "streams");
        assert_eq!(coming(&post(10, "Expect: 100-continue\r\n"), 0), None);
        assert_eq!(coming(&post(0, ""), 0), None);
        let chunked = "POST /o HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(coming(chunked, 0), None);
        assert_eq!(coming("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0), None);
    }

    #[test]
    fn targets_must_have_a_form_a_server_accepts() {
        let ok = |t: &str, m: &str| {
            inspect_raw(format!("{m} {t} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        };
        assert_eq!(ok("/x?y=1", "GET").unwrap().0, "/x");
        let abs = ok("http://shop.example:8080/api?q", "GET").unwrap();
        assert_eq!(
            (abs.0.as_str(), abs.2.as_deref()),
            ("/api", Some(&b"shop.example:8080"[..]))
        );
        assert!(ok("*", "OPTIONS").is_ok());
        for bad in [
            "x/api/admin",
            "@evil/api/admin",
            "%2fapi/admin",
            "*",
            "ftp://a/x",
            "http:///x",
            "http://a",
        ] {
            assert!(ok(bad, "GET").is_err(), "{bad}");
        }
    }

    #[test]
    fn host_is_exactly_one_host_and_port() {
        for good in ["a", "shop.example:80", "127.0.0.1:1", "[::1]:8080", "[::1]"] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "user@evil",
            "a b",
            "[::1",
            "a:port",
            "a:123456",
            "[::1]x",
            "a/b",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
        assert!(inspect_raw(b"GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(inspect_raw(b"GET / HTTP/1.0\r\n\r\n").is_ok());
        assert!(inspect_raw(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n").is_err());
    }

    #[test]
    fn a_length_that_reads_two_ways_is_refused() {
        let with =
            |h: &str| inspect_raw(format!("POST / HTTP/1.1\r\nHost: a\r\n{h}\r\n\r\n").as_bytes());
        assert_eq!(with("Content-Length: 5").unwrap().3, Body::Length(5));
        assert_eq!(
            with("Transfer-Encoding: gzip, chunked").unwrap().3,
            Body::Chunked
        );
        for bad in [
            "Content-Length: 1,1",
            "Content-Length: 1\r\nContent-Length: 1",
            "Content-Length: +1",
            "Content-Length: 1\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked, gzip",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }
}
