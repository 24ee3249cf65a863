//! Hot reload: the live route table and what keeps it current.
//!
//! [`LiveTable`] holds the current [`RouteTable`] in an `ArcSwap`: readers take a snapshot
//! without locking, a reload swaps in a new, completely built table in one atomic store.
//! Requests in flight keep the snapshot they started with.
//!
//! What decides *when* a file is read for good lives beside it: [`triggers`] (a watcher on
//! the file's directory, a 500 ms poll, SIGHUP) ask for a look, and [`settle`] applies a file
//! only once it has stayed the same (content hash, size and modification time) for the whole
//! settle delay, so a file caught mid-write is never applied, and never counted as refused.
//! SIGHUP skips the wait: the operator says the file is complete.
//!
//! A settled file that does not validate is refused: the old table keeps serving, the error is
//! logged with its `file:line:column`, counted, and shown by the admin API until a good file
//! is saved (the live table's own file included: putting the previous file back after a typo
//! clears the refusal). A file whose bytes equal the live table's is not rebuilt.

pub(crate) mod settle;
pub(crate) mod triggers;

pub(crate) use triggers::keep_current;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{self, ConfigErrors};
use crate::edge::breaker::Breakers;
use crate::metrics::Metrics;
use crate::rollout::control::Rollouts;
use crate::route_table::RouteTable;
use crate::shadow::bounds::{Backlogs, Bounds};
use crate::upstream::Registry;

/// What the admin API reports about reloads.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ReloadStatus {
    pub applied: u64,
    pub refused: u64,
    pub last_refused: Option<Refusal>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Refusal {
    pub at: String,
    pub version: String,
    pub errors: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Unchanged,
    Applied { version: String },
    Refused,
}

