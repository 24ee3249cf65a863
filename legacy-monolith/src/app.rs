//! Startup, the shared context, the router, and serving.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use service_kit::cache::Cache;
use service_kit::db::{self, Database};
use service_kit::session::{self, SessionStore};
use tokio::net::TcpListener;

use crate::config::{Cli, Command, DemoArgs, ServeArgs, Storage};
use crate::{analytics, auth, orders, positions, products, search, seed};

/// Everything a handler needs, cheap to clone.
#[derive(Clone)]
pub struct ApiContext {
    pub db: Database,
    pub sessions: SessionStore,
    pub cache: Cache,
    pub settings: Arc<Settings>,
}

/// Request-independent settings from the configuration.
#[derive(Debug, Default)]
pub struct Settings {
    pub cookie_secure: bool,
    pub outbox_prune_interval: Duration,
}

/// The process entry point after argument parsing.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => {
            let ctx = connect(&cli.storage, &args).await?;
            ensure_admin(&ctx, &args).await?;
            let listener = bind(&args).await?;
            run(listener, ctx, service_kit::server::shutdown_signal()).await
        }
        Command::Seed(args) => {
            let db = connect_db(&cli.storage).await?;
            let inserted = seed::seed_products(&db, args.products, args.seed).await?;
            println!("seeded {inserted} products");
            Ok(())
        }
        Command::Demo(args) => demo(&cli.storage, args).await,
    }
}

async fn bind(args: &ServeArgs) -> anyhow::Result<TcpListener> {
    TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))
}

/// Opens the database named by the configuration (or the embedded default) and migrates it.
pub async fn connect_db(storage: &Storage) -> anyhow::Result<Database> {
    let url = match &storage.database_url {
        Some(url) => url.clone(),
        None => db::embedded_url(&storage.data_dir, "monolith")?,
    };
    let db = Database::connect(&url, storage.max_connections).await?;
    db.migrate(&crate::MYSQL_MIGRATIONS, &crate::SQLITE_MIGRATIONS, None)
        .await?;
    tracing::info!(backend = ?db.backend, "database ready");
    Ok(db)
}

/// Connects everything the API needs.
pub async fn connect(storage: &Storage, args: &ServeArgs) -> anyhow::Result<ApiContext> {
    let db = connect_db(storage).await?;
    let (sessions, cache) = session::open_with_cache(
        storage.redis_url.as_deref(),
        &storage.redis_key_prefix,
        &storage.data_dir,
        "monolith",
    )
    .await?;
    tracing::info!(sessions = ?sessions, cache = ?cache, "session store and cache ready");
    Ok(ApiContext {
        db,
        sessions,
        cache,
        settings: Arc::new(Settings {
            cookie_secure: args.cookie_secure,
            outbox_prune_interval: Duration::from_secs(args.outbox_prune_interval),
        }),
    })
}

async fn ensure_admin(ctx: &ApiContext, args: &ServeArgs) -> anyhow::Result<()> {
    match (&args.admin_email, &args.admin_password) {
        (Some(email), Some(password)) => {
            auth::ensure_admin(ctx, email, password).await?;
            tracing::info!("admin account ready");
            Ok(())
        }
        (None, None) => Ok(()),
        _ => anyhow::bail!("BANYAN_ADMIN_EMAIL and BANYAN_ADMIN_PASSWORD must be set together"),
    }
}

/// The whole API.
pub fn router(ctx: ApiContext) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .merge(products::router())
        .merge(auth::router())
        .merge(search::router())
        .merge(analytics::router())
        .merge(orders::router())
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            positions::stamp,
        ))
        .with_state(ctx);
    service_kit::server::with_common_layers(api)
}

/// Serves the API on `listener` until `shutdown` completes; in-flight requests finish first.
pub async fn run(
    listener: TcpListener,
    ctx: ApiContext,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let purge = tokio::spawn(purge_sessions(ctx.sessions.clone()));
    let prune = tokio::spawn(prune_outboxes(
        ctx.db.clone(),
        ctx.settings.outbox_prune_interval,
    ));
    let result = service_kit::server::serve(listener, router(ctx), shutdown).await;
    purge.abort();
    prune.abort();
    result.context("serving")
}

async fn purge_sessions(sessions: SessionStore) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        match sessions.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired sessions removed"),
            Err(e) => tracing::warn!(error = %e, "purging expired sessions failed"),
        }
    }
}

/// The change outboxes the extracted services follow, trimmed to what some registered consumer
/// still needs ([`service_kit::outbox::prune`]).
async fn prune_outboxes(db: service_kit::db::Database, every: Duration) {
    use service_kit::outbox::{Outbox, prune};
    const OUTBOXES: [Outbox; 2] = [
        Outbox {
            table: "product_changes",
            seq: "seq",
            key: "product_id",
        },
        Outbox {
            table: "user_changes",
            seq: "seq",
            key: "user_id",
        },
    ];
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        for outbox in &OUTBOXES {
            match prune(&db, outbox).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, table = outbox.table, "change outbox trimmed"),
                Err(e) => {
                    tracing::warn!(error = %e, table = outbox.table, "trimming a change outbox failed")
                }
            }
        }
    }
}

async fn health(State(ctx): State<ApiContext>) -> impl IntoResponse {
    let (database, sessions) = tokio::join!(ctx.db.ping(), ctx.sessions.ping());
    service_kit::server::health_response(&[("database", database), ("sessions", sessions)], None)
}

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        service_kit::openapi::document(service_kit::openapi::MONOLITH_PATHS),
    )
}

/// `demo`: seed if empty, make sure an admin exists (with a generated password kept in the data
/// directory, never printed or logged), then serve.
async fn demo(storage: &Storage, mut args: DemoArgs) -> anyhow::Result<()> {
    let ctx = connect(storage, &args.serve).await?;
    let inserted = seed::seed_products(&ctx.db, args.products, 42).await?;
    if inserted > 0 {
        tracing::info!(inserted, "demo catalog seeded");
    }
    if args.serve.admin_email.is_none() {
        let (email, password_file) = demo_admin(&storage.data_dir)?;
        args.serve.admin_email = Some(email.clone());
        args.serve.admin_password =
            Some(std::fs::read_to_string(&password_file)?.trim().to_owned());
        eprintln!(
            "demo admin: {email} (password in {})",
            password_file.display()
        );
    }
    ensure_admin(&ctx, &args.serve).await?;
    let listener = bind(&args.serve).await?;
    run(listener, ctx, service_kit::server::shutdown_signal()).await
}

fn demo_admin(data_dir: &Path) -> anyhow::Result<(String, std::path::PathBuf)> {
    std::fs::create_dir_all(data_dir)?;
    let file = data_dir.join("admin-password");
    if !file.exists() {
        let password = service_kit::password::random_password();
        write_private(&file, &password)?;
    }
    Ok(("admin@example.com".to_owned(), file))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}
