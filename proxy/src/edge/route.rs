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
    /// The normalized path: what the route matched and what goes upstream.
    pub(crate) path: String,
    /// The normalized path and the client's query: the upstream request's target.
    pub(crate) target: String,
    /// `target` parsed, as Pingora's pipeline sets it on the upstream request.
    pub(crate) uri: http::Uri,
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
            path,
        });
    };
    let route = table.route(index);
    let pool_name = match &route.split {
        Some(s) if split::goes_to_new_side(s, table.split_basis_points(index), headers, client) => {
            &s.to
        }
        _ => &route.upstream,
    };
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    // What Pingora's pipeline sets as the upstream URI must parse as one (a query with bytes
    // `http::Uri` refuses is a bad request on both pipelines).
    let Ok(uri) = target.parse::<http::Uri>() else {
        return Err(Unrouted {
            failure: Failure::BadRequest("the request target cannot be forwarded".into()),
            path,
        });
    };
    Ok(Routed {
        index,
        pool: table.pool(pool_name).clone(),
        path,
        target,
        uri,
    })
}
