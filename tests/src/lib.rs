//! The end-to-end test harness: start the real binaries, on port 0, against real storage.
//!
//! [`spawn_app`] starts the monolith binary as a child process with its own fresh storage and
//! returns a [`TestApp`] once the process has printed the address it bound and answers
//! `/health`. Nothing sleeps: readiness is read from the process and polled.
//!
//! Storage follows the environment:
//! - neither variable set: embedded storage (SQLite files in a temporary data directory);
//! - `BANYAN_TEST_MYSQL_URL` (e.g. `mysql://root@127.0.0.1:3306`): a fresh database per test,
//!   dropped afterwards;
//! - `BANYAN_TEST_REDIS_URL` (e.g. `redis://127.0.0.1:6379`): a fresh key prefix per test,
//!   deleted afterwards;
//! - `BANYAN_TEST_PG_URL` (e.g. `postgres://postgres@127.0.0.1:5432`): a fresh PostgreSQL
//!   database per test for the extracted services, dropped afterwards.
//!
//! Besides the monolith, [`spawn_catalog`] / [`spawn_synced_catalog`] start the catalog service
//! beside a [`TestApp`] (sharing its session store), [`proxy::spawn_proxy`] starts Banyan, and
//! [`origin::Origin`] / [`relay::Relay`] / [`fault::FaultyHop`] play upstreams, flaky links and
//! failing services inside the test.
//!
//! When a variable is set but its server cannot be reached, the test fails: it never quietly
//! falls back to embedded storage.
//!
//! Binaries are found next to the test executable (`target/<profile>/`); the harness runs
//! `cargo build --workspace --bins` once per test process first, so whatever subset of tests
//! is run, the binaries under test are current.

pub mod fault;
pub mod origin;
pub mod process;
pub mod proxy;
pub mod raw_client;
pub mod raw_origin;
pub mod recorder;
pub mod relay;

use std::time::Duration;

use rand::RngCore;
use reqwest::{Client, Response};
use serde_json::{Value, json};

pub use process::ServiceProcess;

/// A running monolith with its own storage, and helpers to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    /// The environment the monolith was started with (storage, admin account).
    pub env: Vec<(String, String)>,
    /// A client with its own cookie jar (one "browser").
    pub client: Client,
    pub admin_email: String,
    pub admin_password: String,
    pub storage: TestStorage,
    pub process: ServiceProcess,
}

/// What a test may ask of the app it starts.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// Run `legacy-monolith seed --products N` before serving.
    pub seed_products: Option<u32>,
    /// Reach Redis at this address instead (a [`relay::Relay`] in front of the real one).
    pub redis_via: Option<std::net::SocketAddr>,
}

impl AppOptions {
    /// A catalog of `n` seeded demo products.
    pub fn seeded(n: u32) -> Self {
        Self {
            seed_products: Some(n),
            ..Self::default()
        }
    }
}

/// Starts the monolith on fresh storage, without demo data.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let storage = TestStorage::create().await;
    let admin_email = format!("admin-{}@test.example", random_hex(4));
    let admin_password = random_hex(12);
    let mut env = storage.env();
    if let Some(addr) = options.redis_via {
        env.retain(|(k, _)| k != "REDIS_URL");
        env.push(("REDIS_URL".into(), format!("redis://{addr}")));
    }
    env.push(("BANYAN_ADMIN_EMAIL".into(), admin_email.clone()));
    env.push(("BANYAN_ADMIN_PASSWORD".into(), admin_password.clone()));
    // Trim change outboxes every second, so every sync test also runs against pruning.
    env.push(("OUTBOX_PRUNE_INTERVAL".into(), "1".into()));
    if let Some(n) = options.seed_products {
        process::run_to_completion(
            "legacy-monolith",
            &["seed", "--products", &n.to_string()],
            &env,
        );
    }
    let process = ServiceProcess::start(
        "legacy-monolith",
        &["serve", "--listen", "127.0.0.1:0"],
        &env,
    )
    .await;
    TestApp {
        address: process.address.clone(),
        env,
        client: new_client(),
        admin_email,
        admin_password,
        storage,
        process,
    }
}

