//! When a route table file is complete enough to apply: once it has stayed the same for the
//! whole settle delay.
//!
//! A file is not written in one instant. A slow writer (`{ head; sleep 0.1; tail; } > file`),
//! a tool that truncates and then writes, or a copy over a network mount each leave the file
//! half-written for a while, and the half may well be a valid table of its own: applied, it
//! sends traffic to the wrong place until the rest arrives. Events cannot tell a finished
//! write from a pause in one, so every look at the file, whatever prompted it (an event, the
//! poll, a second event while waiting), starts the same debounce: note what the file is (its
//! content hash, size and modification time), wait the settle delay, look again, and apply
//! only when nothing changed in between. A file that keeps changing is applied once it stops.
//! What is seen mid-write is never parsed, so it is never refused either; a missing file is
//! treated the same way (a delete followed by a create is a moment without a file).

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{LiveTable, version_of};

/// One look at the file.
#[derive(Debug)]
pub(crate) enum Look {
    Read {
        /// Hash of the bytes, as the table's version.
        version: String,
        len: u64,
        modified: Option<SystemTime>,
        bytes: Vec<u8>,
    },
    /// Missing or unreadable (the error is the reason).
    Unreadable(std::io::Error),
}

impl Look {
    /// Reads the file (following a symlink, as a ConfigMap mount has one) with its metadata.
    pub(crate) async fn take(path: &Path) -> Look {
        let meta = match tokio::fs::metadata(path).await {
            Ok(m) => m,
            Err(e) => return Look::Unreadable(e),
        };
        match tokio::fs::read(path).await {
            Ok(bytes) => Look::Read {
                version: version_of(&bytes),
                len: bytes.len() as u64,
                modified: meta.modified().ok(),
                bytes,
            },
            Err(e) => Look::Unreadable(e),
        }
    }

    /// Whether two looks saw the same file: same content hash, size and modification time (or
    /// the same reason it could not be read).
    pub(crate) fn same_as(&self, other: &Look) -> bool {
        match (self, other) {
            (
                Look::Read {
                    version: v1,
                    len: l1,
                    modified: m1,
                    ..
                },
                Look::Read {
                    version: v2,
                    len: l2,
                    modified: m2,
                    ..
                },
            ) => v1 == v2 && l1 == l2 && m1 == m2,
            (Look::Unreadable(a), Look::Unreadable(b)) => a.kind() == b.kind(),
            _ => false,
        }
    }
}

/// Where the debounce stands after a look.
pub(crate) enum Step {
    /// Nothing to do: the file is the live table's (or exactly what was refused last).
    Current,
    /// The file changed since the previous look: look again after the settle delay.
    Unsettled(Look),
    /// The file stayed the same for the settle delay: it was applied or refused.
    Settled,
}

/// The first look of a debounce: nothing to do, or wait and look again.
pub(crate) async fn begin(live: &LiveTable) -> Step {
    let look = Look::take(live.path()).await;
    if let Look::Read { version, .. } = &look
        && live.is_current(version)
    {
        return Step::Current;
    }
    Step::Unsettled(look)
}

/// A later look, `settle` after `before`: applied when the file did not change, else another
/// round.
pub(crate) async fn again(live: &LiveTable, before: &Look) -> Step {
    let look = Look::take(live.path()).await;
    if !look.same_as(before) {
        return Step::Unsettled(look);
    }
    // Applied or refused: the outcome is in the live table's status and the log.
    let _ = match look {
        Look::Read { bytes, .. } => live.apply(&bytes).await,
        Look::Unreadable(e) => live.apply_unreadable(e).await,
    };
    Step::Settled
}

/// The settle delay of the live table (the file's own setting applies from the next look).
pub(crate) fn delay(live: &LiveTable) -> Duration {
    live.current().config.proxy.reload_settle
}
