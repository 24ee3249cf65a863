//! Startup, the shared context, the router, and serving.

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use service_kit::db::Database;
use service_kit::session::{self, SessionStore};

use crate::ingest::Ingestor;
use tokio::net::TcpListener;

use crate::config::Cli;

/// The paths this service owns (for its OpenAPI document).
pub const PATHS: &[&str] = &["/api/analytics"];

#[derive(Clone)]
pub struct ApiContext {
    pub db: Database,
    pub sessions: SessionStore,
    pub ingestor: Ingestor,
}

pub async fn main(cli: Cli) -> anyhow::Result<()> {
    let (ctx, writer) = connect(&cli).await?;
    if let Some(from) = &cli.sync_from {
        let monolith = Database::connect(from, 4)
            .await
            .context("connecting to the monolith's database for sync")?;
        tracing::info!("copying the monolith's events");
        tokio::spawn(crate::sync::run(ctx.db.clone(), monolith));
    }
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let served = run(listener, ctx, service_kit::server::shutdown_signal()).await;
    // Every request has been answered and the router (with its ingestor clones) dropped: wait
    // for the writer to commit what is still queued.
    let _ = writer.await;
    served
}

/// Opens (and migrates) this service's own database.
pub async fn connect_db(cli: &Cli) -> anyhow::Result<Database> {
    service_kit::db::open_service_db(
        &cli.storage,
        "analytics",
        &crate::POSTGRES_MIGRATIONS,
        &crate::SQLITE_MIGRATIONS,
    )
    .await
}

/// The context, and the event writer's task (which ends once every context clone is gone and
/// the queue is drained).
pub async fn connect(cli: &Cli) -> anyhow::Result<(ApiContext, tokio::task::JoinHandle<()>)> {
    let db = connect_db(cli).await?;
    let sessions = session::open_from(&cli.storage).await?;
    tracing::info!(backend = ?db.backend, sessions = ?sessions, "analytics service ready");
    let (ingestor, writer) = Ingestor::new(db.clone(), cli.queue as usize);
    Ok((
        ApiContext {
            db,
            sessions,
            ingestor,
        },
        writer,
    ))
}

pub fn router(ctx: ApiContext) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .merge(service_kit::openapi::route(PATHS))
        .merge(crate::events::router())
        .with_state(ctx);
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
