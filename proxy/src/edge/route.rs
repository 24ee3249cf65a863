//! The one routing step: from a request's path, method, headers and client to the route and the
//! pool that serves it, with the path normalized and the target that goes upstream.
//!
//! Both pipelines call [`route`] once per request, and the shadow mirror takes its result; a
//! request is never routed twice (the fast path takes only requests it will answer, and
//! answers every routing failure itself).

use std::net::IpAddr;
use std::sync::Arc;

use http::Method;

use super::failure::Failure;
use super::headers::Headers;
use crate::route_table::RouteTable;
use crate::route_table::normalize::normalize;
use crate::split;
use crate::upstream::Pool;

/// Where a request goes.
pub(crate) struct Routed {
    /// The route's index in the table.
    pub(crate) index: usize,
    /// The pool that serves it (the split's side included).
    pub(crate) pool: Arc<Pool>,
    /// The upstream request's target: the normalized path, then the client's query. Taken from
    /// this thread's kept buffers ([`crate::buffers`]); [`Routed::done`] gives it back.
    target: String,
    /// Where the path ends in `target`.
    path_len: usize,
}

impl Routed {
    /// The normalized path: what the route matched and what goes upstream.
    pub(crate) fn path(&self) -> &str {
        &self.target[..self.path_len]
    }

    /// The normalized path and the client's query: the upstream request's target.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// `target` as Pingora's pipeline sets it on the upstream request (routing checked that it
    /// parses; [`forwardable`]).
    pub(crate) fn uri(&self) -> Option<http::Uri> {
        self.target.parse().ok()
    }

    /// The request is over: its target's buffer goes back for the next request.
    pub(crate) fn done(self) {
        crate::buffers::give(self.target.into_bytes());
    }
}

/// A request that cannot be routed, and the path to log for it.
pub(crate) struct Unrouted {
    pub(crate) failure: Failure,
    /// The normalized path when there is one (no route), else `-` (a path that cannot be
    /// normalized).
    pub(crate) path: String,
}

/// Routes a request with `path` and `query` (the parts of its target) on `table`.
pub(crate) fn route<H: Headers + ?Sized>(
    table: &RouteTable,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &H,
    client: Option<IpAddr>,
) -> Result<Routed, Unrouted> {
    // `*` (OPTIONS) asks about the server as a whole: no route is for it.
    if path == "*" {
        return Err(Unrouted {
            failure: Failure::NoRoute,
            path: "*".into(),
        });
    }
    let path = normalize(path).map_err(|e| Unrouted {
        failure: Failure::BadRequest(e.to_string().into()),
        path: "-".into(),
    })?;
    let Some(index) = table.find(&path, method, headers) else {
        return Err(Unrouted {
            failure: Failure::NoRoute,
            path: path.into_owned(),
        });
    };
    let route = table.route(index);
    let pool_name = match &route.split {
        Some(s) if split::goes_to_new_side(s, table.split_basis_points(index), headers, client) => {
            &s.to
        }
        _ => &route.upstream,
    };
    let query_len = query.map_or(0, |q| q.len() + 1);
    let bytes = crate::buffers::take(path.len() + query_len);
    // An empty buffer is valid UTF-8.
    let mut target = String::from_utf8(bytes).unwrap_or_default();
    target.push_str(&path);
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    // What Pingora's pipeline sets as the upstream URI must parse as one (a query with bytes
    // `http::Uri` refuses is a bad request on both pipelines).
    if !forwardable(&target) {
        crate::buffers::give(target.into_bytes());
        return Err(Unrouted {
            failure: Failure::BadRequest("the request target cannot be forwarded".into()),
            path: path.into_owned(),
        });
    }
    Ok(Routed {
        index,
        pool: table.pool(pool_name).clone(),
        path_len: path.len(),
        target,
    })
}

/// Whether `target` parses as an `http::Uri`, as Pingora's pipeline needs it to. Targets made
/// only of bytes every path and query may hold (RFC 3986's unreserved, sub-delims and `%`, and
/// `:`, `@`, `/`, `?`; `http` accepts each of them, which a test checks byte by byte) are
/// answered without parsing (parsing copies the target); anything else is parsed, so the
/// answer is always `http`'s own.
pub(crate) fn forwardable(target: &str) -> bool {
    (target.starts_with('/') && target.bytes().all(plain)) || target.parse::<http::Uri>().is_ok()
}

fn plain(b: u8) -> bool {
    super::request::reg_name(b) || matches!(b, b':' | b'@' | b'/' | b'?')
}

#[cfg(test)]
mod tests {
    use super::{forwardable, plain};

    #[test]
    fn what_is_answered_without_parsing_is_what_http_accepts() {
        for b in 0u8..=127 {
            let c = b as char;
            for target in [format!("/a{c}b/c"), format!("/a?d{c}e=f{c}")] {
                let parsed = target.parse::<http::Uri>().is_ok();
                if plain(b) {
                    assert!(parsed, "byte {b:#x} is plain, but http refuses {target:?}");
                }
                assert_eq!(forwardable(&target), parsed, "{target:?}");
            }
        }
        assert!(forwardable("/api/products/42?page=2&sort=-price"));
        assert!(!forwardable("/a b"));
        assert!(!forwardable("/a\x7fb"));
    }
}
