//! The rollout controller: the loop that judges each rolling-out route's current step on its
//! live traffic, moves it on, holds it or aborts it, and the operator's actions on it.
//!
//! Every tick the controller looks at the live table. A route whose rollout block is new, or
//! differs from the one its progress was saved under, starts over at its first step; one that
//! the proxy had been running before a restart resumes the step it was at (its progress is in
//! the state directory, [`super::store`]). A step is judged once it has run for `interval`:
//! - the traffic judged is what the step has served since it began (or since its last failed
//!   check: two failed checks in a row are two separate pieces of evidence), so a step that
//!   holds for lack of traffic gathers more with every interval;
//! - a pass moves the share up (or waits for approval), a failure is counted and `failures` of
//!   them in a row abort, an inconclusive check holds; see [`super::progress`];
//! - the share a step gives the new side is set at once on the route's [`Live`], which every
//!   request reads.
//!
//! Several proxies can run one rollout through Redis ([`super::shared`]): there the state in
//! Redis is the truth, one proxy (the lease holder) judges on every proxy's traffic summed,
//! and every proxy adopts the state it reads at each tick. This file is the same in both
//! cases: a tick takes what was read ([`Inputs`]) and returns what to write ([`Changes`]).
//!
//! A route whose rollout block is removed keeps the share it had (frozen) until the file gives
//! it a split or the operator rolls it back: removing the block says "stop moving", not "move
//! back". Every event goes to the history with its time and its figures, and to the log.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::gate::{self, Judged};
use super::live::{Live, Registry};
use super::progress::{Event, Phase, Plan};
use super::store::{Entry, Judging, Saved, Store};
use super::traffic::{self, Compared, Seen};
use crate::config::{RolloutSpec, RouteSpec, SplitSpec, StickyKey};
use crate::route_table::RouteTable;
use crate::shadow::results::Results;

/// How often the controller looks at the table (checks are due by each rollout's interval).
const TICK: Duration = Duration::from_millis(100);
/// History entries kept in memory when there is no state directory to keep them in.
const HISTORY_IN_MEMORY: usize = 10_000;
/// The saved "plan" of a frozen route.
const FROZEN: &str = "frozen";

/// What one route's two sides served, and its shadow compared, so far: this proxy's, or every
/// proxy's summed.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Observed {
    pub(crate) new: Seen,
    pub(crate) old: Seen,
    pub(crate) shadow: Compared,
}

impl Observed {
    pub(crate) fn plus(&self, other: &Observed) -> Observed {
        Observed {
            new: self.new.plus(&other.new),
            old: self.old.plus(&other.old),
            shadow: Compared {
                compared: self.shadow.compared + other.shadow.compared,
                mismatched: self.shadow.mismatched + other.shadow.mismatched,
            },
        }
    }
}

/// What a tick works from when the rollouts are shared through Redis.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    /// This proxy holds the lease: it starts rollouts and judges them.
    pub(crate) decides: bool,
    /// The states in Redis, by route.
    pub(crate) states: BTreeMap<String, Saved>,
}

/// What a tick or an action decided, to be kept: states (with the revision each was derived
/// from, `None` for one that must be new) and history entries.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub(crate) states: Vec<(String, Saved, Option<u64>)>,
    pub(crate) entries: Vec<Entry>,
}

/// One route's rollout as the controller runs it.
#[derive(Debug)]
struct Track {
    spec: RolloutSpec,
    plan: Plan,
    fingerprint: String,
    live: Arc<Live>,
    saved: Saved,
}

/// A route frozen at the share its removed rollout had reached.
#[derive(Debug)]
struct Freeze {
    live: Arc<Live>,
    saved: Saved,
}

#[derive(Debug, Default)]
struct State {
    tracks: BTreeMap<String, Track>,
    frozen: BTreeMap<String, Freeze>,
}

/// Every rollout of the proxy: their live shares and records, the controller's state, and
/// where progress and history are kept on this machine.
pub(crate) struct Rollouts {
    registry: Registry,
    /// Opened at the first rollout (a proxy without one never needs the directory).
    store: std::sync::OnceLock<Option<Store>>,
    dir: PathBuf,
    state: Mutex<State>,
    /// The history when there is no store (the newest [`HISTORY_IN_MEMORY`] entries).
    memory: Mutex<VecDeque<Entry>>,
    /// The traffic the last tick judged from, for the status's windows.
    observed: Mutex<BTreeMap<String, Observed>>,
    /// Set once the rollouts are shared through Redis ([`super::shared`]).
    shared: std::sync::OnceLock<super::shared::Shared>,
    /// Entries for the shared history that no tick or action carries (applied tables).
    outbox: Mutex<VecDeque<Entry>>,
    /// Shared: this proxy held the lease at its last tick.
    decides: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Rollouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollouts").field("dir", &self.dir).finish()
    }
}

/// An operator's action on a route's rollout (`banyan rollout …`, `banyan rollback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Approve,
    Pause,
    Resume,
    Rollback,
}

impl Action {
    pub(crate) fn parse(name: &str) -> Option<Action> {
        match name {
            "approve" => Some(Action::Approve),
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "rollback" => Some(Action::Rollback),
            _ => None,
        }
    }
}

