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

use crate::cache::ReadCache;
use crate::config::{Cli, Command};
use crate::handoff::ProductsBack;
use crate::products;

/// The paths this service owns (for its OpenAPI document).
pub const PATHS: &[&str] = &["/api/products", "/api/categories"];

#[derive(Clone)]
pub struct ApiContext {
    pub db: Database,
    pub sessions: SessionStore,
    pub cache: ReadCache,
    /// With `--sync-from`: writes are answered once written back into the monolith.
    pub write_back: Option<Arc<ProductsBack>>,
    /// With `--sync-from`: how far the monolith's product changes are applied here (a request
    /// carrying its own write's position waits for it).
    pub progress: Option<Arc<Progress>>,
}

pub async fn main(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Backfill {
        from,
        batch,
        restart,
    }) = &cli.command
    {
        let target = connect_db(&cli).await?;
        let source = Database::connect(from, 4)
            .await
            .context("connecting to the monolith's database")?;
        // Before copying: the changes made meanwhile must stay in the outbox for the sync.
        crate::sync::register(&source, &target)
            .await
            .context("registering with the monolith's change outbox")?;
        let report = crate::backfill::run(&source, &target, *batch, *restart, |done, total| {
            let pct = if total > 0 {
                done as f64 * 100.0 / total as f64
            } else {
                100.0
            };
            println!("backfill: {done}/{total} products ({pct:.1}%)");
        })
        .await?;
        println!(
            "backfill: done, {} scanned, {} written",
            report.scanned, report.written
        );
        return Ok(());
    }
    let mut ctx = connect(&cli).await?;
    if let Some(from) = &cli.sync_from {
        let source = Database::connect(from, 4)
            .await
            .context("connecting to the monolith's database for sync")?;
        tracing::info!("syncing products with the monolith (both directions)");
        let progress = Progress::new(Stream::Products);
        tokio::spawn(crate::sync::run(
            source.clone(),
            ctx.db.clone(),
            ctx.cache.clone(),
            progress.clone(),
        ));
        ctx.progress = Some(progress);
        ctx.write_back = Some(crate::handoff::start(ctx.db.clone(), source));
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
        "catalog",
        &crate::POSTGRES_MIGRATIONS,
        &crate::SQLITE_MIGRATIONS,
    )
    .await
}

pub async fn connect(cli: &Cli) -> anyhow::Result<ApiContext> {
    let db = connect_db(cli).await?;
    let (sessions, cache) = session::open_with_cache(
        cli.storage.redis_url.as_deref(),
        &cli.storage.redis_key_prefix,
        &cli.storage.data_dir,
        "catalog",
    )
    .await?;
    tracing::info!(backend = ?db.backend, sessions = ?sessions, cache = ?cache, "catalog service ready");
    Ok(ApiContext {
        db,
        sessions,
        cache: ReadCache::new(cache),
        write_back: None,
        progress: None,
    })
}

pub fn router(ctx: ApiContext) -> Router {
    let progress = ctx.progress.clone();
    let api = Router::new()
        .route("/health", get(health))
        .merge(service_kit::openapi::route(PATHS))
        .merge(products::router())
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
