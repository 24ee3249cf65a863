//! Serving a router on a listener until told to stop.
//!
//! Servers take an already-bound listener and a shutdown future (the mini-redis pattern): `main`
//! binds the configured address and waits for SIGTERM/Ctrl-C, tests bind port 0. Shutdown is
//! graceful: the listener stops accepting, requests in flight finish, then the server returns.
//!
//! Readiness: once bound, a process prints exactly one line to stdout,
//! `listening on http://ADDR`, so a supervisor or test harness that started it on port 0 learns
//! the port. Everything else goes to stderr.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::{self, ErrorResponse};
use crate::extract::MAX_JSON_BODY;
use crate::telemetry;

/// The layers every service wants, outermost last: the body read up front and limited (see
/// [`crate::extract::buffer_body`]), panic -> 500 in the error format, request id + access log;
/// and the JSON 404 fallback.
pub fn with_common_layers(router: Router) -> Router {
    router
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn(crate::extract::buffer_body))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                tracing::error!("handler panicked");
                ErrorResponse::internal().into_response()
            },
        ))
        .layer(axum::middleware::from_fn(telemetry::request_context))
}

/// The `/health` answer: 200 `{"status":"ok","checks":{...}}` when every check passed, 503 with
/// `"unavailable"` for the failed ones otherwise; `sync`, when given, is shown under `"sync"`
/// (what a following service has set aside), and changes no status.
pub fn health_response(
    checks: &[(&str, bool)],
    sync: Option<serde_json::Value>,
) -> axum::response::Response {
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let all = checks.iter().all(|(_, ok)| *ok);
    let detail: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(name, ok)| ((*name).to_owned(), word(*ok).into()))
        .collect();
    let status = if all {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::json!({"status": word(all), "checks": detail});
    if let Some(sync) = sync {
        body["sync"] = sync;
    }
    // How far behind its sources each follower of this process is (the proxy's health checks
    // read it: the dashboard's data section and `banyan_upstream_sync_lag_seconds`).
    if let Some(lag) = crate::outbox::lag_report() {
        if !body["sync"].is_object() {
            body["sync"] = serde_json::json!({});
        }
        body["sync"]["lag"] = lag;
    }
    (status, axum::Json(body)).into_response()
}

/// The body of a service's `main`: logging, a runtime, `run`; errors are printed and the
/// process exits non-zero.
pub fn run_main<F>(run: F) -> std::process::ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    crate::telemetry::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints the readiness line (see the module docs).
pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on http://{addr}");
    let _ = out.flush();
}

/// Serves `app` on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    announce(addr);
    // Small answers leave at once: with Nagle's algorithm an answer written while the one
    // before is unacknowledged waits for the client's (delayed) ACK, which is what a client
    // that pipelines requests (the proxy's shadow copies) meets on every answer but the first.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY refused");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