/// Why an action was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    NoRollout(String),
    NotNow { route: String, phase: String },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NoRollout(r) => write!(f, "route {r:?} has no rollout"),
            Refused::NotNow { route, phase } => {
                write!(f, "route {route:?} is {phase}: nothing to do")
            }
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    service_kit::clock::now_ms().max(0) as u64
}

/// The phase as an operator reads it.
pub(crate) fn phase_label(phase: &Phase, plan_steps: &[f64]) -> String {
    let at = |step: usize| plan_steps.get(step).copied().unwrap_or(0.0);
    match phase {
        Phase::Running { step, .. } if at(*step) == 0.0 => "shadow".into(),
        Phase::Running { step, .. } => format!("canary {} %", at(*step)),
        Phase::AwaitingApproval { step, .. } => {
            format!("canary {} %, awaiting approval", at(*step))
        }
        Phase::Paused { step } => format!("paused at {} %", at(*step)),
        Phase::Aborted { .. } => "aborted".into(),
        Phase::Migrated => "migrated".into(),
        Phase::RolledBack => "rolled back".into(),
        Phase::Frozen { percent, .. } => format!("frozen at {percent} %"),
    }
}

/// A sticky key as [`StickyKey`]'s `Display` writes it, read back (for a frozen route).
fn parse_sticky(text: &str) -> StickyKey {
    match text.split_once(':') {
        Some(("cookie", name)) => StickyKey::Cookie(name.to_owned()),
        Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
            .map_or(StickyKey::PerRequest, StickyKey::Header),
        _ if text == "client" => StickyKey::ClientAddr,
        _ => StickyKey::PerRequest,
    }
}

fn step_of(phase: &Phase) -> Option<usize> {
    match phase {
        Phase::Running { step, .. }
        | Phase::AwaitingApproval { step, .. }
        | Phase::Paused { step } => Some(*step),
        _ => None,
    }
}

/// A route's shadow comparisons so far (noise-only differences are not mismatches).
fn compared(results: &Results, route: &str) -> Compared {
    let c = results.route_totals(route);
    Compared {
        compared: c.compared,
        mismatched: c.mismatched,
    }
}

fn entry(route: &str, event: Event) -> Entry {
    Entry {
        at_ms: now_ms(),
        route: route.to_owned(),
        event,
    }
}

/// A fresh window from `observed`, judged `interval` from `now`.
fn window(observed: &Observed, now: u64, interval: Duration, last: &Judging) -> Judging {
    Judging {
        new: observed.new.clone(),
        old: observed.old.clone(),
        shadow: observed.shadow,
        window_since_ms: now,
        next_check_ms: now + interval.as_millis() as u64,
        last: last.last.clone(),
        last_check_ms: last.last_check_ms,
        held_recorded: last.held_recorded,
    }
}

