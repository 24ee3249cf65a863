//! The edge's header rules: which of the client's request headers travel on, which of the
//! upstream's response headers reach the client, and what Banyan itself says on both.
//!
//! Every pipeline applies these and only these: the fast path while it copies a parsed head into
//! its output buffer, Pingora's pipeline on its `RequestHeader`/`ResponseHeader`, and the shadow
//! mirror on its copy of the request. Each asks [`request_header`] or [`response_header`] about
//! every header it holds and writes what [`request_additions`] and [`response_additions`] give;
//! none of them keeps a list of its own, so the pipelines cannot come to disagree about a header.
//!
//! Why these rules:
//! - hop-by-hop headers ([`HOP_BY_HOP`], and any the `Connection` header names, RFC 9110 §7.6.1)
//!   describe one connection and never cross the proxy; Banyan relays no protocol upgrades, so
//!   `Upgrade` is one of them;
//! - the framing headers (`Content-Length`, `Transfer-Encoding`, `Expect`) belong to the body as
//!   the pipeline relays it: a pipeline that relays the body as it came keeps them, the mirror,
//!   which sends its own copy of the body, drops them;
//! - what only the edge may say ([`EDGE_ONLY`]): a client never chooses its forwarded address,
//!   host or scheme, its request id's acceptance, its `Via`, or that it is shadow traffic; these
//!   are replaced, never passed through (a client's `X-Request-Id` is kept only when
//!   [`acceptable_request_id`] says so, and then as Banyan's own).

use std::borrow::Cow;
use std::io::Write;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

/// What Banyan adds to `Via` (RFC 9110 §7.6.3).
pub(crate) const VIA_VALUE: &str = "1.1 banyan";
pub(crate) const REQUEST_ID: &str = "x-request-id";
/// Marks a request as shadow traffic (`candidate` or `second-primary`); only Banyan sets it.
pub(crate) const SHADOW_MARKER: &str = "x-banyan-shadow";
/// The debug headers a table may turn on (`[proxy] debug_headers`).
pub(crate) const DEBUG_ROUTE: &str = "x-banyan-route";
pub(crate) const DEBUG_UPSTREAM: &str = "x-banyan-upstream";
/// Why the route's fallback served the answer ([`super::fallback::Reason`]), with the debug headers.
pub(crate) const DEBUG_FALLBACK: &str = "x-banyan-fallback";

/// Headers that describe one connection and never cross the proxy, in either direction.
pub(crate) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
];

/// Headers that frame the body: kept by a pipeline that relays the body as it came.
pub(crate) const FRAMING: &[&str] = &["content-length", "transfer-encoding", "expect"];

/// Request headers only the edge sets (the client's are dropped, then Banyan's added).
pub(crate) const EDGE_ONLY: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    REQUEST_ID,
    "via",
    SHADOW_MARKER,
];

/// Response headers the edge sets on every answer (an upstream's are replaced).
const EDGE_ONLY_RESPONSE: &[&str] = &[
    REQUEST_ID,
    "via",
    DEBUG_ROUTE,
    DEBUG_UPSTREAM,
    DEBUG_FALLBACK,
];

/// Headers a request or response may hold, however the pipeline holds them: a `HeaderMap` on
/// Pingora's pipeline and in the mirror, the parsed head on the fast path (which builds no map).
pub(crate) trait Headers {
    /// The values of header `name` (given in lower case), in order.
    fn values<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n, Self>;

    /// Appends to `into` every header whose (lower-case) name `keep` accepts, in order; false
    /// when one of them cannot be a map's header (`into` then holds those before it).
    fn copy_into(&self, into: &mut HeaderMap, keep: impl Fn(&str) -> bool) -> bool;

    /// How many headers there are.
    fn count(&self) -> usize;
}

impl Headers for HeaderMap {
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(name).iter().map(|v| v.as_bytes())
    }

    fn copy_into(&self, into: &mut HeaderMap, keep: impl Fn(&str) -> bool) -> bool {
        for (name, value) in self {
            if keep(name.as_str()) {
                into.append(name.clone(), value.clone());
            }
        }
        true
    }

    fn count(&self) -> usize {
        self.len()
    }
}

