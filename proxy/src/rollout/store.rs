//! A rollout's progress on disk, so a restarted proxy resumes the step it was at.
//!
//! Progress is operational state, not configuration: the file states the intent (the plan),
//! this directory remembers how far the plan got. One JSON file per route (`<route>.json`),
//! replaced whole by write-to-temporary, fsync, rename, so a crash leaves the old state or the
//! new one, never half of either; and one append-only `history.jsonl` of every event with its
//! time, for `banyan history` (a line a crash cut short is skipped, and the next one starts on
//! a line of its own).
//!
//! Each saved state carries the fingerprint of the plan it belongs to: editing a route's
//! rollout block gives a new fingerprint, and a state saved for another plan is not resumed
//! (the rollout starts over, as the operator's edit says).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::gate::Judged;
use super::progress::{Event, Phase};
use super::traffic::{Compared, Seen};

/// What is kept of one route's rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Saved {
    /// The plan this progress belongs to ([`Store::load`] ignores a state of another).
    pub(crate) plan: String,
    pub(crate) phase: Phase,
    /// When the current step began, in milliseconds since the Unix epoch.
    pub(crate) step_since_ms: u64,
    /// Bumped at every change: proxies sharing a rollout through Redis write a state only
    /// over the one they read ([`super::shared`]).
    #[serde(default)]
    pub(crate) rev: u64,
    /// Where the judging of the current step stands.
    #[serde(default)]
    pub(crate) judging: Judging,
}

/// What judging a step needs beyond its phase, kept with it so a proxy that picks the rollout
/// up (after a restart, or another proxy sharing it) judges the step the same way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Judging {
    /// What each side had served, and the shadow compared, when the current window began.
    pub(crate) new: Seen,
    pub(crate) old: Seen,
    pub(crate) shadow: Compared,
    /// When the window began and when the next check is due (Unix milliseconds).
    pub(crate) window_since_ms: u64,
    pub(crate) next_check_ms: u64,
    /// The last check's gates, for `banyan status`.
    pub(crate) last: Vec<Judged>,
    pub(crate) last_check_ms: Option<u64>,
    /// A hold is written to the history once per step, not at every check.
    pub(crate) held_recorded: bool,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) at_ms: u64,
    pub(crate) route: String,
    #[serde(flatten)]
    pub(crate) event: Event,
}

