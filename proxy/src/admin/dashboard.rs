//! The migration dashboard: one page, served by the admin listener at `/`, that shows how far
//! the strangling is and why each route stands where it does.
//!
//! Everything it shows comes from `GET /status` ([`super::status`]), the endpoint `banyan
//! status` reads, so the page and the CLI cannot disagree. It polls that endpoint every second
//! (and `?series=true` every 15 s for the hour's charts) instead of holding a stream open:
//! polling survives a proxy upgrade or restart without reconnect logic, and costs one small
//! request a second per open page.
//!
//! The page is plain HTML, CSS and a little JavaScript in one file, built into the binary
//! (`include_str!`): no CDN, no build step, nothing to fetch but `/status`. Its content
//! security policy says so (`default-src 'none'`, the page's own inline script and style, and
//! `connect-src 'self'`). Every value from the status is written as text, never as markup, so
//! a route name or a shadow example cannot inject anything; the shadow examples are redacted
//! before they are stored ([`crate::shadow::redact`]).

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("dashboard.html");

const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                      img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";

pub(super) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
}