impl Headers for [httparse::Header<'_>] {
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        self.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    fn copy_into(&self, into: &mut HeaderMap, keep: impl Fn(&str) -> bool) -> bool {
        for h in self {
            let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
                return false;
            };
            if keep(name.as_str()) {
                let Ok(value) = HeaderValue::from_bytes(h.value) else {
                    return false;
                };
                into.append(name, value);
            }
        }
        true
    }

    fn count(&self) -> usize {
        self.len()
    }
}

/// The comma-separated tokens of a header value, trimmed.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

fn is_one_of(name: &str, list: &[&str]) -> bool {
    list.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Whether a header value is a valid header string (visible ASCII and tabs), as
/// `HeaderValue::to_str` takes it.
pub(crate) fn is_header_string(v: &[u8]) -> bool {
    v.iter().all(|b| *b == b'\t' || (32..127).contains(b))
}

/// Whether a value is a field value RFC 9110 §5.5 allows: visible ASCII, spaces, tabs and
/// obs-text (bytes >= 0x80), no control characters.
fn is_field_value(v: &[u8]) -> bool {
    v.iter()
        .all(|b| *b == b'\t' || (32..127).contains(b) || *b >= 0x80)
}

/// The names a message's `Connection` headers nominate as hop-by-hop, beyond `close` and
/// `keep-alive` (RFC 9110 §7.6.1). Empty for nearly every message, and then not allocated.
pub(crate) struct Nominated<'a>(Vec<&'a [u8]>);

impl<'a> Nominated<'a> {
    pub(crate) fn of<H: Headers + ?Sized>(headers: &'a H) -> Self {
        Nominated(
            headers
                .values("connection")
                .flat_map(tokens)
                .filter(|t| {
                    !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive")
                })
                .collect(),
        )
    }

