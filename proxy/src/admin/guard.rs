//! Who may talk to the admin API: a Host check against DNS rebinding, and a token for actions
//! (and for every read when the API is reachable off loopback).
//!
//! The admin API shows the topology and, from here on, takes actions. A page in an operator's
//! browser can reach `127.0.0.1:9901` through DNS rebinding: the attacker's name resolves to
//! loopback, and the browser sends the attacker's name as `Host`. So a request is answered only
//! when its `Host` is an IP address, `localhost` (or a `.localhost` name), or one of
//! `[proxy] admin_hosts`: a rebinding page can never send an IP address as its `Host`.
//!
//! The token (`[proxy] admin_token_file`, sent as `Authorization: Bearer TOKEN`) is required
//! for every action (any method but GET and HEAD), and for every request when the admin
//! listener is not on loopback; the proxy refuses to start on a non-loopback admin address
//! without one. `/healthz` is open to all, for load balancers and Kubernetes probes. The file
//! is read on each request that needs it, so a rotated token applies at once. Tokens are
//! compared by their SHA-256 digests, in constant time.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AdminState;

/// Reads a token file: the first line, trimmed; it must be at least 16 characters.
pub(crate) fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 {
        return Err(format!(
            "{} must hold a token of at least 16 characters on its first line",
            path.display()
        ));
    }
    Ok(token)
}

/// Whether two tokens are equal, in time that does not depend on where they differ.
fn same_token(presented: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(presented), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Whether a `Host` value may address the admin API.
fn host_allowed(host: &str, extra: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port or [v6]
        Some(rest) => {
            return rest.split_once(']').is_some_and(|(ip, tail)| {
                ip.parse::<std::net::Ipv6Addr>().is_ok()
                    && (tail.is_empty()
                        || tail.strip_prefix(':').is_some_and(|p| {
                            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
                        }))
            });
        }
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || extra.contains(&name)
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// Whether reads need the token too: the admin listener is reachable off loopback.
pub(crate) fn off_loopback(admin: SocketAddr) -> bool {
    !admin.ip().is_loopback()
}

/// The middleware: Host check, then the token where one is needed.
pub(crate) async fn check(State(s): State<AdminState>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let settings = s.live.current().config.proxy.clone();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_allowed(host, &settings.admin_hosts) {
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the admin API answers only to loopback names, IP addresses and [proxy] admin_hosts",
        );
    }
    let action = !matches!(*request.method(), Method::GET | Method::HEAD);
    if !action && !off_loopback(s.admin) {
        return next.run(request).await;
    }
    let Some(file) = &settings.admin_token_file else {
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "admin actions need a token: set [proxy] admin_token_file",
        );
    };
    let expected = match read_token(file) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "admin token file unreadable; refusing admin requests that need it");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the admin token file cannot be read",
            );
        }
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(p) if same_token(p.as_bytes(), expected.as_bytes()) => next.run(request).await,
        Some(_) => refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong admin token",
        ),
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this needs the admin token: Authorization: Bearer TOKEN",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_addresses_and_configured_hosts_pass() {
        let extra = vec!["admin.internal".to_owned()];
        for ok in [
            "127.0.0.1:9901",
            "127.0.0.1",
            "[::1]:9901",
            "[::1]",
            "10.1.2.3:9901",
            "localhost:9901",
            "LOCALHOST",
            "banyan.localhost:1",
            "admin.internal:9901",
            "admin.internal.",
        ] {
            assert!(host_allowed(ok, &extra), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:9901",
            "127.0.0.1.evil.example",
            "[::1",
            "localhost.evil",
            "admin.internal.evil",
        ] {
            assert!(!host_allowed(bad, &extra), "{bad}");
        }
    }

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(same_token(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_token(b"0123456789abcdeX", b"0123456789abcdef"));
        assert!(!same_token(b"0123456789abcdef0", b"0123456789abcdef"));
        assert!(!same_token(b"", b"0123456789abcdef"));
    }
}