/// Starts the catalog service beside `app`, sharing its session store (so a login made
/// through the monolith is valid there) but on its own database.
pub async fn spawn_catalog(app: &TestApp) -> ServiceProcess {
    ServiceProcess::start(
        "catalog-service",
        &["--listen", "127.0.0.1:0"],
        &app.storage.service_env(),
    )
    .await
}

/// Starts the auth service beside `app` on its own database, sharing the session store and
/// syncing users with the monolith (both ways).
pub async fn spawn_synced_auth(app: &TestApp) -> ServiceProcess {
    let mut env = app.storage.service_env_for("auth").await;
    env.push((
        "MONOLITH_DATABASE_URL".into(),
        app.storage.monolith_database_url(),
    ));
    ServiceProcess::start("auth-service", &["--listen", "127.0.0.1:0"], &env).await
}

/// Starts the search service beside `app` on its own database, following the monolith's
/// products.
pub async fn spawn_synced_search(app: &TestApp) -> ServiceProcess {
    let mut env = app.storage.service_env_for("search").await;
    env.push((
        "MONOLITH_DATABASE_URL".into(),
        app.storage.monolith_database_url(),
    ));
    ServiceProcess::start("search-service", &["--listen", "127.0.0.1:0"], &env).await
}

/// Starts the analytics service beside `app` on its own database, copying the monolith's events.
pub async fn spawn_synced_analytics(app: &TestApp) -> ServiceProcess {
    let mut env = app.storage.service_env_for("analytics").await;
    env.push((
        "MONOLITH_DATABASE_URL".into(),
        app.storage.monolith_database_url(),
    ));
    ServiceProcess::start("analytics-service", &["--listen", "127.0.0.1:0"], &env).await
}

/// Starts the analytics service on its own (empty) database, sharing `app`'s session store.
pub async fn spawn_analytics(app: &TestApp) -> ServiceProcess {
    let env = app.storage.service_env_for("analytics").await;
    ServiceProcess::start("analytics-service", &["--listen", "127.0.0.1:0"], &env).await
}

/// Starts the auth service on its own (empty) database, sharing `app`'s session store.
pub async fn spawn_auth(app: &TestApp) -> ServiceProcess {
    let env = app.storage.service_env_for("auth").await;
    ServiceProcess::start("auth-service", &["--listen", "127.0.0.1:0"], &env).await
}

/// An HTTP client with its own cookie jar and a timeout, so a hung server fails the test.
pub fn new_client() -> Client {
    Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building an HTTP client")
}