pub(crate) struct LiveTable {
    path: PathBuf,
    table: ArcSwap<RouteTable>,
    registry: Registry,
    bounds: Bounds,
    /// Circuit breakers by route and upstream: kept across reloads like backend health.
    breakers: Breakers,
    /// Rollouts: their live shares and records (kept across reloads), and their controller.
    rollouts: Arc<Rollouts>,
    status: Mutex<ReloadStatus>,
    /// Serializes reloads (watcher, poller and SIGHUP may fire together).
    reloading: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

pub(crate) fn version_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    hash.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

impl LiveTable {
    /// Loads the first table; a bad file here is fatal (there is nothing to keep serving).
    pub(crate) fn open(path: &Path, metrics: Arc<Metrics>) -> Result<Self, ConfigErrors> {
        let registry = Registry::default();
        let bounds = Bounds::default();
        let breakers = Breakers::new(metrics.clone());
        let text = std::fs::read(path).map_err(|e| read_error(path, e))?;
        let config = config::parse(&String::from_utf8_lossy(&text), &path.display().to_string())?;
        let state_dir = path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&config.proxy.state_dir);
        let rollouts = Arc::new(Rollouts::open(&state_dir));
        let table = RouteTable::build(
            config,
            version_of(&text),
            &registry,
            &bounds,
            &breakers,
            &rollouts,
        );
        bounds.retain(&table.shadowed_routes());
        rollouts.table_applied(&table.version);
        metrics.table_loaded(&table);
        Ok(LiveTable {
            path: path.to_owned(),
            table: ArcSwap::from_pointee(table),
            registry,
            bounds,
            breakers,
            rollouts,
            status: Mutex::default(),
            reloading: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    /// The table to serve a request with (a snapshot: keep it for the whole request).
    pub(crate) fn current(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// The live table and the reload status that goes with it, read together.
    pub(crate) fn current_with_status(&self) -> (Arc<RouteTable>, ReloadStatus) {
        let status = self.status.lock().unwrap();
        (self.current(), status.clone())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The rollouts of the routes (for their controller and the admin API).
    pub(crate) fn rollouts(&self) -> &Arc<Rollouts> {
        &self.rollouts
    }

    /// The shadowed routes' backlogs, for the shadow thread to drain.
    pub(crate) fn shadow_backlogs(&self) -> Backlogs {
        self.bounds.backlogs()
    }

    /// Reads the file and applies it at once (SIGHUP: no settle wait).
    pub(crate) async fn reload_now(&self) -> Outcome {
        match settle::Look::take(&self.path).await {
            settle::Look::Read { bytes, .. } => self.apply(&bytes).await,
            settle::Look::Unreadable(e) => self.apply_unreadable(e).await,
        }
    }

    /// Applies a settled file that could not be read: refused (once per cause).
    pub(crate) async fn apply_unreadable(&self, e: std::io::Error) -> Outcome {
        let _one_at_a_time = self.reloading.lock().await;
        let version = format!("unreadable: {}", e.kind());
        if self.refused_already(&version) {
            return Outcome::Unchanged;
        }
        self.refuse(version, read_error(&self.path, e))
    }

    fn refused_already(&self, version: &str) -> bool {
        self.status
            .lock()
            .unwrap()
            .last_refused
            .as_ref()
            .is_some_and(|r| r.version == version)
    }

    /// Builds and swaps in the table `text` describes, if it is valid and differs from the live
    /// one; refuses it otherwise. `text` is a settled file (see [`settle`]).
    pub(crate) async fn apply(&self, text: &[u8]) -> Outcome {
        let _one_at_a_time = self.reloading.lock().await;
        let version = version_of(text);
        let current = self.current();
        if version == current.version {
            // The live table's own file is back (say, after a typo was undone): a good file is
            // saved, so the refusal it replaced is over.
            let cleared = self.status.lock().unwrap().last_refused.take();
            if cleared.is_some() {
                tracing::info!(
                    version,
                    "route table file matches the live table again; refusal cleared"
                );
            }
            return Outcome::Unchanged;
        }
        if self.refused_already(&version) {
            return Outcome::Unchanged;
        }
        let parsed = config::parse(
            &String::from_utf8_lossy(text),
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
                "[proxy] listen, admin and threads apply at the next restart or upgrade; the routes apply now"
            );
        }
        let table = RouteTable::build(
            config,
            version.clone(),
            &self.registry,
            &self.bounds,
            &self.breakers,
            &self.rollouts,
        );
        let breakers_in_use = table.breaker_keys();
        let in_use: Vec<_> = table
            .pools
            .values()
            .flat_map(|p| p.spec.addrs.iter().copied())
            .collect();
        self.metrics.table_loaded(&table);
        {
            // The table and the count of applied reloads change together: a reader of both
            // ([`LiveTable::current_with_status`]) sees neither without the other.
            let mut status = self.status.lock().unwrap();
            self.table.store(Arc::new(table));
            status.applied += 1;
            // A good file supersedes the refusal: the admin API shows the error until then.
            status.last_refused = None;
        }
        self.registry.retain(&in_use);
        self.breakers.retain(&breakers_in_use);
        self.bounds.retain(&self.current().shadowed_routes());
        self.rollouts.retain(&self.current());
        self.rollouts.table_applied(&version);
        self.metrics.reload("applied");
        tracing::info!(version, "route table reloaded");
        Outcome::Applied { version }
    }

    /// Whether a look at the file needs no further work: its bytes are the live table's and
    /// nothing is refused, or they are exactly what was refused last.
    pub(crate) fn is_current(&self, version: &str) -> bool {
        let status = self.status.lock().unwrap();
        match &status.last_refused {
            None => version == self.table.load().version,
            Some(r) => r.version == version,
        }
    }

    fn refuse(&self, version: String, errors: ConfigErrors) -> Outcome {
        tracing::error!(
            version,
            errors = errors.0.len(),
            "route table refused; the previous table keeps serving"
        );
        // One line per problem, each naming its file:line:column, so none is cut off.
        for e in &errors.0 {
            tracing::error!("refused: {e}");
        }
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