    fn names(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// What becomes of one header of a message passing the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Passed on as it came.
    Keep,
    /// Frames the body: passed on by a pipeline that relays the body as it came.
    Framing,
    /// Not passed on.
    Drop,
}

/// What becomes of the client's request header `name` on its way upstream.
pub(crate) fn request_header(name: &str, nominated: &Nominated<'_>) -> Disposition {
    if is_one_of(name, HOP_BY_HOP) || is_one_of(name, EDGE_ONLY) || nominated.names(name) {
        Disposition::Drop
    } else if is_one_of(name, FRAMING) {
        Disposition::Framing
    } else {
        Disposition::Keep
    }
}

/// What becomes of the upstream's response header `name` on its way to the client.
pub(crate) fn response_header(name: &str, nominated: &Nominated<'_>) -> Disposition {
    if is_one_of(name, HOP_BY_HOP) || is_one_of(name, EDGE_ONLY_RESPONSE) || nominated.names(name) {
        Disposition::Drop
    } else if is_one_of(name, FRAMING) {
        Disposition::Framing
    } else {
        Disposition::Keep
    }
}

/// The longest client `X-Request-Id` Banyan keeps.
const MAX_REQUEST_ID: usize = 128;

/// A client's `X-Request-Id` is kept when it is short and plain; otherwise Banyan makes one.
pub(crate) fn acceptable_request_id(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= MAX_REQUEST_ID
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

/// A request's id, held inline: every request has one, in the access line, the answer's
/// headers and the in-flight list, and an id on the heap was an allocation per request. Only
/// [`request_id`] makes one from a request, so it holds an acceptable id (ASCII) or a new one.
#[derive(Clone, Default)]
pub(crate) struct RequestId(arrayvec::ArrayString<MAX_REQUEST_ID>);

impl RequestId {
    /// `id`'s first 128 bytes (an id [`request_id`] made is never longer; cut at a character's
    /// boundary, so never invalid UTF-8), or nothing when `id` is not UTF-8.
    pub(crate) fn of(id: &[u8]) -> Self {
        let mut r = RequestId::default();
        if let Ok(id) = std::str::from_utf8(id) {
            let mut end = id.len().min(MAX_REQUEST_ID);
            while !id.is_char_boundary(end) {
                end -= 1;
            }
            r.0.push_str(&id[..end]);
        }
        r
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

/// The request's id: the client's first `X-Request-Id` when acceptable, else a new one.
pub(crate) fn request_id<H: Headers + ?Sized>(headers: &H) -> RequestId {
    match headers.values(REQUEST_ID).next() {
        Some(v) if acceptable_request_id(v) => RequestId::of(v),
        _ => RequestId::of(&service_kit::telemetry::new_request_id_bytes()),
    }
}

/// `Via` as Banyan passes it on: the first `Via` the message came with (when it is a valid
/// field value; obs-text included), then Banyan's own.
pub(crate) fn via<H: Headers + ?Sized>(headers: &H) -> Cow<'static, [u8]> {
    match headers
        .values("via")
        .next()
        .filter(|v| is_field_value(v) && !v.is_empty())
    {
        Some(prev) => Cow::Owned([prev, b", ", VIA_VALUE.as_bytes()].concat()),
        None => Cow::Borrowed(VIA_VALUE.as_bytes()),
    }
}

/// What the edge knows of a request that its headers upstream are made of.
pub(crate) struct EdgeRequest<'a> {
    pub(crate) client_ip: Option<IpAddr>,
    /// The request's `Host` ([`crate::edge::request`] checked it; an absolute-form target was
    /// rewritten to origin-form with its authority as `Host`).
    pub(crate) host: Option<&'a [u8]>,
    pub(crate) request_id: &'a str,
    /// `Via` as it goes upstream ([`via`]).
    pub(crate) via: &'a [u8],
}

/// The headers Banyan sets on a request it forwards (and on a shadow copy of it), in order:
/// `X-Forwarded-For`, `-Proto`, `-Host`, `X-Request-Id`, `Via`.
pub(crate) fn request_additions<'a>(
    edge: &'a EdgeRequest<'a>,
) -> impl Iterator<Item = (&'static str, Added<'a>)> {
    [
        edge.client_ip
            .map(|ip| ("x-forwarded-for", Added::address(ip))),
        Some(("x-forwarded-proto", Added::Borrowed(&b"http"[..]))),
        edge.host.map(|h| ("x-forwarded-host", Added::Borrowed(h))),
        Some((REQUEST_ID, Added::Borrowed(edge.request_id.as_bytes()))),
        Some(("via", Added::Borrowed(edge.via))),
    ]
    .into_iter()
    .flatten()
}

/// The longest an IP address is as text (an IPv6 address with an embedded IPv4 one).
const ADDRESS_TEXT: usize = 45;

/// A value [`request_additions`] adds: borrowed from the request, or the client's address
/// written inline, so adding the headers allocates nothing (it was an allocation a request).
pub(crate) enum Added<'a> {
    Borrowed(&'a [u8]),
    Address { text: [u8; ADDRESS_TEXT], len: u8 },
}

impl Added<'_> {
    fn address(ip: IpAddr) -> Self {
        let mut text = [0u8; ADDRESS_TEXT];
        let mut rest = &mut text[..];
        // Always fits: no address is longer as text.
        let _ = write!(rest, "{ip}");
        let len = (ADDRESS_TEXT - rest.len()) as u8;
        Added::Address { text, len }
    }
}

impl std::ops::Deref for Added<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Added::Borrowed(b) => b,
            Added::Address { text, len } => &text[..usize::from(*len)],
        }
    }
}

/// What the edge adds to a response it passes on.
pub(crate) struct EdgeResponse<'a> {
    pub(crate) request_id: &'a str,
    /// `Via` as it goes to the client ([`via`] of the upstream's response).
    pub(crate) via: &'a [u8],
    /// Route id, upstream name and fallback reason, when the table turns debug headers on.
    pub(crate) debug: Option<DebugHeaders<'a>>,
    /// The connection closes after this response (`Connection: close`; else `keep-alive`,
    /// as Pingora's pipeline says it too).
    pub(crate) close: bool,
}