pub fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.get_as(&self.client, path).await
    }

    pub async fn get_as(&self, client: &Client, path: &str) -> Response {
        client.get(self.url(path)).send().await.expect("GET failed")
    }

    pub async fn send_json(
        &self,
        client: &Client,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        client
            .request(method, self.url(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{method_name} {path} failed: {e:?}",
                    method_name = "request"
                )
            })
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.send_json(&self.client, "POST", path, body).await
    }

    /// Registers a customer and logs `client` in; returns the user.
    pub async fn customer(&self, client: &Client) -> Value {
        let email = format!("user-{}@test.example", random_hex(4));
        let r = self
            .send_json(
                client,
                "POST",
                "/api/auth/register",
                &json!({"email": email, "password": "correct horse", "name": "Test User"}),
            )
            .await;
        assert_eq!(r.status(), 201, "register: {}", r.text().await.unwrap());
        let r = self
            .send_json(
                client,
                "POST",
                "/api/auth/login",
                &json!({"email": email, "password": "correct horse"}),
            )
            .await;
        assert_eq!(r.status(), 200, "login: {}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    /// A new client logged in as the configured admin.
    pub async fn admin_client(&self) -> Client {
        let client = new_client();
        let r = self
            .send_json(
                &client,
                "POST",
                "/api/auth/login",
                &json!({"email": self.admin_email, "password": self.admin_password}),
            )
            .await;
        assert_eq!(r.status(), 200, "admin login: {}", r.text().await.unwrap());
        client
    }

    /// Creates a product as admin and returns it.
    pub async fn create_product(&self, admin: &Client, body: Value) -> Value {
        let r = self.send_json(admin, "POST", "/api/products", &body).await;
        assert_eq!(
            r.status(),
            201,
            "create product: {}",
            r.text().await.unwrap()
        );
        r.json().await.unwrap()
    }
}

/// Storage for one test: a temporary data directory always, plus a fresh MariaDB database and a
/// fresh Redis key prefix when the environment names those servers.
pub struct TestStorage {
    pub data_dir: tempfile::TempDir,
    pub mysql: Option<TestDatabase>,
    pub postgres: Option<TestDatabase>,
    pub redis: Option<RedisPrefix>,
    /// PostgreSQL databases of the other extracted services (each service has its own).
    pub more_postgres: std::sync::Mutex<Vec<TestDatabase>>,
}

impl TestStorage {
    pub async fn create() -> Self {
        let data_dir = tempfile::Builder::new()
            .prefix("banyan-test-")
            .tempdir()
            .expect("creating a temporary data directory");
        let mysql = match std::env::var("BANYAN_TEST_MYSQL_URL") {
            Ok(url) if !url.is_empty() => Some(TestDatabase::create(ServerKind::MySql, &url).await),
            _ => None,
        };
        let redis = match std::env::var("BANYAN_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => Some(RedisPrefix::create(&url)),
            _ => None,
        };
        let postgres = match std::env::var("BANYAN_TEST_PG_URL") {
            Ok(url) if !url.is_empty() => {
                Some(TestDatabase::create(ServerKind::Postgres, &url).await)
            }
            _ => None,
        };
        Self {
            data_dir,
            mysql,
            postgres,
            redis,
            more_postgres: Default::default(),
        }
    }

    /// URL of the monolith's database (what a backfill or sync reads).
    pub fn monolith_database_url(&self) -> String {
        match &self.mysql {
            Some(db) => db.url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.path().join("monolith.db").display()
            ),
        }
    }

    /// Environment for an extracted service: its own database (PostgreSQL when the environment
    /// names one, else SQLite in the shared data directory), the shared session store.
    pub fn service_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<_> = self
            .env()
            .into_iter()
            .filter(|(k, _)| k != "DATABASE_URL")
            .collect();
        if let Some(pg) = &self.postgres {
            env.push(("DATABASE_URL".into(), pg.url.clone()));
        }
        env
    }

    /// Environment for the extracted service `name`: like [`service_env`](Self::service_env)
    /// (which is the catalog's), but on a PostgreSQL database of its own.
    pub async fn service_env_for(&self, name: &str) -> Vec<(String, String)> {
        let mut env = self.service_env();
        if name != "catalog"
            && let Some(pg) = &self.postgres
        {
            let db = TestDatabase::create(ServerKind::Postgres, &pg.server_url).await;
            env.retain(|(k, _)| k != "DATABASE_URL");
            env.push(("DATABASE_URL".into(), db.url.clone()));
            self.more_postgres.lock().unwrap().push(db);
        }
        env
    }

    /// Environment for a process that should use this storage.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![(
            "BANYAN_DATA_DIR".to_owned(),
            self.data_dir.path().display().to_string(),
        )];
        if let Some(db) = &self.mysql {
            env.push(("DATABASE_URL".into(), db.url.clone()));
        }
        if let Some(r) = &self.redis {
            env.push(("REDIS_URL".into(), r.url.clone()));
            env.push(("REDIS_KEY_PREFIX".into(), r.prefix.clone()));
        }
        env
    }

    pub fn describe(&self) -> String {
        let part = |name: &str, on: bool| {
            if on {
                name.to_owned()
            } else {
                format!("no-{name}")
            }
        };
        [
            part("mariadb", self.mysql.is_some()),
            part("postgres", self.postgres.is_some()),
            part("redis", self.redis.is_some()),
        ]
        .join("+")
    }
}