impl Rollouts {
    /// The rollouts of a proxy whose progress is kept in `dir` (created at the first rollout).
    pub(crate) fn open(dir: &Path) -> Rollouts {
        Rollouts {
            registry: Registry::default(),
            store: std::sync::OnceLock::new(),
            dir: dir.to_owned(),
            state: Mutex::default(),
            memory: Mutex::default(),
            observed: Mutex::default(),
            shared: std::sync::OnceLock::new(),
            outbox: Mutex::default(),
            decides: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether this proxy decides: always alone, by the lease when shared.
    pub(crate) fn decides(&self) -> bool {
        self.shared.get().is_none() || self.decides.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// From now on the rollouts are shared through Redis.
    pub(crate) fn share(&self, shared: super::shared::Shared) {
        let _ = self.shared.set(shared);
    }

    /// The Redis the rollouts are shared through, once connected.
    pub(crate) fn shared(&self) -> Option<&super::shared::Shared> {
        self.shared.get()
    }

    /// The entries waiting for the shared history.
    pub(crate) fn take_outbox(&self) -> Vec<Entry> {
        self.outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// The store, opened now if this is the first time a rollout needs it. A directory that
    /// cannot be used is logged once, and rollouts then run from memory (a restart starts them
    /// over). What the history held in memory until then is written to it.
    fn store(&self) -> Option<&Store> {
        self.store
            .get_or_init(|| match Store::open(&self.dir) {
                Ok(store) => {
                    let earlier: Vec<Entry> = self
                        .memory
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .drain(..)
                        .collect();
                    for entry in &earlier {
                        if let Err(e) = store.record(entry) {
                            tracing::error!(error = %e, "cannot append to the rollout history");
                        }
                    }
                    Some(store)
                }
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), error = %e, "cannot keep rollout progress in the state directory; rollouts run from memory and a restart starts them over (set [proxy] state_dir)");
                    None
                }
            })
            .as_ref()
    }

    /// The store if a rollout opened it already (the history does not open it by itself).
    fn opened(&self) -> Option<&Store> {
        self.store.get().and_then(Option::as_ref)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn load(&self, route: &str, fingerprint: &str) -> Option<Saved> {
        let store = self.store()?;
        match store.load(route, fingerprint) {
            Ok(saved) => saved,
            Err(e) => {
                tracing::error!(route, error = %e, "rollout progress unreadable; the rollout starts over");
                None
            }
        }
    }

    /// A frozen route's saved share; the directory is not created to find out.
    fn load_frozen(&self, route: &str) -> Option<Saved> {
        if self.opened().is_none() && !self.dir.exists() {
            return None;
        }
        self.load(route, FROZEN)
    }

    /// Keeps a state in the state directory (this machine's copy).
    fn save(&self, route: &str, saved: &Saved) {
        if let Some(store) = self.store()
            && let Err(e) = store.save(route, saved)
        {
            tracing::error!(route, error = %e, "cannot save rollout progress; a restart would resume an earlier step");
        }
    }

    fn remove(&self, route: &str) {
        if let Some(store) = self.store() {
            store.remove(route);
        }
    }

    /// Logs an entry and appends it to this machine's history.
    pub(crate) fn record(&self, entry: &Entry) {
        let line = serde_json::to_string(&entry.event).unwrap_or_default();
        let route = entry.route.as_str();
        match &entry.event {
            Event::Aborted { .. } | Event::FailedCheck { .. } => {
                tracing::warn!(target: "rollout", route, event = %line, "rollout")
            }
            _ => tracing::info!(target: "rollout", route, event = %line, "rollout"),
        }
        match self.opened() {
            Some(store) => {
                if let Err(e) = store.record(entry) {
                    tracing::error!(error = %e, "cannot append to the rollout history");
                }
            }
            None => {
                let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
                memory.push_back(entry.clone());
                if memory.len() > HISTORY_IN_MEMORY {
                    memory.pop_front();
                }
            }
        }
    }

    /// Keeps what a tick or an action decided, on this machine alone (no Redis).
    pub(crate) fn keep(&self, changes: Changes) {
        for (route, saved, _) in &changes.states {
            self.save(route, saved);
        }
        for e in &changes.entries {
            self.record(e);
        }
    }

    /// A route table was applied (at start and at every reload): in this machine's history,
    /// and in the shared one once the rollouts are shared (the newest 100 wait for it).
    pub(crate) fn table_applied(&self, version: &str) {
        let e = entry(
            "*",
            Event::TableApplied {
                version: version.to_owned(),
            },
        );
        self.record(&e);
        let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        outbox.push_back(e);
        if outbox.len() > 100 {
            outbox.pop_front();
        }
    }

    /// This machine's newest history entries (about the last `bytes` of it), oldest first.
    pub(crate) fn recent_history(&self, bytes: u64) -> Vec<Entry> {
        match self.opened() {
            Some(store) => store.recent_history(bytes).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the rollout history");
                Vec::new()
            }),
            None => self.history().0,
        }
    }

