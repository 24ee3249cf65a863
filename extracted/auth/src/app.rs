//! Startup, the shared context, the router, and serving.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use service_kit::db::Database;
use service_kit::read_your_writes::{self, Progress, Stream};
use service_kit::session::{self, SessionStore};
use tokio::net::TcpListener;

use crate::config::Cli;
use crate::sync::UsersBack;

/// The paths this service owns (for its OpenAPI document).
pub const PATHS: &[&str] = &["/api/auth"];

#[derive(Clone)]
pub struct ApiContext {
    pub db: Database,
    pub sessions: SessionStore,
    pub cookie_secure: bool,
    /// With `--sync-from`: registrations are answered once written back into the monolith.
    pub write_back: Option<Arc<UsersBack>>,
    /// With `--sync-from`: how far the monolith's user changes are applied here (a request
    /// carrying its own write's position waits for it).
    pub progress: Option<Arc<Progress>>,
}

pub async fn main(cli: Cli) -> anyhow::Result<()> {
    let mut ctx = connect(&cli).await?;
    if let Some(from) = &cli.sync_from {
        let monolith = Database::connect(from, 4)
            .await
            .context("connecting to the monolith's database for sync")?;
        tracing::info!("syncing users with the monolith (both directions)");
        let progress = Progress::new(Stream::Users);
        ctx.write_back = Some(crate::sync::start(
            ctx.db.clone(),
            monolith,
            progress.clone(),
        ));
        ctx.progress = Some(progress);
    }
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    run(listener, ctx, service_kit::server::shutdown_signal()).await
}

/// Opens (and migrates) this service's own database.
pub async fn connect_db(cli: &Cli) -> anyhow::Result<Database> {
    service_kit::db::open_service_db(
        &cli.storage,
        "auth",
        &crate::POSTGRES_MIGRATIONS,
        &crate::SQLITE_MIGRATIONS,
    )
    .await
}

pub async fn connect(cli: &Cli) -> anyhow::Result<ApiContext> {
    let db = connect_db(cli).await?;
    let sessions = session::open_from(&cli.storage).await?;
    tracing::info!(backend = ?db.backend, sessions = ?sessions, "auth service ready");
    Ok(ApiContext {
        db,
        sessions,
        cookie_secure: cli.cookie_secure,
        write_back: None,
        progress: None,
    })
}

pub fn router(ctx: ApiContext) -> Router {
    let progress = ctx.progress.clone();
    let api = Router::new()
        .route("/health", get(health))
        .merge(service_kit::openapi::route(PATHS))
        .merge(crate::users::router())
        .with_state(ctx);
    let api = read_your_writes::waiting_on(api, progress);
    service_kit::server::with_common_layers(api)
}

pub async fn run(
    listener: TcpListener,
    ctx: ApiContext,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    service_kit::server::serve(listener, router(ctx), shutdown)
        .await
        .context("serving")
}

async fn health(State(ctx): State<ApiContext>) -> impl IntoResponse {
    let (database, sessions) = tokio::join!(ctx.db.ping(), ctx.sessions.ping());
    let sync = service_kit::set_aside::SetAside::report(&ctx.db, &[crate::sync::SET_ASIDE]).await;
    service_kit::server::health_response(&[("database", database), ("sessions", sessions)], sync)
}