/// Which kind of real server a [`TestDatabase`] lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    MySql,
    Postgres,
}

impl ServerKind {
    fn variable(self) -> &'static str {
        match self {
            ServerKind::MySql => "BANYAN_TEST_MYSQL_URL",
            ServerKind::Postgres => "BANYAN_TEST_PG_URL",
        }
    }

    fn create_sql(self, name: &str) -> String {
        match self {
            ServerKind::MySql => {
                format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            }
            ServerKind::Postgres => format!("CREATE DATABASE \"{name}\""),
        }
    }

    fn drop_sql(self, name: &str) -> String {
        match self {
            ServerKind::MySql => format!("DROP DATABASE IF EXISTS `{name}`"),
            ServerKind::Postgres => format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        }
    }

    /// Runs one administrative statement on the server (not in any test database).
    async fn admin(self, server_url: &str, sql: String) -> Result<(), String> {
        use sqlx::Connection;
        let sql = sqlx::AssertSqlSafe(sql);
        match self {
            ServerKind::MySql => {
                let mut conn = sqlx::MySqlConnection::connect(server_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sql)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            ServerKind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&format!("{server_url}/postgres"))
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sql)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

/// A database created for one test on a real MySQL/MariaDB or PostgreSQL server, dropped on
/// drop.
pub struct TestDatabase {
    pub kind: ServerKind,
    pub server_url: String,
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    async fn create(kind: ServerKind, server_url: &str) -> Self {
        let server_url = server_url.trim_end_matches('/').to_owned();
        let name = format!("banyan_test_{}", random_hex(6));
        kind.admin(&server_url, kind.create_sql(&name))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{} is set but creating a test database there failed: {e}",
                    kind.variable()
                )
            });
        let url = format!("{server_url}/{name}");
        Self {
            kind,
            server_url,
            name,
            url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (kind, server_url, sql) = (
            self.kind,
            self.server_url.clone(),
            self.kind.drop_sql(&self.name),
        );
        // Drop runs outside any runtime we could borrow; use a short-lived one on a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(kind.admin(&server_url, sql)).ok()
        })
        .join();
    }
}

/// A Redis key prefix for one test; its keys are deleted on drop.
pub struct RedisPrefix {
    pub url: String,
    pub prefix: String,
}

impl RedisPrefix {
    pub fn create(url: &str) -> Self {
        let client =
            redis::Client::open(url).expect("BANYAN_TEST_REDIS_URL is not a valid Redis URL");
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| {
                panic!("BANYAN_TEST_REDIS_URL is set but the server is unreachable: {e}")
            });
        let _: String = redis::cmd("PING").query(&mut conn).expect("redis PING");
        Self {
            url: url.to_owned(),
            prefix: format!("banyan-test-{}:", random_hex(6)),
        }
    }

    /// Keys under this prefix, for tests that check what was written.
    pub fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
            .unwrap();
        keys.sort();
        keys
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// Starts the catalog service beside `app`, following the monolith's product changes.
pub async fn spawn_synced_catalog(app: &TestApp) -> ServiceProcess {
    let mut env = app.storage.service_env();
    env.push((
        "MONOLITH_DATABASE_URL".into(),
        app.storage.monolith_database_url(),
    ));
    ServiceProcess::start("catalog-service", &["--listen", "127.0.0.1:0"], &env).await
}

/// Polls `GET url` until the answer satisfies `check`; returns how long that took. Fails after
/// 10 s (the sync targets are far below that; the figure is what tests report).
pub async fn converges(url: &str, check: impl Fn(u16, &Value) -> bool) -> Duration {
    let client = Client::new();
    let start = std::time::Instant::now();
    loop {
        let r = client.get(url).send().await.expect("GET failed");
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if check(status, &body) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{url} never converged: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