/// What the debug headers say of a request (`debug_headers = true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DebugHeaders<'a> {
    pub(crate) route: &'a str,
    pub(crate) upstream: &'a str,
    /// Set when the route's fallback served the request.
    pub(crate) fallback: Option<&'static str>,
}

/// The headers Banyan sets on a response to a client, in order.
pub(crate) fn response_additions<'a>(
    edge: &'a EdgeResponse<'a>,
) -> impl Iterator<Item = (&'static str, &'a [u8])> {
    let debug = edge.debug.into_iter().flat_map(|d| {
        [
            Some((DEBUG_ROUTE, d.route.as_bytes())),
            Some((DEBUG_UPSTREAM, d.upstream.as_bytes())),
            d.fallback.map(|f| (DEBUG_FALLBACK, f.as_bytes())),
        ]
        .into_iter()
        .flatten()
    });
    [(REQUEST_ID, edge.request_id.as_bytes()), ("via", edge.via)]
        .into_iter()
        .chain(debug)
        .chain(std::iter::once((
            "connection",
            if edge.close {
                &b"close"[..]
            } else {
                &b"keep-alive"[..]
            },
        )))
}

/// A parsed header, for tests of code that reads parsed heads.
#[cfg(test)]
pub(crate) fn h<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
    httparse::Header {
        name,
        value: value.as_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_is_written_as_text_whatever_its_length() {
        for ip in [
            "10.0.0.1",
            "255.255.255.255",
            "::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let edge = EdgeRequest {
                client_ip: Some(ip),
                host: None,
                request_id: "r",
                via: b"1.1 banyan",
            };
            let (name, value) = request_additions(&edge).next().unwrap();
            assert_eq!(name, "x-forwarded-for");
            assert_eq!(&*value, ip.to_string().as_bytes());
        }
    }

    #[test]
    fn hop_by_hop_and_edge_only_headers_never_cross() {
        let headers = [h("Connection", "close, X-Hop"), h("X-Hop", "1")];
        let nominated = Nominated::of(&headers[..]);
        for name in [
            "Connection",
            "TE",
            "Trailer",
            "Proxy-Authorization",
            "HTTP2-Settings",
            "Upgrade",
            "x-hop",
            "X-Forwarded-For",
            "X-Banyan-Shadow",
            "Via",
        ] {
            assert_eq!(
                request_header(name, &nominated),
                Disposition::Drop,
                "{name}"
            );
        }
        assert_eq!(
            request_header("Content-Length", &nominated),
            Disposition::Framing
        );
        assert_eq!(request_header("Accept", &nominated), Disposition::Keep);
        assert_eq!(
            response_header("X-Request-Id", &nominated),
            Disposition::Drop
        );
        assert_eq!(
            response_header("Transfer-Encoding", &nominated),
            Disposition::Framing
        );
        assert_eq!(
            response_header("Content-Type", &nominated),
            Disposition::Keep
        );
    }

    #[test]
    fn via_keeps_a_valid_previous_value_obs_text_included() {
        let headers = [h("Via", "1.0 cdn"), h("Via", "1.0 other")];
        assert_eq!(&*via(&headers[..]), b"1.0 cdn, 1.1 banyan");
        let obs = [httparse::Header {
            name: "via",
            value: b"1.0 caf\xc3\xa9",
        }];
        assert_eq!(&*via(&obs[..]), b"1.0 caf\xc3\xa9, 1.1 banyan");
        let ctl = [httparse::Header {
            name: "via",
            value: b"1.0 a\x01",
        }];
        assert_eq!(&*via(&ctl[..]), b"1.1 banyan");
    }

    #[test]
    fn a_request_id_is_kept_only_when_plain() {
        assert_eq!(&*request_id(&[h("X-Request-Id", "abc-1")][..]), "abc-1");
        assert_ne!(&*request_id(&[h("X-Request-Id", "a b")][..]), "a b");
        let long = "x".repeat(MAX_REQUEST_ID);
        assert_eq!(&*request_id(&[h("X-Request-Id", &long)][..]), long);
        let made = request_id(&[h("X-Request-Id", &format!("{long}x"))][..]);
        assert_eq!(made.len(), 32);
        assert!(made.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