#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir`, created if missing.
    pub(crate) fn open(dir: &Path) -> io::Result<Store> {
        fs::create_dir_all(dir)?;
        Ok(Store {
            dir: dir.to_owned(),
        })
    }

    /// A route id as a file name: anything but ASCII letters, digits, `-` and `_` is escaped,
    /// so no id reaches outside the directory.
    fn file_of(&self, route: &str) -> PathBuf {
        let name: String = route
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c.to_string()
                } else {
                    format!("%{:02x}", c as u32)
                }
            })
            .collect();
        self.dir.join(format!("{name}.json"))
    }

    /// The saved progress of `route` for `plan`; `None` when there is none, or it was saved
    /// for another plan. A file that cannot be read as a state is an error, named with its
    /// path: it is never taken as "no progress" silently.
    pub(crate) fn load(&self, route: &str, plan: &str) -> io::Result<Option<Saved>> {
        let path = self.file_of(route);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let saved: Saved = serde_json::from_slice(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        Ok((saved.plan == plan).then_some(saved))
    }

    /// Replaces `route`'s saved progress, atomically.
    pub(crate) fn save(&self, route: &str, saved: &Saved) -> io::Result<()> {
        let path = self.file_of(route);
        let tmp = path.with_extension("json.tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(saved).map_err(io::Error::other)?)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()
    }

    /// Forgets `route`'s saved progress (its rollout or freeze is over).
    pub(crate) fn remove(&self, route: &str) {
        let path = self.file_of(route);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::error!(path = %path.display(), error = %e, "cannot remove rollout progress");
        }
    }

    /// Appends one event to the history. A last line cut short by a crash is ended first, so
    /// the new entry is a line of its own.
    pub(crate) fn record(&self, entry: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let path = self.dir.join("history.jsonl");
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let len = f.metadata()?.len();
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8; 1];
            f.seek(SeekFrom::Start(len - 1))?;
            f.read_exact(&mut last)?;
            if last[0] != b'\n' {
                line.insert(0, b'\n');
            }
        }
        f.write_all(&line)?;
        f.sync_data()
    }

    /// The history, oldest first, and how many lines did not read (a line cut short by a
    /// crash, or damaged by hand): those are skipped, never the rest of the history with them.
    pub(crate) fn history(&self) -> io::Result<(Vec<Entry>, usize)> {
        self.history_from(None)
    }

    /// The newest entries of the history, oldest first: those in its last `bytes` bytes (so
    /// a status read every second costs the same however long the history has grown).
    pub(crate) fn recent_history(&self, bytes: u64) -> io::Result<Vec<Entry>> {
        Ok(self.history_from(Some(bytes))?.0)
    }

    fn history_from(&self, tail: Option<u64>) -> io::Result<(Vec<Entry>, usize)> {
        use std::io::{Seek, SeekFrom};
        let mut f = match File::open(self.dir.join("history.jsonl")) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let start = tail.map_or(0, |bytes| len.saturating_sub(bytes));
        f.seek(SeekFrom::Start(start))?;
        let mut lines = BufReader::new(f).split(b'\n');
        if start > 0 {
            // The first line read is the end of one that began before the tail.
            lines.next();
        }
        let mut out = Vec::new();
        let mut skipped = 0;
        for line in lines {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice(&line) {
                Ok(entry) => out.push(entry),
                Err(_) => skipped += 1,
            }
        }
        Ok((out, skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::super::gate::{Gate, Judged, Verdict};
    use super::*;

    fn aborted() -> Phase {
        Phase::Aborted {
            step: 2,
            cause: Judged {
                gate: Gate::ErrorRate,
                verdict: Verdict::Fail,
                observed: 2.9,
                allowed: 0.5,
                sample: 400,
                min_sample: 200,
                reason: "new 3.00 % of 400, old 0.10 % of 8000".into(),
            },
        }
    }

    #[test]
    fn progress_survives_a_restart_for_the_same_plan_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load("products", "plan-a").unwrap(), None);
        let saved = Saved {
            plan: "plan-a".into(),
            phase: aborted(),
            step_since_ms: 1_764_000_000_000,
            rev: 3,
            judging: Judging::default(),
        };
        store.save("products", &saved).unwrap();
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.load("products", "plan-a").unwrap(), Some(saved));
        assert_eq!(reopened.load("products", "plan-b").unwrap(), None);
        // Nothing half-written is left beside it.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["products.json"]);
    }

    #[test]
    fn a_damaged_state_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(dir.path().join("products.json"), "{\"plan\": \"a\", \"pha").unwrap();
        let err = store.load("products", "a").unwrap_err();
        assert!(err.to_string().contains("products.json"), "{err}");
    }

    #[test]
    fn route_ids_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let path = store.file_of("../../etc/passwd");
        assert_eq!(path.parent().unwrap(), dir.path());
    }

    #[test]
    fn the_history_keeps_every_event_and_skips_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let events = [
            Event::Advanced {
                from: 0.0,
                to: 5.0,
                gates: Vec::new(),
            },
            Event::Held {
                reason: "latency inconclusive: 12 requests, 200 needed".into(),
            },
            Event::Migrated { gates: Vec::new() },
        ];
        for (i, event) in events.iter().enumerate() {
            store
                .record(&Entry {
                    at_ms: 1000 + i as u64,
                    route: "products".into(),
                    event: event.clone(),
                })
                .unwrap();
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("history.jsonl"))
            .unwrap();
        f.write_all(b"{\"at_ms\": 17, \"rou").unwrap();
        let (history, skipped) = store.history().unwrap();
        let got: Vec<Event> = history.into_iter().map(|e| e.event).collect();
        assert_eq!((got.as_slice(), skipped), (&events[..], 1));
        // An entry written after the torn line is a line of its own, and reads.
        store
            .record(&Entry {
                at_ms: 2000,
                route: "products".into(),
                event: Event::Migrated { gates: Vec::new() },
            })
            .unwrap();
        let (history, skipped) = store.history().unwrap();
        assert_eq!((history.len(), skipped), (4, 1));
    }

    #[test]
    fn the_recent_history_is_the_newest_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..200u64 {
            store
                .record(&Entry {
                    at_ms: i,
                    route: "*".into(),
                    event: Event::TableApplied {
                        version: format!("v{i}"),
                    },
                })
                .unwrap();
        }
        let all = store.history().unwrap().0;
        let recent = store.recent_history(1000).unwrap();
        assert!(!recent.is_empty() && recent.len() < 200, "{}", recent.len());
        // Whole entries, the newest ones, in order: the line the tail began inside is left out.
        assert_eq!(recent[..], all[all.len() - recent.len()..]);
        assert_eq!(store.recent_history(1 << 30).unwrap(), all);
    }
}
