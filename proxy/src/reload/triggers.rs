//! What prompts a look at the route table file, and the loop that turns looks into reloads.
//!
//! - A watcher on the file's *directory*: editors save by writing a temporary file and renaming
//!   it over the original, Kubernetes ConfigMaps swap a `..data` symlink; both replace the
//!   watched inode, so watching the file itself would go deaf after the first save.
//! - A poll every 500 ms, for file systems where events do not arrive (network mounts, some
//!   containers): a change is picked up within a second even with no watcher.
//! - `SIGHUP`: the operator says "now"; the file is read and applied at once, without the
//!   settle wait (see [`super::settle`] for what the wait protects against).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::LiveTable;
use super::settle::{self, Step};

/// Why the file is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// An event or the poll: apply once the file has settled.
    Look,
    /// SIGHUP: apply what is there now.
    Now,
}

/// How often the file is looked at when no event says it changed.
const POLL: Duration = Duration::from_millis(500);

/// Keeps `live` current until the process stops (see the module docs).
pub(crate) async fn keep_current(live: Arc<LiveTable>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Trigger>();
    let _watcher = start_watcher(live.path(), tx.clone());
    spawn_poll(tx.clone());
    spawn_sighup(tx.clone());
    drop(tx);

    while let Some(trigger) = rx.recv().await {
        if trigger == Trigger::Now {
            live.reload_now().await;
            continue;
        }
        let mut look = match settle::begin(&live).await {
            Step::Current | Step::Settled => continue,
            Step::Unsettled(look) => look,
        };
        // Looks prompted while waiting are this debounce's own; SIGHUP cuts it short.
        loop {
            let wait = tokio::time::sleep(settle::delay(&live));
            tokio::pin!(wait);
            let now = loop {
                tokio::select! {
                    () = &mut wait => break false,
                    t = rx.recv() => match t {
                        Some(Trigger::Now) => break true,
                        Some(Trigger::Look) => {}
                        None => return,
                    },
                }
            };
            if now {
                live.reload_now().await;
                break;
            }
            match settle::again(&live, &look).await {
                Step::Unsettled(changed) => look = changed,
                Step::Current | Step::Settled => break,
            }
        }
    }
}

fn spawn_poll(tx: mpsc::UnboundedSender<Trigger>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            if tx.send(Trigger::Look).is_err() {
                return;
            }
        }
    });
}

fn spawn_sighup(tx: mpsc::UnboundedSender<Trigger>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!(
                "cannot listen for SIGHUP; reloads come from the watcher and polling only"
            );
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the route table now");
            if tx.send(Trigger::Now).is_err() {
                return;
            }
        }
    });
}

/// Watches the directory that holds the file. An event that names the file (written, created,
/// renamed onto) or a `..`-prefixed entry (Kubernetes swaps `..data`) asks for a look; other
/// files in the directory are ignored. Returns the watcher, which stops when dropped; `None` if
/// watching is unavailable (polling still works).
fn start_watcher(
    path: &Path,
    tx: mpsc::UnboundedSender<Trigger>,
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
            let _ = tx.send(Trigger::Look);
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
