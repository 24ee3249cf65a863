//! Path normalization: the one spelling of a path that routes are matched on and that is
//! forwarded upstream.
//!
//! Matching on one spelling and forwarding another is how proxies get bypassed (the proxy sees
//! `/public/../admin` as public, the upstream serves `/admin`), so the normalized path is both
//! what we match and what we send. Steps, in this order:
//! 1. percent-encoded *unreserved* characters are decoded (`%70` -> `p`, `%2e` -> `.`), and
//!    the hex digits of every other escape are upper-cased (RFC 3986 §6.2.2);
//! 2. runs of slashes collapse to one;
//! 3. `.` and `..` segments are resolved (never above the root).
//!
//! Decoding comes first so that `%2e%2e` cannot survive as a traversal. An encoded slash (`%2F`)
//! stays encoded and is never a segment separator. Malformed escapes are an error (400).

use std::borrow::Cow;

/// Why a path could not be normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathError {
    NotAbsolute,
    BadEscape,
    /// Bytes that are not UTF-8 (the head parser lets them through in a target).
    NotUtf8,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::NotAbsolute => write!(f, "path must start with '/'"),
            PathError::BadEscape => write!(f, "path has a malformed percent-escape"),
            PathError::NotUtf8 => write!(f, "path is not UTF-8"),
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalizes `raw` (the path part of a request target, without the query).
pub(crate) fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Fast path: already normal (the common case costs one scan and no copy).
    if !needs_work(bytes) {
        return Ok(Cow::Borrowed(raw));
    }
    // 1. Escapes. Bytes, not chars: a raw multi-byte character passes as the client sent it.
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            let c = h * 16 + l;
            if is_unreserved(c) {
                decoded.push(c);
            } else {
                decoded.push(b'%');
                decoded.push(bytes[i + 1].to_ascii_uppercase());
                decoded.push(bytes[i + 2].to_ascii_uppercase());
            }
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    // Only ASCII was decoded and every other byte kept, so this holds whenever `raw` is UTF-8.
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    // 2 + 3. Segments.
    let trailing_slash = decoded.len() > 1 && decoded.ends_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || (trailing_slash && !out.is_empty()) {
        path.push('/');
    }
    Ok(Cow::Owned(path))
}

fn needs_work(bytes: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' || (b == b'/' && prev == b'/') {
            return true;
        }
        if b == b'.' && prev == b'/' {
            // "/." followed by "/" or end, or "/.." followed by "/" or end
            let rest = &bytes[i..];
            if rest == b"." || rest.starts_with(b"./") || rest == b".." || rest.starts_with(b"../")
            {
                return true;
            }
        }
        prev = b;
    }
    false
}

/// The segments of a normalized path, for matching (`/a/b/` -> `["a", "b"]`).
pub(crate) fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_utf8_passes_as_the_client_sent_it() {
        assert_eq!(
            normalize("/api/products/caf\u{e9}/%41").unwrap(),
            "/api/products/caf\u{e9}/A"
        );
        assert_eq!(normalize("/caf\u{e9}//x").unwrap(), "/caf\u{e9}/x");
    }

    #[test]
    fn normalizes_the_acceptance_spellings() {
        for raw in [
            "/api//products",
            "/api/./products",
            "/api/x/../products",
            "/api/%70roducts",
            "/api/products",
        ] {
            assert_eq!(normalize(raw).unwrap(), "/api/products", "{raw}");
        }
        assert_eq!(normalize("/api/productsx").unwrap(), "/api/productsx");
    }

    #[test]
    fn traversal_cannot_hide_behind_escapes() {
        assert_eq!(normalize("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normalize("/public/%2E./admin").unwrap(), "/admin");
        assert_eq!(normalize("/../../etc").unwrap(), "/etc");
        assert_eq!(
            normalize("/a/%2f../b").unwrap(),
            "/a/%2F../b",
            "the segment '%2F..' is not '..'"
        );
    }

    #[test]
    fn keeps_what_it_must() {
        assert_eq!(normalize("/").unwrap(), "/");
        assert_eq!(normalize("//").unwrap(), "/");
        assert_eq!(normalize("/a/b/").unwrap(), "/a/b/");
        assert_eq!(normalize("/a/%2fb").unwrap(), "/a/%2Fb");
        assert_eq!(normalize("/a/%C3%A9").unwrap(), "/a/%C3%A9");
        assert_eq!(normalize("/a/..").unwrap(), "/");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(normalize("api"), Err(PathError::NotAbsolute));
        assert_eq!(normalize(""), Err(PathError::NotAbsolute));
        assert_eq!(normalize("/a%"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
    }
}