    /// This machine's history, oldest first, and how many stored lines did not read.
    pub(crate) fn history(&self) -> (Vec<Entry>, usize) {
        match self.opened() {
            Some(store) => store.history().unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the rollout history");
                (Vec::new(), 0)
            }),
            None => (
                self.memory
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect(),
                0,
            ),
        }
    }

    /// For [`RouteTable::build`]: the live state of route `r`'s rollout (created at the share
    /// its saved progress had, so a restarted proxy serves that share from its first request),
    /// or of a frozen route's share, for which `r.split` is set to the rollout's side and key.
    pub(crate) fn attach(&self, r: &mut RouteSpec) -> Option<Arc<Live>> {
        if let (Some(spec), Some(split)) = (&r.rollout, &r.split) {
            let fingerprint = spec.fingerprint(&split.sticky);
            let plan = spec.plan();
            let live = self.registry.get(&r.id, &spec.to, &split.sticky, || {
                self.load(&r.id, &fingerprint)
                    .map_or_else(|| Phase::start().percent(&plan), |s| s.phase.percent(&plan))
            });
            return Some(live);
        }
        if r.split.is_some() {
            return None; // the file says what the route does
        }
        // A rollout this table no longer has (its block was just removed: it freezes), or a
        // route frozen before a restart.
        let live = self.registry.find(&r.id).or_else(|| {
            let Some(Saved {
                phase:
                    Phase::Frozen {
                        percent,
                        to,
                        sticky,
                    },
                ..
            }) = self.load_frozen(&r.id)
            else {
                return None;
            };
            Some(
                self.registry
                    .get(&r.id, &to, &parse_sticky(&sticky), || percent),
            )
        })?;
        if live.to == r.upstream {
            return None; // the file now sends the route where the rollout was taking it
        }
        r.split = Some(SplitSpec {
            to: live.to.clone(),
            basis_points: 0,
            sticky: live.sticky.clone(),
        });
        Some(live)
    }

    /// After a table is built: forgets the live state of rollouts it no longer has.
    pub(crate) fn retain(&self, table: &RouteTable) {
        let keep: Vec<(String, String)> = (0..table.config.routes.len())
            .filter_map(|i| table.rollout(i).map(|l| (l.route.clone(), l.to.clone())))
            .collect();
        self.registry.retain(&keep);
    }

    /// What this proxy's rolling routes served so far, by route.
    pub(crate) fn observe(
        &self,
        table: &RouteTable,
        results: &Results,
    ) -> BTreeMap<String, Observed> {
        (0..table.config.routes.len())
            .filter_map(|i| {
                let r = table.route(i);
                r.rollout.as_ref()?;
                let live = table.rollout(i)?;
                Some((
                    r.id.clone(),
                    Observed {
                        new: live.new.seen(),
                        old: live.old.seen(),
                        shadow: if r.shadow.is_some() {
                            compared(results, &r.id)
                        } else {
                            Compared::default()
                        },
                    },
                ))
            })
            .collect()
    }

    /// The rolling routes of `table` and their plans' fingerprints.
    pub(crate) fn plans(table: &RouteTable) -> Vec<(String, String)> {
        table
            .config
            .routes
            .iter()
            .filter_map(|r| {
                let (ro, split) = (r.rollout.as_ref()?, r.split.as_ref()?);
                Some((r.id.clone(), ro.fingerprint(&split.sticky)))
            })
            .collect()
    }

    /// One tick on this machine alone: judged on this proxy's own traffic, kept in its state
    /// directory.
    pub(crate) fn tick_local(&self, table: &RouteTable, results: &Results, now: u64) {
        let observed = self.observe(table, results);
        let changes = self.tick(table, now, None, &observed);
        self.keep(changes);
    }

    /// One look at the table: rollouts started, restored, frozen, and the checks that are due.
    /// `shared` is what was read from Redis when the rollouts are shared (else `None`);
    /// `observed` is the traffic the checks judge (this proxy's, or every proxy's summed).
    pub(crate) fn tick(
        &self,
        table: &RouteTable,
        now: u64,
        shared: Option<&Inputs>,
        observed: &BTreeMap<String, Observed>,
    ) -> Changes {
        let mut changes = Changes::default();
        *self.observed.lock().unwrap_or_else(|e| e.into_inner()) = observed.clone();
        let mut state = self.state();
        let decides = shared.is_none_or(|s| s.decides);
        self.decides
            .store(decides, std::sync::atomic::Ordering::Relaxed);
        let mut rolling = Vec::new();
        let mut frozen = Vec::new();
        for (index, r) in table.config.routes.iter().enumerate() {
            let Some(live) = table.rollout(index) else {
                continue;
            };
            let (Some(spec), Some(split)) = (&r.rollout, &r.split) else {
                frozen.push((r.id.clone(), live.clone()));
                continue;
            };
            rolling.push(r.id.clone());
            let fingerprint = spec.fingerprint(&split.sticky);
            let known = state.tracks.get(&r.id).map(|t| t.fingerprint.clone());
            let remote = shared
                .and_then(|s| s.states.get(&r.id))
                .filter(|s| s.plan == fingerprint);
            if known.as_deref() != Some(fingerprint.as_str()) {
                let edited = known.is_some();
                let seen = observed.get(&r.id).cloned().unwrap_or_default();
                let begun = self.begin(
                    r,
                    spec,
                    fingerprint,
                    live,
                    remote,
                    decides,
                    edited,
                    &seen,
                    now,
                );
                let Some((track, started)) = begun else {
                    continue; // another proxy starts it; this one follows once it has
                };
                if let Some(event) = started {
                    changes.entries.push(entry(&r.id, event));
                    let expected = if remote.is_some() {
                        Some(track.saved.rev)
                    } else {
                        None
                    };
                    changes
                        .states
                        .push((r.id.clone(), track.saved.clone(), expected));
                }
                state.frozen.remove(&r.id);
                state.tracks.insert(r.id.clone(), track);
            } else if let (Some(remote), Some(track)) = (remote, state.tracks.get_mut(&r.id))
                && *remote != track.saved
            {
                // Shared: what Redis holds is the rollout's state (another proxy decided, or
                // this one's last write lost to an action).
                track.saved = remote.clone();
                track
                    .live
                    .set_percent(track.saved.phase.percent(&track.plan));
                self.save(&r.id, &track.saved);
            }
        }
        // Rollout blocks removed from the file: the route holds the share it had.
        for (id, live) in &frozen {
            if let Some(track) = state.tracks.remove(id) {
                let (freeze, event) = Self::freeze(track, now);
                self.save(id, &freeze.saved);
                changes.entries.push(entry(id, event));
                state.frozen.insert(id.clone(), freeze);
            } else if !state.frozen.contains_key(id)
                && let Some(saved) = self.load(id, FROZEN)
            {
                state.frozen.insert(
                    id.clone(),
                    Freeze {
                        live: live.clone(),
                        saved,
                    },
                );
            }
        }
        // Rollouts whose route is gone altogether.
        let gone: Vec<String> = state
            .tracks
            .keys()
            .filter(|id| !rolling.contains(id))
            .cloned()
            .collect();
        for id in gone {
            state.tracks.remove(&id);
            self.remove(&id);
            changes.entries.push(entry(
                &id,
                Event::Unfrozen {
                    reason: "the route is no longer in the table".into(),
                },
            ));
        }
        // Frozen routes the file has taken over again (a split of its own, the upstream the
        // rollout was moving to, or the route removed).
        let ended: Vec<String> = state
            .frozen
            .keys()
            .filter(|id| !frozen.iter().any(|(f, _)| f == *id))
            .cloned()
            .collect();
        for id in ended {
            state.frozen.remove(&id);
            self.remove(&id);
            changes.entries.push(entry(
                &id,
                Event::Unfrozen {
                    reason: "the file now says what the route does".into(),
                },
            ));
        }
        if !decides {
            return changes;
        }
        // The checks that are due.
        let where_is: BTreeMap<String, (bool, String)> = state
            .tracks
            .iter()
            .map(|(id, t)| {
                (
                    id.clone(),
                    (
                        t.saved.phase == Phase::Migrated,
                        phase_label(&t.saved.phase, &t.plan.steps),
                    ),
                )
            })
            .collect();
        for r in &table.config.routes {
            let Some(track) = state.tracks.get_mut(&r.id) else {
                continue;
            };
            if !track.saved.phase.judging() || now < track.saved.judging.next_check_ms {
                continue;
            }
            let after = track.spec.after.as_ref().map(|a| {
                let (done, now_at) = where_is.get(a).cloned().unwrap_or_else(|| {
                    // Not rolling out: migrated when the file already sends it to `to`.
                    let there = table
                        .config
                        .routes
                        .iter()
                        .any(|o| &o.id == a && o.upstream == track.spec.to);
                    let label = if there { "migrated" } else { "not rolling out" };
                    (there, label.to_owned())
                });
                gate::after(a, done, &now_at)
            });
            let seen = observed.get(&r.id).cloned().unwrap_or_default();
            let shadowed = r.shadow.is_some();
            if let Some((saved, event)) = Self::check(track, &seen, shadowed, after, now) {
                let expected = Some(track.saved.rev);
                track.saved = saved;
                track
                    .live
                    .set_percent(track.saved.phase.percent(&track.plan));
                self.save(&r.id, &track.saved);
                changes
                    .states
                    .push((r.id.clone(), track.saved.clone(), expected));
                changes.entries.extend(event.map(|e| entry(&r.id, e)));
            }
        }
        changes
    }

    /// Starts (or restores) the rollout of route `r`: the track, and the event to record when
    /// this proxy started it. `None` when another proxy decides and has not started it yet.
    #[allow(clippy::too_many_arguments)]
    fn begin(
        &self,
        r: &RouteSpec,
        spec: &RolloutSpec,
        fingerprint: String,
        live: &Arc<Live>,
        remote: Option<&Saved>,
        decides: bool,
        edited: bool,
        seen: &Observed,
        now: u64,
    ) -> Option<(Track, Option<Event>)> {
        let plan = spec.plan();
        let (saved, event) = match remote.cloned() {
            // Shared: the rollout as Redis holds it, judged on the summed traffic its window
            // was taken from.
            Some(saved) => (saved, None),
            None if !decides => return None,
            None => match (!edited).then(|| self.load(&r.id, &fingerprint)).flatten() {
                Some(mut saved) => {
                    // The counters the window was taken from started again with this
                    // process: the window does too.
                    let at = saved.phase.percent(&plan);
                    saved.judging = window(seen, now, spec.interval, &saved.judging);
                    (saved, Some(Event::Restored { at }))
                }
                None => {
                    let saved = Saved {
                        plan: fingerprint.clone(),
                        phase: Phase::start(),
                        step_since_ms: now,
                        rev: 1,
                        judging: window(seen, now, spec.interval, &Judging::default()),
                    };
                    let reason = if edited {
                        "the rollout block changed"
                    } else {
                        "a new rollout"
                    };
                    let event = Event::Started {
                        steps: spec.steps.clone(),
                        reason: reason.into(),
                    };
                    (saved, Some(event))
                }
            },
        };
        live.set_percent(saved.phase.percent(&plan));
        self.save(&r.id, &saved);
        Some((
            Track {
                spec: spec.clone(),
                plan,
                fingerprint,
                live: live.clone(),
                saved,
            },
            event,
        ))
    }

    fn freeze(track: Track, now: u64) -> (Freeze, Event) {
        let percent = track.live.percent();
        let saved = Saved {
            plan: FROZEN.into(),
            phase: Phase::Frozen {
                percent,
                to: track.spec.to.clone(),
                sticky: track.live.sticky.to_string(),
            },
            step_since_ms: now,
            rev: track.saved.rev + 1,
            judging: Judging::default(),
        };
        (
            Freeze {
                live: track.live,
                saved,
            },
            Event::Frozen { at: percent },
        )
    }

    /// Judges the current step of `track` on `seen`: its new state, and the event to record
    /// (`None`: a hold already recorded for this step). `None` when nothing changed.
    fn check(
        track: &Track,
        seen: &Observed,
        shadowed: bool,
        after: Option<Judged>,
        now: u64,
    ) -> Option<(Saved, Option<Event>)> {
        let w = &track.saved.judging;
        let new = seen.new.since(&w.new);
        let old = seen.old.since(&w.old);
        let shadow = shadowed.then(|| Compared {
            compared: seen.shadow.compared.saturating_sub(w.shadow.compared),
            mismatched: seen.shadow.mismatched.saturating_sub(w.shadow.mismatched),
        });
        let serving = track.live.basis_points() > 0;
        let mut gates = Vec::new();
        gates.extend(after);
        gates.extend(traffic::judge(
            &track.spec.gates,
            &new,
            &old,
            serving,
            shadow,
        ));
        let before = &track.saved.phase;
        let (phase, event) = before.check(&track.plan, &gates);
        let moved = std::mem::discriminant(&phase) != std::mem::discriminant(before)
            || step_of(&phase) != step_of(before);
        let mut saved = track.saved.clone();
        saved.rev += 1;
        saved.judging.last = gates;
        saved.judging.last_check_ms = Some(now);
        saved.judging.next_check_ms = now + track.spec.interval.as_millis() as u64;
        if moved || matches!(event, Event::FailedCheck { .. }) {
            let observed = Observed {
                new: seen.new.clone(),
                old: seen.old.clone(),
                shadow: seen.shadow,
            };
            saved.judging = window(&observed, now, track.spec.interval, &saved.judging);
        }
        if moved {
            saved.step_since_ms = now;
            saved.judging.held_recorded = false;
        }
        saved.phase = phase;
        let event = match event {
            Event::Held { .. } if saved.judging.held_recorded => None,
            Event::Held { .. } => {
                saved.judging.held_recorded = true;
                Some(event)
            }
            event => Some(event),
        };
        Some((saved, event))
    }

    /// An operator's action on `route`'s rollout: the phase it leaves the route in, and what
    /// to keep (on this machine, or through Redis).
    pub(crate) fn act(&self, route: &str, action: Action) -> Result<(String, Changes), Refused> {
        let mut state = self.state();
        let now = now_ms();
        let mut changes = Changes::default();
        if let Some(track) = state.tracks.get_mut(route) {
            let phase = &track.saved.phase;
            let done = match action {
                Action::Approve => phase.approve(&track.plan),
                Action::Pause => phase.pause(&track.plan),
                Action::Resume => phase.resume(&track.plan),
                Action::Rollback => phase.rollback(&track.plan),
            };
            let Some((phase, event)) = done else {
                return Err(Refused::NotNow {
                    route: route.to_owned(),
                    phase: phase_label(phase, &track.plan.steps),
                });
            };
            let expected = Some(track.saved.rev);
            let mut saved = track.saved.clone();
            saved.rev += 1;
            if matches!(action, Action::Resume | Action::Approve) {
                // Judging starts over from what the step serves from now on.
                saved.judging.next_check_ms = now + track.spec.interval.as_millis() as u64;
            }
            saved.phase = phase;
            saved.step_since_ms = now;
            track.saved = saved;
            track
                .live
                .set_percent(track.saved.phase.percent(&track.plan));
            let label = phase_label(&track.saved.phase, &track.plan.steps);
            changes
                .states
                .push((route.to_owned(), track.saved.clone(), expected));
            changes.entries.push(entry(route, event));
            return Ok((label, changes));
        }
        if action == Action::Rollback
            && let Some(freeze) = state.frozen.get_mut(route)
        {
            let from = freeze.live.percent();
            if from == 0.0 {
                return Err(Refused::NotNow {
                    route: route.to_owned(),
                    phase: "already at 0 %".into(),
                });
            }
            freeze.live.set_percent(0.0);
            freeze.saved.phase = Phase::Frozen {
                percent: 0.0,
                to: freeze.live.to.clone(),
                sticky: freeze.live.sticky.to_string(),
            };
            freeze.saved.step_since_ms = now;
            freeze.saved.rev += 1;
            // A freeze is this machine's own: kept here, whatever else is shared.
            self.save(route, &freeze.saved);
            changes
                .entries
                .push(entry(route, Event::RolledBack { from }));
            return Ok(("rolled back (frozen at 0 %)".into(), changes));
        }
        Err(Refused::NoRollout(route.to_owned()))
    }

    /// Every rollout as `banyan status` shows it (its window as of the last tick).
    pub(crate) fn status(&self) -> BTreeMap<String, RolloutStatus> {
        let observed = self
            .observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let state = self.state();
        let now = now_ms();
        let mut out = BTreeMap::new();
        for (id, t) in &state.tracks {
            let j = &t.saved.judging;
            let seen = observed.get(id).cloned().unwrap_or_default();
            let new = seen.new.since(&j.new);
            let old = seen.old.since(&j.old);
            out.insert(
                id.clone(),
                RolloutStatus {
                    to: t.spec.to.clone(),
                    fingerprint: t.fingerprint.clone(),
                    phase: phase_label(&t.saved.phase, &t.plan.steps),
                    state: t.saved.phase.clone(),
                    percent: t.live.percent(),
                    steps: t.plan.steps.clone(),
                    interval_ms: t.spec.interval.as_millis() as u64,
                    step_since: service_kit::clock::rfc3339(t.saved.step_since_ms as i64),
                    next_check_in_ms: t
                        .saved
                        .phase
                        .judging()
                        .then(|| j.next_check_ms.saturating_sub(now)),
                    window: WindowStatus {
                        seconds: now.saturating_sub(j.window_since_ms) as f64 / 1000.0,
                        new_requests: new.counts.requests,
                        new_errors: new.counts.errors,
                        old_requests: old.counts.requests,
                        old_errors: old.counts.errors,
                    },
                    gates: j.last.clone(),
                    last_check: j
                        .last_check_ms
                        .map(|ms| service_kit::clock::rfc3339(ms as i64)),
                },
            );
        }
        for (id, f) in &state.frozen {
            out.insert(
                id.clone(),
                RolloutStatus {
                    to: f.live.to.clone(),
                    fingerprint: FROZEN.into(),
                    phase: phase_label(&f.saved.phase, &[]),
                    state: f.saved.phase.clone(),
                    percent: f.live.percent(),
                    steps: Vec::new(),
                    interval_ms: 0,
                    step_since: service_kit::clock::rfc3339(f.saved.step_since_ms as i64),
                    next_check_in_ms: None,
                    window: WindowStatus::default(),
                    gates: Vec::new(),
                    last_check: None,
                },
            );
        }
        out
    }
}

