//! Talking to a running proxy's admin API from the command line: where it is, and its token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// How a command reaches the admin API.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// The admin API of a running proxy (default: the `admin` address of --config, else
    /// http://127.0.0.1:9901)
    #[arg(long, env = "BANYAN_ADMIN_URL")]
    pub admin: Option<String>,
    /// The route table whose `admin` address and `admin_token_file` to use
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The admin token's file (needed when the admin API is not on loopback; default: the
    /// table's `admin_token_file`)
    #[arg(long, env = "BANYAN_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// A resolved admin API: its base URL and the token to send, if any.
pub struct Admin {
    pub base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl AdminArgs {
    pub fn resolve(&self) -> anyhow::Result<Admin> {
        let table = match &self.config {
            Some(path) => Some(crate::config::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?),
            None => None,
        };
        let base = match (&self.admin, &table) {
            // `127.0.0.1:9901` as the help says, or a URL.
            (Some(url), _) if url.contains("://") => url.trim_end_matches('/').to_owned(),
            (Some(addr), _) => format!("http://{}", addr.trim_end_matches('/')),
            (None, Some(t)) => {
                let a = t.proxy.admin;
                let host = if a.ip().is_unspecified() {
                    "127.0.0.1".to_owned()
                } else {
                    a.ip().to_string()
                };
                format!("http://{host}:{}", a.port())
            }
            (None, None) => "http://127.0.0.1:9901".to_owned(),
        };
        let file: Option<&Path> = self.token_file.as_deref().or_else(|| {
            table
                .as_ref()
                .and_then(|t| t.proxy.admin_token_file.as_deref())
        });
        let token = file
            .map(crate::admin::guard::read_token)
            .transpose()
            .map_err(|e| anyhow::anyhow!("admin token: {e}"))?;
        Ok(Admin {
            base,
            token,
            client: reqwest::Client::new(),
        })
    }
}

impl Admin {
    /// `GET path` as JSON; an error answer becomes an error with its message.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path).await
    }

    /// `POST path` (an action: it carries the token), its answer as JSON.
    pub async fn post_json(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path).await
    }

    async fn send(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .client
            .request(method, &url)
            .timeout(Duration::from_secs(10));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let resp = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the admin API at {}: {e}", self.base))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| anyhow::anyhow!("unexpected answer from {url}: {e}"))?;
        if !status.is_success() {
            anyhow::bail!(
                "{url} answered {status}: {}",
                body["error"]["message"]
                    .as_str()
                    .unwrap_or(&body.to_string())
            );
        }
        Ok(body)
    }
}

/// Runs `f` on a small runtime (the commands are short-lived and synchronous at the top).
pub(super) fn block_on<T>(
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}
