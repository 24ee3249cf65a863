//! Startup, the shared context, the router, and serving.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use service_kit::db::Database;
use service_kit::read_your_writes::{self, Progress, Stream};
use tokio::net::TcpListener;

use crate::config::Cli;
use crate::index::SearchIndex;

/// The paths this service owns (for its OpenAPI document).
pub const PATHS: &[&str] = &["/api/search"];

#[derive(Clone)]
pub struct ApiContext {
    pub db: Database,
    pub index: Arc<SearchIndex>,
    /// With `--sync-from`: how far the monolith's product changes are indexed here (a request
    /// carrying its own write's position waits for it).
    pub progress: Option<Arc<Progress>>,
}

pub async fn main(cli: Cli) -> anyhow::Result<()> {
    let mut ctx = connect(&cli).await?;
    if let Some(from) = &cli.sync_from {
        let monolith = Database::connect(from, 4)
            .await
            .context("connecting to the monolith's database for sync")?;
        tracing::info!("following the monolith's products");
        let progress = Progress::new(Stream::Products);
        tokio::spawn(crate::sync::run(
            ctx.db.clone(),
            monolith,
            ctx.index.clone(),
            progress.clone(),
        ));
        ctx.progress = Some(progress);
    }
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    run(listener, ctx, service_kit::server::shutdown_signal()).await
}

/// Opens (and migrates) this service's database and builds the index from it.
pub async fn connect(cli: &Cli) -> anyhow::Result<ApiContext> {
    let db = service_kit::db::open_service_db(
        &cli.storage,
        "search",
        &crate::POSTGRES_MIGRATIONS,
        &crate::SQLITE_MIGRATIONS,
    )
    .await?;
    let index = Arc::new(SearchIndex::new().context("creating the index")?);
    let started = std::time::Instant::now();
    let loaded = crate::sync::load_index(&db, &index).await?;
    tracing::info!(backend = ?db.backend, documents = loaded, elapsed_ms = started.elapsed().as_millis() as u64, "search service ready");
    Ok(ApiContext {
        db,
        index,
        progress: None,
    })
}

pub fn router(ctx: ApiContext) -> Router {
    let progress = ctx.progress.clone();
    let api = Router::new()
        .route("/health", get(health))
        .merge(service_kit::openapi::route(PATHS))
        .merge(crate::search::router())
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
    let database = ctx.db.ping().await;
    let sync = service_kit::set_aside::SetAside::report(&ctx.db, &[crate::sync::SET_ASIDE]).await;
    service_kit::server::health_response(&[("database", database)], sync)
}