/// One rollout in `GET /status` and `banyan status`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RolloutStatus {
    pub(crate) to: String,
    /// The plan's fingerprint (`banyan plan` tells by it whether saving a file restarts it).
    pub(crate) fingerprint: String,
    /// As an operator reads it: shadow, canary N %, migrated, aborted, ...
    pub(crate) phase: String,
    /// The phase as kept (with the abort's cause).
    pub(crate) state: Phase,
    pub(crate) percent: f64,
    pub(crate) steps: Vec<f64>,
    pub(crate) interval_ms: u64,
    pub(crate) step_since: String,
    pub(crate) next_check_in_ms: Option<u64>,
    /// What the step has served since it began (or since its last failed check).
    pub(crate) window: WindowStatus,
    /// The last check's gates and their figures.
    pub(crate) gates: Vec<Judged>,
    pub(crate) last_check: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct WindowStatus {
    /// How long the traffic below was gathered.
    pub(crate) seconds: f64,
    pub(crate) new_requests: u64,
    pub(crate) new_errors: u64,
    pub(crate) old_requests: u64,
    pub(crate) old_errors: u64,
}

/// The controller's loop on this machine alone: a look at the live table every [`TICK`], until
/// the process ends. (Shared through Redis: [`super::shared::run`].)
pub(crate) async fn run(live: Arc<crate::reload::LiveTable>, results: Arc<Results>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let table = live.current();
        live.rollouts().tick_local(&table, &results, now_ms());
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::breaker::Breakers;
    use crate::metrics::Metrics;
    use crate::rollout::gate::Gate;
    use crate::rollout::live::Which;
    use crate::shadow::bounds::Bounds;
    use crate::upstream::Registry as Backends;

    fn table_of(text: &str, rollouts: &Rollouts) -> RouteTable {
        let config = crate::config::parse(text, "routes.toml").unwrap();
        let metrics = Arc::new(Metrics::new());
        RouteTable::build(
            config,
            "v".into(),
            &Backends::default(),
            &Bounds::default(),
            &Breakers::new(metrics),
            rollouts,
        )
    }

    fn routes(steps: &str, extra: &str) -> String {
        format!(
            "[upstreams.legacy]\naddrs = [\"127.0.0.1:3000\"]\n[upstreams.catalog]\naddrs = [\"127.0.0.1:4001\"]\n\
             [[route]]\nid = \"products\"\npath = \"/api/products\"\nmethods = [\"GET\"]\nupstream = \"legacy\"\n\
             rollout = {{ to = \"catalog\", steps = {steps}, interval = \"1s\", min_requests = 100{extra} }}\n"
        )
    }

    /// Serves `n` requests on each side of `live`, the new side failing every `fail_every`.
    fn serve(live: &Live, n: u64, fail_every: Option<u64>) {
        for i in 0..n {
            live.record(
                Which::New,
                fail_every.is_some_and(|k| i % k == 0),
                Duration::from_millis(2),
            );
            live.record(Which::Old, false, Duration::from_millis(2));
        }
    }

    #[test]
    fn healthy_steps_advance_to_migrated_and_every_event_is_in_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let rollouts = Rollouts::open(dir.path());
        let results = Results::new(Arc::new(Metrics::new()));
        let table = table_of(&routes("[5, 25, 100]", ""), &rollouts);
        let live = table.rollout(0).unwrap().clone();
        let mut now = now_ms();
        rollouts.tick_local(&table, &results, now);
        assert_eq!(live.percent(), 5.0);
        for want in [25.0, 100.0] {
            serve(&live, 150, None);
            now += 1000;
            rollouts.tick_local(&table, &results, now);
            assert_eq!(live.percent(), want);
        }
        let status = rollouts.status();
        assert_eq!(status["products"].phase, "migrated");
        assert!(
            status["products"]
                .gates
                .iter()
                .all(|g| g.verdict == gate::Verdict::Pass)
        );
        let (history, _) = rollouts.history();
        let events: Vec<&str> = history
            .iter()
            .map(|e| match &e.event {
                Event::Started { .. } => "started",
                Event::Advanced { .. } => "advanced",
                Event::Migrated { .. } => "migrated",
                _ => "other",
            })
            .collect();
        assert_eq!(events, ["started", "advanced", "migrated"]);
    }

    #[test]
    fn failing_checks_abort_to_zero_and_low_traffic_holds() {
        let dir = tempfile::tempdir().unwrap();
        let rollouts = Rollouts::open(dir.path());
        let results = Results::new(Arc::new(Metrics::new()));
        let table = table_of(&routes("[10, 100]", ""), &rollouts);
        let live = table.rollout(0).unwrap().clone();
        let mut now = now_ms();
        rollouts.tick_local(&table, &results, now);
        // Little traffic: the check holds, however bad it looks.
        serve(&live, 10, Some(2));
        now += 1000;
        rollouts.tick_local(&table, &results, now);
        assert_eq!(rollouts.status()["products"].phase, "canary 10 %");
        // Enough of it, failing 10 %: two failed checks in a row abort.
        for _ in 0..2 {
            serve(&live, 300, Some(10));
            now += 1000;
            rollouts.tick_local(&table, &results, now);
        }
        let status = &rollouts.status()["products"];
        assert_eq!((status.phase.as_str(), live.percent()), ("aborted", 0.0));
        let Phase::Aborted { cause, .. } = &status.state else {
            panic!("{:?}", status.state)
        };
        assert_eq!(cause.gate, Gate::ErrorRate);
        // Aborted stays aborted, and rollback is still refused nothing.
        serve(&live, 300, None);
        rollouts.tick_local(&table, &results, now + 5000);
        assert_eq!(live.percent(), 0.0);
    }

    #[test]
    fn a_restarted_proxy_resumes_the_step_and_an_edit_restarts_the_rollout() {
        let dir = tempfile::tempdir().unwrap();
        let results = Results::new(Arc::new(Metrics::new()));
        let text = routes("[5, 25, 50, 100]", ", approve_at = [25]");
        {
            let rollouts = Rollouts::open(dir.path());
            let table = table_of(&text, &rollouts);
            let live = table.rollout(0).unwrap().clone();
            let mut now = now_ms();
            rollouts.tick_local(&table, &results, now);
            for _ in 0..2 {
                serve(&live, 150, None);
                now += 1000;
                rollouts.tick_local(&table, &results, now);
            }
            assert_eq!(
                rollouts.status()["products"].phase,
                "canary 25 %, awaiting approval"
            );
        }
        // A new process on the same state directory: the first table already serves 25 %.
        let rollouts = Rollouts::open(dir.path());
        let table = table_of(&text, &rollouts);
        assert_eq!(table.rollout(0).unwrap().percent(), 25.0);
        let now = now_ms();
        rollouts.tick_local(&table, &results, now);
        assert_eq!(
            rollouts.status()["products"].phase,
            "canary 25 %, awaiting approval"
        );
        let (label, changes) = rollouts.act("products", Action::Approve).unwrap();
        rollouts.keep(changes);
        assert_eq!(label, "canary 25 %");
        assert!(matches!(
            rollouts.act("products", Action::Approve),
            Err(Refused::NotNow { .. })
        ));
        assert!(matches!(
            rollouts.act("nope", Action::Rollback),
            Err(Refused::NoRollout(_))
        ));
        // Editing the block starts over at its first step.
        let edited = table_of(
            &text.replace("interval = \"1s\"", "interval = \"2s\""),
            &rollouts,
        );
        rollouts.tick_local(&edited, &results, now);
        assert_eq!(edited.rollout(0).unwrap().percent(), 5.0);
        let (history, _) = rollouts.history();
        assert!(
            history
                .iter()
                .any(|e| matches!(&e.event, Event::Restored { at } if *at == 25.0))
        );
        assert!(history.iter().any(
            |e| matches!(&e.event, Event::Started { reason, .. } if reason.contains("changed"))
        ));
    }

    #[test]
    fn removing_the_block_freezes_the_share_until_the_file_or_a_rollback_says_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let rollouts = Rollouts::open(dir.path());
        let results = Results::new(Arc::new(Metrics::new()));
        let text = routes("[25, 100]", "");
        let table = table_of(&text, &rollouts);
        let now = now_ms();
        rollouts.tick_local(&table, &results, now);
        let without = text.replace(
            "rollout = { to = \"catalog\", steps = [25, 100], interval = \"1s\", min_requests = 100 }\n",
            "",
        );
        let frozen = table_of(&without, &rollouts);
        rollouts.tick_local(&frozen, &results, now);
        assert_eq!(frozen.split_basis_points(0), 2500);
        assert_eq!(rollouts.status()["products"].phase, "frozen at 25 %");
        // Still frozen after a restart.
        let restarted = Rollouts::open(dir.path());
        let again = table_of(&without, &restarted);
        assert_eq!(again.split_basis_points(0), 2500);
        restarted.tick_local(&again, &results, now);
        assert_eq!(
            restarted.act("products", Action::Rollback).unwrap().0,
            "rolled back (frozen at 0 %)"
        );
        assert_eq!(again.split_basis_points(0), 0);
        // A split in the file takes over.
        let split = without.replace(
            "upstream = \"legacy\"\n",
            "upstream = \"legacy\"\nsplit = { to = \"catalog\", percent = 10 }\n",
        );
        let own = table_of(&split, &restarted);
        restarted.tick_local(&own, &results, now);
        assert_eq!(own.split_basis_points(0), 1000);
        assert!(!restarted.status().contains_key("products"));
    }
}
