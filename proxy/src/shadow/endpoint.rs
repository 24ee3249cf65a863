//! Endpoint templates: what shadow results are counted by, so that ids do not explode the
//! number of series (`GET /api/products/17` and `GET /api/products/42` are both
//! `GET /api/products/{id}`).
//!
//! A path segment is an id when it is a number, a UUID, or a long hexadecimal string (hashes,
//! object ids). The query string is left out: it is part of what is compared, not of the name.

/// `METHOD /path/with/{id}` for a request.
pub(crate) fn template(method: &str, path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut out = String::with_capacity(method.len() + 1 + path.len());
    out.push_str(method);
    out.push(' ');
    let mut any = false;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(if is_id(seg) { "{id}" } else { seg });
        any = true;
    }
    if !any {
        out.push('/');
    }
    out
}

fn is_id(seg: &str) -> bool {
    let digits = !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit());
    let hex = seg.len() >= 16 && seg.bytes().all(|b| b.is_ascii_hexdigit());
    let uuid = seg.len() == 36
        && seg.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    digits || hex || uuid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_placeholders() {
        assert_eq!(
            template("GET", "/api/products/17"),
            "GET /api/products/{id}"
        );
        assert_eq!(
            template("GET", "/api/products/bestsellers?limit=5"),
            "GET /api/products/bestsellers"
        );
        assert_eq!(
            template(
                "DELETE",
                "/api/orders/0c6f2a1e-9b1d-4c57-a3f5-6e2b1f0d9a11/items/3"
            ),
            "DELETE /api/orders/{id}/items/{id}"
        );
        assert_eq!(
            template("GET", "/objects/5f91388a0c6f2a1e9b1d"),
            "GET /objects/{id}"
        );
        assert_eq!(template("GET", "/api/v2/search"), "GET /api/v2/search");
        assert_eq!(
            template("GET", "/cafe"),
            "GET /cafe",
            "short hex-looking words stay"
        );
        assert_eq!(template("GET", ""), "GET /");
        assert_eq!(template("GET", "/?q=1"), "GET /");
    }
}
