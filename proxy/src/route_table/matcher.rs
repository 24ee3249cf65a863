//! The compiled matcher: a trie of path segments, so a lookup costs the depth of the request
//! path, not the number of routes.
//!
//! Each node holds the routes whose prefix ends there, ordered most specific first (a method
//! list before any-method, then more header conditions first). A lookup walks the request's
//! segments and keeps the deepest node that has a route accepting the request; so the longest
//! matching prefix wins, segment-aware (`/api/products` covers `/api/products/7`, not
//! `/api/productsx`), and a deeper route that refuses the method falls back to a shallower one.

use std::collections::HashMap;

use http::Method;

use crate::edge::headers::Headers;

use super::normalize::segments;
use crate::config::RouteSpec;

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// Indices into the table's routes, most specific first.
    routes: Vec<usize>,
}

#[derive(Debug)]
pub(crate) struct Matcher {
    root: Node,
}

impl Matcher {
    pub(crate) fn build(routes: &[RouteSpec]) -> Self {
        let mut root = Node::default();
        for (i, r) in routes.iter().enumerate() {
            let mut node = &mut root;
            for seg in segments(&r.path) {
                node = node.children.entry(seg.into()).or_default();
            }
            node.routes.push(i);
        }
        fn sort(node: &mut Node, routes: &[RouteSpec]) {
            node.routes.sort_by_key(|&i| {
                let r = &routes[i];
                (
                    std::cmp::Reverse(r.methods.is_some()),
                    std::cmp::Reverse(r.headers.len()),
                )
            });
            for child in node.children.values_mut() {
                sort(child, routes);
            }
        }
        sort(&mut root, routes);
        Matcher { root }
    }

    /// The index of the route for a request with this normalized path, method and headers.
    pub(crate) fn find<H: Headers + ?Sized>(
        &self,
        routes: &[RouteSpec],
        path: &str,
        method: &Method,
        headers: &H,
    ) -> Option<usize> {
        let accepts = |i: &usize| {
            let r = &routes[*i];
            r.methods.as_ref().is_none_or(|ms| ms.contains(method))
                && r.headers.iter().all(|(name, value)| {
                    headers
                        .values(name.as_str())
                        .next()
                        .is_some_and(|v| v == value.as_bytes())
                })
        };
        let mut best = self.root.routes.iter().copied().find(|i| accepts(i));
        let mut node = &self.root;
        for seg in segments(path) {
            match node.children.get(seg) {
                Some(child) => {
                    node = child;
                    if let Some(i) = node.routes.iter().copied().find(|i| accepts(i)) {
                        best = Some(i);
                    }
                }
                None => break,
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn table() -> Vec<RouteSpec> {
        parse(
            r#"
[upstreams.a]
addrs = ["127.0.0.1:1"]
[upstreams.b]
addrs = ["127.0.0.1:2"]
[[route]]
id = "root"
path = "/"
upstream = "a"
[[route]]
id = "products"
path = "/api/products"
upstream = "a"
[[route]]
id = "products-get"
path = "/api/products"
methods = ["GET"]
upstream = "b"
[[route]]
id = "products-beta"
path = "/api/products"
methods = ["GET"]
headers = { x-beta = "yes" }
upstream = "b"
[[route]]
id = "one"
path = "/api/products/bestsellers"
methods = ["POST"]
upstream = "b"
"#,
            "t",
        )
        .unwrap()
        .routes
    }

    fn id<'a>(
        routes: &'a [RouteSpec],
        m: &Matcher,
        path: &str,
        method: Method,
        beta: bool,
    ) -> &'a str {
        let mut h = http::HeaderMap::new();
        if beta {
            h.insert("x-beta", "yes".parse().unwrap());
        }
        &routes[m.find(routes, path, &method, &h).unwrap()].id
    }

    #[test]
    fn most_specific_wins() {
        let r = table();
        let m = Matcher::build(&r);
        assert_eq!(id(&r, &m, "/api/products", Method::POST, false), "products");
        assert_eq!(
            id(&r, &m, "/api/products/7", Method::GET, false),
            "products-get"
        );
        assert_eq!(
            id(&r, &m, "/api/products/7", Method::GET, true),
            "products-beta"
        );
        assert_eq!(id(&r, &m, "/api/productsx", Method::GET, false), "root");
        assert_eq!(id(&r, &m, "/", Method::GET, false), "root");
        // A deeper route that refuses the method falls back to the shallower one.
        assert_eq!(
            id(&r, &m, "/api/products/bestsellers", Method::GET, false),
            "products-get"
        );
        assert_eq!(
            id(&r, &m, "/api/products/bestsellers", Method::POST, false),
            "one"
        );
    }
}
