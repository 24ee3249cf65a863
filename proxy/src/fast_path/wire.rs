//! HTTP/1.1 as the fast path writes and reads it: the request head sent upstream, the response
//! head sent to the client, and where a response body ends (RFC 9112 §6.3).
//!
//! Heads are parsed by `httparse` (zero-copy, into borrowed slices of the read buffer) and
//! written straight into one output buffer, header by header, in the client's order and case.
//! Bodies are never parsed or re-framed: a chunked body passes through byte for byte while
//! [`Chunked`] follows its framing to find its end, which is what decides whether the upstream
//! connection can be reused.

/// Headers an upstream's response may have.
pub(crate) const MAX_RESPONSE_HEADERS: usize = 128;
/// An upstream response head longer than this is a bad gateway.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How the fast path writes the edge's header rules ([`crate::edge::headers`]).
use crate::edge::headers::{self, Disposition, EdgeRequest, EdgeResponse, Nominated, tokens};

/// Where a head (request or response) ends in `buf`: just past its empty line (CRLF CRLF, or
/// the bare LF LF parsers also accept). `searched`: how far earlier calls got, so a head that
/// arrives in pieces is scanned once.
pub(crate) fn head_end(buf: &[u8], searched: &mut usize) -> Option<usize> {
    let from = searched.saturating_sub(3);
    for i in from..buf.len() {
        if buf[i] == b'\n'
            && i >= 1
            && (buf[i - 1] == b'\n' || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n'))
        {
            return Some(i + 1);
        }
    }
    *searched = buf.len();
    None
}

/// Writes the head of the request sent upstream: `method target HTTP/1.1`, the client's headers
/// the edge passes on (in the client's order and case), then the edge's own.
pub(crate) fn upstream_request_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    headers: &[httparse::Header<'_>],
    edge: &EdgeRequest<'_>,
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let nominated = Nominated::of(headers);
    for h in headers {
        if headers::request_header(h.name, &nominated) != Disposition::Drop {
            header(out, h.name.as_bytes(), h.value);
        }
    }
    for (name, value) in headers::request_additions(edge) {
        header(out, name.as_bytes(), &value);
    }
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (a HEAD request, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes: the client connection must close after it too.
    UntilClose,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadResponse(pub &'static str);

/// The framing of a response to a request (`head`: it was a HEAD request), from its status and
/// headers. Conflicting or malformed lengths are refused: passing them on would let the client
/// and Banyan disagree on where the response ends.
pub(crate) fn response_framing(
    head: bool,
    status: u16,
    headers: &[httparse::Header<'_>],
) -> Result<Framing, BadResponse> {
    if head || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked must be the last coding for the length to be known (RFC 9112 §6.3).
            let last = tokens(h.value).last();
            chunked = Some(last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for t in tokens(h.value) {
                let n = std::str::from_utf8(t)
                    .ok()
                    .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(BadResponse("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(BadResponse("conflicting Content-Length"));
                }
                length = Some(n);
            }
        }
    }
    Ok(match (chunked, length) {
        (Some(true), _) => Framing::Chunked,
        (Some(false), _) => Framing::UntilClose,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
    })
}

/// Whether the upstream may keep the connection open after this response.
pub(crate) fn upstream_keeps_alive(version: u8, headers: &[httparse::Header<'_>]) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("connection") {
            for t in tokens(h.value) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    !close && (version == 1 || keep_alive)
}

/// Writes the head of the response sent to the client: the upstream's status and the headers
/// the edge passes on (a `Content-Length` beside chunked framing dropped), then the edge's own.
pub(crate) fn client_response_head(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    headers: &[httparse::Header<'_>],
    framing: Framing,
    edge: &EdgeResponse<'_>,
) {
    use std::io::Write;
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
    let nominated = Nominated::of(headers);
    for h in headers {
        let keep = match headers::response_header(h.name, &nominated) {
            Disposition::Keep => true,
            Disposition::Framing => {
                !(framing == Framing::Chunked && h.name.eq_ignore_ascii_case("content-length"))
            }
            Disposition::Drop => false,
        };
        if keep {
            header(out, h.name.as_bytes(), h.value);
        }
    }
    for (name, value) in headers::response_additions(edge) {
        header(out, name.as_bytes(), value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Follows a chunked body as it passes through and finds where it ends (after the last chunk
/// and its trailer section). Chunk-size lines and trailers are bounded so a broken upstream
/// cannot make it buffer without end.
#[derive(Debug)]
pub(crate) struct Chunked {
    state: ChunkState,
    /// The current size or trailer line so far.
    line: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    SizeLine,
    Data(u64),
    /// The CRLF after a chunk's data; the value is how many of its bytes are still due.
    DataEnd(u8),
    Trailer,
    Done,
}

/// A chunk-size line or trailer field longer than this is a broken upstream.
const MAX_CHUNK_LINE: usize = 4096;

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    pub(crate) fn new() -> Self {
        Chunked {
            state: ChunkState::SizeLine,
            line: Vec::new(),
        }
    }

    /// Feeds the next bytes of the body (the fast path uses [`Chunked::feed_data`]). `Ok(Some(n))`: the body ends after the first `n`
    /// bytes of `buf`; `Ok(None)`: all of `buf` is body and more is due.
    #[cfg(test)]
    pub(crate) fn feed(&mut self, buf: &[u8]) -> Result<Option<usize>, BadResponse> {
        self.feed_data(buf, |_| {})
    }

    /// [`Chunked::feed`], also handing each piece of chunk data (the body without its framing)
    /// to `data`, for a shadow comparison that sees the body as Pingora's path decodes it.
    pub(crate) fn feed_data(
        &mut self,
        buf: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<Option<usize>, BadResponse> {
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                ChunkState::Done => return Ok(Some(i)),
                ChunkState::Data(left) => {
                    let take = left.min((buf.len() - i) as u64);
                    data(&buf[i..i + take as usize]);
                    i += take as usize;
                    self.state = if take == left {
                        ChunkState::DataEnd(2)
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd(due) => {
                    let expected = if due == 2 { b'\r' } else { b'\n' };
                    if buf[i] != expected {
                        return Err(BadResponse("chunk not followed by CRLF"));
                    }
                    i += 1;
                    self.state = if due == 2 {
                        ChunkState::DataEnd(1)
                    } else {
                        ChunkState::SizeLine
                    };
                }
                ChunkState::SizeLine | ChunkState::Trailer => {
                    let rest = &buf[i..];
                    let (part, complete) = match rest.iter().position(|b| *b == b'\n') {
                        Some(p) => (&rest[..=p], true),
                        None => (rest, false),
                    };
                    if self.line.len() + part.len() > MAX_CHUNK_LINE {
                        return Err(BadResponse("chunk-size line or trailer too long"));
                    }
                    self.line.extend_from_slice(part);
                    i += part.len();
                    if complete {
                        self.end_of_line()?;
                        self.line.clear();
                    }
                }
            }
        }
        Ok((self.state == ChunkState::Done).then_some(i))
    }

    fn end_of_line(&mut self) -> Result<(), BadResponse> {
        let line = self
            .line
            .strip_suffix(b"\r\n")
            .ok_or(BadResponse("chunk line not ended by CRLF"))?;
        if self.state == ChunkState::Trailer {
            if line.is_empty() {
                self.state = ChunkState::Done;
            }
            return Ok(());
        }
        // chunk-size [ ";" chunk-ext ]
        let digits_end = line
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .unwrap_or(line.len());
        let (digits, ext) = line.split_at(digits_end);
        let ext = ext.trim_ascii_start();
        if digits.is_empty() || digits.len() > 15 || !(ext.is_empty() || ext[0] == b';') {
            return Err(BadResponse("invalid chunk size"));
        }
        let size = digits.iter().fold(0u64, |n, d| {
            n * 16 + (*d as char).to_digit(16).unwrap_or(0) as u64
        });
        self.state = if size == 0 {
            ChunkState::Trailer
        } else {
            ChunkState::Data(size)
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::headers::{DebugHeaders, h};

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_and_trailers_in_any_slicing() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 1\r\n\r\n";
        let mut whole = body.to_vec();
        whole.extend_from_slice(b"NEXT");
        assert_eq!(Chunked::new().feed(&whole), Ok(Some(body.len())));
        // Byte by byte and in every two-piece split, the end is found at the same place.
        let mut c = Chunked::new();
        for (i, b) in body.iter().enumerate() {
            let r = c.feed(std::slice::from_ref(b)).unwrap();
            assert_eq!(r.is_some(), i == body.len() - 1, "at byte {i}");
        }
        for cut in 0..body.len() {
            let mut c = Chunked::new();
            let first = c.feed(&body[..cut]).unwrap();
            assert_eq!(first, None, "cut {cut}");
            assert_eq!(
                c.feed(&body[cut..]),
                Ok(Some(body.len() - cut)),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn chunk_data_is_handed_on_without_its_framing() {
        let body = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        for cut in 0..body.len() {
            let mut c = Chunked::new();
            let mut seen = Vec::new();
            c.feed_data(&body[..cut], |d| seen.extend_from_slice(d))
                .unwrap();
            let end = c.feed_data(&body[cut..], |d| seen.extend_from_slice(d));
            assert_eq!(end, Ok(Some(body.len() - cut)));
            assert_eq!(seen, b"hello world", "cut {cut}");
        }
    }

    #[test]
    fn broken_chunked_bodies_are_refused() {
        for bad in [
            &b"zz\r\nhello\r\n"[..],
            b"5\r\nhelloXX",
            b"5\nhello\r\n",
            b"10000000000000000\r\n",
            b"5 junk\r\nhello\r\n",
        ] {
            assert!(
                Chunked::new().feed(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 1];
        assert!(Chunked::new().feed(&long).is_err());
    }

    #[test]
    fn a_head_ends_at_its_empty_line_however_it_arrives() {
        let head = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody";
        assert_eq!(head_end(head, &mut 0), Some(head.len() - 4));
        let bare_lf = b"GET / HTTP/1.1\nHost: x\n\n";
        assert_eq!(head_end(bare_lf, &mut 0), Some(bare_lf.len()));
        let mut searched = 0;
        for cut in 1..head.len() - 4 {
            searched = searched.min(cut);
            assert_eq!(head_end(&head[..cut], &mut searched), None, "cut {cut}");
        }
        assert_eq!(head_end(head, &mut searched), Some(head.len() - 4));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cl = [h("Content-Length", "12")];
        assert_eq!(response_framing(false, 200, &cl), Ok(Framing::Length(12)));
        assert_eq!(response_framing(true, 200, &cl), Ok(Framing::Empty));
        assert_eq!(response_framing(false, 304, &cl), Ok(Framing::Empty));
        assert_eq!(response_framing(false, 204, &[]), Ok(Framing::Empty));
        assert_eq!(response_framing(false, 200, &[]), Ok(Framing::UntilClose));
        let both = [
            h("content-length", "3"),
            h("Transfer-Encoding", "gzip, chunked"),
        ];
        assert_eq!(response_framing(false, 200, &both), Ok(Framing::Chunked));
        let not_last = [h("transfer-encoding", "chunked, gzip")];
        assert_eq!(
            response_framing(false, 200, &not_last),
            Ok(Framing::UntilClose)
        );
        let same = [h("content-length", "7, 7"), h("content-length", "7")];
        assert_eq!(response_framing(false, 200, &same), Ok(Framing::Length(7)));
        for bad in [
            &[h("content-length", "7"), h("content-length", "8")][..],
            &[h("content-length", "-1")],
            &[h("content-length", "+7")],
            &[h("content-length", "0x10")],
        ] {
            assert!(response_framing(false, 200, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keep_alive_needs_http_1_1_or_an_explicit_keep_alive() {
        assert!(upstream_keeps_alive(1, &[]));
        assert!(!upstream_keeps_alive(1, &[h("Connection", "Close")]));
        assert!(!upstream_keeps_alive(0, &[]));
        assert!(upstream_keeps_alive(0, &[h("connection", "keep-alive")]));
    }

    #[test]
    fn the_forwarded_head_replaces_what_only_the_edge_may_say() {
        let headers = [
            h("Host", "shop.example"),
            h("X-Forwarded-For", "6.6.6.6"),
            h("X-Request-Id", "chosen"),
            h("x-banyan-shadow", "1"),
            h("Connection", "keep-alive"),
            h("Via", "1.0 cdn"),
            h("Proxy-Authorization", "Basic eA=="),
            h("Accept", "*/*"),
        ];
        let mut out = Vec::new();
        let edge = EdgeRequest {
            client_ip: Some("10.1.2.3".parse().unwrap()),
            host: Some(b"shop.example"),
            request_id: "abc",
            via: b"1.0 cdn, 1.1 banyan",
        };
        upstream_request_head(&mut out, "GET", "/api/x?q=1", &headers, &edge);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /api/x?q=1 HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\n\
             x-forwarded-for: 10.1.2.3\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: shop.example\r\nx-request-id: abc\r\nvia: 1.0 cdn, 1.1 banyan\r\n\r\n"
        );
    }

    #[test]
    fn the_returned_head_drops_hop_by_hop_headers_and_adds_banyans() {
        let headers = [
            h("Content-Type", "application/json"),
            h("Content-Length", "9"),
            h("Transfer-Encoding", "chunked"),
            h("Connection", "keep-alive"),
            h("Keep-Alive", "timeout=5"),
            h("X-Request-Id", "upstream-made"),
            h("Connection", "X-Internal-Hop"),
            h("x-internal-hop", "secret"),
        ];
        let mut out = Vec::new();
        let edge = EdgeResponse {
            request_id: "abc",
            via: b"1.1 banyan",
            debug: Some(DebugHeaders {
                route: "products",
                upstream: "legacy",
                fallback: None,
            }),
            close: true,
        };
        client_response_head(&mut out, 200, "OK", &headers, Framing::Chunked, &edge);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
             x-request-id: abc\r\nvia: 1.1 banyan\r\nx-banyan-route: products\r\n\
             x-banyan-upstream: legacy\r\nconnection: close\r\n\r\n"
        );
    }
}
