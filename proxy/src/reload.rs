//! Hot reload: the live route table and what keeps it current.
//!
//! [`LiveTable`] holds the current [`RouteTable`] in an `ArcSwap`: readers take a snapshot
//! without locking, a reload swaps in a new, completely built table in one atomic store.
//! Requests in flight keep the snapshot they started with.
//!
//! Three things trigger a reload, all funnelled into [`LiveTable::reload`]:
//! - a file watcher on the file's *directory* (editors save by writing a temporary file and
//!   renaming it over the original, Kubernetes ConfigMaps swap a `..data` symlink: both replace
//!   the watched inode, so watching the file itself would go deaf after the first save), with a
//!   short settle delay so a burst of events becomes one reload;
//! - polling every 500 ms, for file systems where events do not arrive (network mounts, some
//!   containers): a change is picked up within a second even with no watcher;
//! - `SIGHUP`, for operators who want to say "now".
//!
//! A file that does not validate is refused: the old table keeps serving, the error is logged,
//! counted, and shown by the admin API until a good file is applied. A file whose bytes are
//! unchanged is not reloaded at all.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{self, ConfigErrors};
use crate::metrics::Metrics;
use crate::route_table::RouteTable;
use crate::shadow::bounds::{Backlogs, Bounds};
use crate::upstream::Registry;

/// What the admin API reports about reloads.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    pub applied: u64,
    pub refused: u64,
    pub last_refused: Option<Refusal>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub at: String,
    pub version: String,
    pub errors: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Applied { version: String },
    Refused,
}

pub struct LiveTable {
    path: PathBuf,
    table: ArcSwap<RouteTable>,
    registry: Registry,
    bounds: Bounds,
    status: Mutex<ReloadStatus>,
    /// Serializes reloads (watcher, poller and SIGHUP may fire together).
    reloading: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

fn version_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    hash.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

impl LiveTable {
    /// Loads the first table; a bad file here is fatal (there is nothing to keep serving).
    pub fn open(path: &Path, metrics: Arc<Metrics>) -> Result<Self, ConfigErrors> {
        let registry = Registry::default();
        let bounds = Bounds::default();
        let text = std::fs::read(path).map_err(|e| read_error(path, e))?;
        let config = config::parse(&String::from_utf8_lossy(&text), &path.display().to_string())?;
        let table = RouteTable::build(config, version_of(&text), &registry, &bounds);
        bounds.retain(&table.shadowed_routes());
        metrics.table_loaded(&table);
        Ok(LiveTable {
            path: path.to_owned(),
            table: ArcSwap::from_pointee(table),
            registry,
            bounds,
            status: Mutex::default(),
            reloading: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    /// The table to serve a request with (a snapshot: keep it for the whole request).
    pub fn current(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    pub fn status(&self) -> ReloadStatus {
        self.status.lock().unwrap().clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shadowed routes' backlogs, for the shadow thread to drain.
    pub fn shadow_backlogs(&self) -> Backlogs {
        self.bounds.backlogs()
    }

    /// Re-reads the file and swaps in the new table if it is valid and different.
    pub async fn reload(&self) -> Outcome {
        let _one_at_a_time = self.reloading.lock().await;
        let text = match tokio::fs::read(&self.path).await {
            Ok(t) => t,
            Err(e) => return self.refuse(String::from("unreadable"), read_error(&self.path, e)),
        };
        if text.iter().all(u8::is_ascii_whitespace) {
            // Caught between a writer's truncate and its write: not a table yet, and never a
            // valid one. The write that follows triggers another reload.
            return Outcome::Unchanged;
        }
        let version = version_of(&text);
        let current = self.current();
        let refused_already = self
            .status
            .lock()
            .unwrap()
            .last_refused
            .as_ref()
            .is_some_and(|r| r.version == version);
        if version == current.version || refused_already {
            return Outcome::Unchanged;
        }
        let parsed = config::parse(
            &String::from_utf8_lossy(&text),
            &self.path.display().to_string(),
        );
        let config = match parsed {
            Ok(c) => c,
            Err(errors) => return self.refuse(version, errors),
        };
        if config.proxy.listen != current.config.proxy.listen
            || config.proxy.admin != current.config.proxy.admin
            || config.proxy.threads != current.config.proxy.threads
        {
            tracing::warn!(
                "[proxy] listen, admin and threads apply at the next restart; the routes apply now"
            );
        }
        let table = RouteTable::build(config, version.clone(), &self.registry, &self.bounds);
        let in_use: Vec<_> = table
            .pools
            .values()
            .flat_map(|p| p.spec.addrs.iter().copied())
            .collect();
        self.metrics.table_loaded(&table);
        self.table.store(Arc::new(table));
        self.registry.retain(&in_use);
        self.bounds.retain(&self.current().shadowed_routes());
        {
            let mut status = self.status.lock().unwrap();
            status.applied += 1;
            // A good file supersedes the refusal: the admin API shows the error until then.
            status.last_refused = None;
        }
        self.metrics.reload("applied");
        tracing::info!(version, "route table reloaded");
        Outcome::Applied { version }
    }

    fn refuse(&self, version: String, errors: ConfigErrors) -> Outcome {
        tracing::error!(version, errors = %errors, "route table refused; the previous table keeps serving");
        let mut status = self.status.lock().unwrap();
        status.refused += 1;
        status.last_refused = Some(Refusal {
            at: service_kit::clock::rfc3339(service_kit::clock::now_ms()),
            version,
            errors: errors.0.iter().map(ToString::to_string).collect(),
        });
        self.metrics.reload("refused");
        Outcome::Refused
    }
}

fn read_error(path: &Path, e: std::io::Error) -> ConfigErrors {
    ConfigErrors(vec![config::ConfigError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        message: format!("cannot read the file: {e}"),
    }])
}

/// Keeps `live` current until the process stops: watcher, poller and SIGHUP (see module docs).
pub async fn keep_current(live: Arc<LiveTable>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let _watcher = start_watcher(live.path(), tx.clone());

    let poll_tx = tx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if poll_tx.send(()).is_err() {
                return;
            }
        }
    });

    #[cfg(unix)]
    {
        let hup_tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!(
                    "cannot listen for SIGHUP; reloads come from the watcher and polling only"
                );
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the route table");
                if hup_tx.send(()).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);

    while rx.recv().await.is_some() {
        // Settle: let an editor finish its burst of writes/renames, then reload once.
        let settle = live.current().config.proxy.reload_settle;
        tokio::time::sleep(settle).await;
        while rx.try_recv().is_ok() {}
        live.reload().await;
    }
}

/// Watches the directory that holds the file. An event that names the file (written, created,
/// renamed onto) or a `..`-prefixed entry (Kubernetes swaps `..data`) asks for a (cheap,
/// hash-checked) reload; other files in the directory are ignored. Returns the watcher, which
/// stops when dropped; `None` if watching is unavailable (polling still works).
fn start_watcher(
    path: &Path,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let name = path.file_name().map(|n| n.to_owned());
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let concerns_us = event.paths.iter().any(|p| {
            let file = p.file_name();
            file == name.as_deref()
                || file
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.starts_with(".."))
        });
        if concerns_us {
            let _ = tx.send(());
        }
    };
    match notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(&dir, notify::RecursiveMode::NonRecursive)
            .map(|_| w)
    }) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config directory; relying on polling");
            None
        }
    }
}
