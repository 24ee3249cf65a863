//! The rollout controller: the loop that judges each rolling-out route's current step on its
//! live traffic, moves it on, holds it or aborts it, and the operator's actions on it.
//!
//! Every 100 ms the controller looks at the live table. A route whose rollout block is new, or
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
//! A route whose rollout block is removed keeps the share it had (frozen) until the file gives
//! it a split or the operator rolls it back: removing the block says "stop moving", not "move
//! back". Every event goes to the history with its time and its figures, and to the log.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::gate::{self, Judged};
use super::live::{Live, Registry};
use super::progress::{Event, Phase, Plan};
use super::store::{Entry, Saved, Store};
use super::traffic::{self, Compared, Seen};
use crate::config::{RolloutSpec, RouteSpec, SplitSpec, StickyKey};
use crate::route_table::RouteTable;
use crate::shadow::results::Results;

/// How often the controller looks at the table (checks are due by each rollout's interval).
const TICK: Duration = Duration::from_millis(100);
/// History entries kept in memory when there is no state directory to keep them in.
const HISTORY_IN_MEMORY: usize = 10_000;

/// The baseline a step is judged from: what each side had served when it began.
#[derive(Debug, Clone)]
struct Window {
    new: Seen,
    old: Seen,
    shadow: Compared,
    since: Instant,
}

/// One route's rollout as the controller runs it.
#[derive(Debug)]
struct Track {
    spec: RolloutSpec,
    plan: Plan,
    fingerprint: String,
    live: Arc<Live>,
    saved: Saved,
    window: Window,
    next_check: Instant,
    /// The last check's gates, for `banyan status`.
    last: Vec<Judged>,
    last_check_ms: Option<u64>,
    /// A hold is written to the history once per step, not at every interval.
    held_recorded: bool,
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
/// where progress and history are kept.
pub(crate) struct Rollouts {
    registry: Registry,
    /// Opened at the first rollout (a proxy without one never needs the directory).
    store: std::sync::OnceLock<Option<Store>>,
    dir: PathBuf,
    state: Mutex<State>,
    /// The history when there is no store (the newest [`HISTORY_IN_MEMORY`] entries).
    memory: Mutex<VecDeque<Entry>>,
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

fn now_ms() -> u64 {
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

impl Rollouts {
    /// The rollouts of a proxy whose progress is kept in `dir` (created at the first rollout).
    pub(crate) fn open(dir: &Path) -> Rollouts {
        Rollouts {
            registry: Registry::default(),
            store: std::sync::OnceLock::new(),
            dir: dir.to_owned(),
            state: Mutex::default(),
            memory: Mutex::default(),
        }
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

    /// Writes one event to the history and the log.
    fn record(&self, route: &str, event: Event) {
        let entry = Entry {
            at_ms: now_ms(),
            route: route.to_owned(),
            event,
        };
        let line = serde_json::to_string(&entry.event).unwrap_or_default();
        match &entry.event {
            Event::Aborted { .. } | Event::FailedCheck { .. } => {
                tracing::warn!(target: "rollout", route, event = %line, "rollout")
            }
            _ => tracing::info!(target: "rollout", route, event = %line, "rollout"),
        }
        match self.opened() {
            Some(store) => {
                if let Err(e) = store.record(&entry) {
                    tracing::error!(error = %e, "cannot append to the rollout history");
                }
            }
            None => {
                let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
                memory.push_back(entry);
                if memory.len() > HISTORY_IN_MEMORY {
                    memory.pop_front();
                }
            }
        }
    }

    /// A route table was applied (at start and at every reload).
    pub(crate) fn table_applied(&self, version: &str) {
        self.record(
            "*",
            Event::TableApplied {
                version: version.to_owned(),
            },
        );
    }

    /// The history, oldest first, and how many stored lines did not read.
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

    /// One look at the table: rollouts started, restored, frozen, and the checks that are due.
    pub(crate) fn tick(&self, table: &RouteTable, results: &Results, now: Instant) {
        let mut state = self.state();
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
            if known.as_deref() != Some(fingerprint.as_str()) {
                let edited = known.is_some();
                let track = self.begin(r, spec, fingerprint, live.clone(), results, now, edited);
                state.frozen.remove(&r.id);
                state.tracks.insert(r.id.clone(), track);
            }
        }
        // Rollout blocks removed from the file: the route holds the share it had.
        for (id, live) in frozen.iter() {
            if let Some(track) = state.tracks.remove(id) {
                self.freeze(&mut state, id, track);
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
            self.record(
                &id,
                Event::Unfrozen {
                    reason: "the route is no longer in the table".into(),
                },
            );
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
            self.record(
                &id,
                Event::Unfrozen {
                    reason: "the file now says what the route does".into(),
                },
            );
        }
        // The checks that are due.
        let migrated: BTreeMap<String, (bool, String)> = state
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
        for (index, r) in table.config.routes.iter().enumerate() {
            let Some(track) = state.tracks.get_mut(&r.id) else {
                continue;
            };
            if !track.saved.phase.judging() || now < track.next_check {
                continue;
            }
            let after = track.spec.after.as_ref().map(|a| {
                let (done, now_at) = migrated.get(a).cloned().unwrap_or_else(|| {
                    // Not rolling out: migrated when the file already sends it to `to`.
                    let there = table
                        .config
                        .routes
                        .iter()
                        .any(|o| &o.id == a && o.upstream == track.spec.to);
                    (
                        there,
                        if there {
                            "migrated".into()
                        } else {
                            "not rolling out".into()
                        },
                    )
                });
                gate::after(a, done, &now_at)
            });
            let shadowed = r.shadow.is_some().then(|| compared(results, &r.id));
            self.check(track, table, index, shadowed, after, now);
        }
    }

    /// Starts (or restores) the rollout of route `r`.
    #[allow(clippy::too_many_arguments)]
    fn begin(
        &self,
        r: &RouteSpec,
        spec: &RolloutSpec,
        fingerprint: String,
        live: Arc<Live>,
        results: &Results,
        now: Instant,
        edited: bool,
    ) -> Track {
        let plan = spec.plan();
        let saved = if edited {
            None
        } else {
            self.load(&r.id, &fingerprint)
        };
        let saved = match saved {
            Some(saved) => {
                self.record(
                    &r.id,
                    Event::Restored {
                        at: saved.phase.percent(&plan),
                    },
                );
                saved
            }
            None => {
                let saved = Saved {
                    plan: fingerprint.clone(),
                    phase: Phase::start(),
                    step_since_ms: now_ms(),
                };
                self.save(&r.id, &saved);
                self.record(
                    &r.id,
                    Event::Started {
                        steps: spec.steps.clone(),
                        reason: if edited {
                            "the rollout block changed".into()
                        } else {
                            "a new rollout".into()
                        },
                    },
                );
                saved
            }
        };
        live.set_percent(saved.phase.percent(&plan));
        let window = Window {
            new: live.new.seen(),
            old: live.old.seen(),
            shadow: r
                .shadow
                .as_ref()
                .map(|_| compared(results, &r.id))
                .unwrap_or_default(),
            since: now,
        };
        Track {
            spec: spec.clone(),
            plan,
            fingerprint,
            live,
            saved,
            window,
            next_check: now + spec.interval,
            last: Vec::new(),
            last_check_ms: None,
            held_recorded: false,
        }
    }

    fn freeze(&self, state: &mut State, id: &str, track: Track) {
        let percent = track.live.percent();
        let saved = Saved {
            plan: FROZEN.into(),
            phase: Phase::Frozen {
                percent,
                to: track.spec.to.clone(),
                sticky: track.live.sticky.to_string(),
            },
            step_since_ms: now_ms(),
        };
        self.save(id, &saved);
        self.record(id, Event::Frozen { at: percent });
        state.frozen.insert(
            id.to_owned(),
            Freeze {
                live: track.live,
                saved,
            },
        );
    }

    /// Judges the current step of `track` and moves it on.
    fn check(
        &self,
        track: &mut Track,
        table: &RouteTable,
        index: usize,
        shadowed: Option<Compared>,
        after: Option<Judged>,
        now: Instant,
    ) {
        let route = table.route(index).id.clone();
        let w = &track.window;
        let new = track.live.new.seen().since(&w.new);
        let old = track.live.old.seen().since(&w.old);
        let shadow = shadowed.map(|c| Compared {
            compared: c.compared.saturating_sub(w.shadow.compared),
            mismatched: c.mismatched.saturating_sub(w.shadow.mismatched),
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
        let before = track.saved.phase.clone();
        let (phase, event) = before.check(&track.plan, &gates);
        track.last = gates;
        track.last_check_ms = Some(now_ms());
        track.next_check = now + track.spec.interval;
        let moved = std::mem::discriminant(&phase) != std::mem::discriminant(&before)
            || step_of(&phase) != step_of(&before);
        let restart_window = moved || matches!(event, Event::FailedCheck { .. });
        if restart_window {
            track.window = Window {
                new: track.live.new.seen(),
                old: track.live.old.seen(),
                shadow: shadowed.unwrap_or_default(),
                since: now,
            };
        }
        if moved {
            track.saved.step_since_ms = now_ms();
            track.held_recorded = false;
        }
        let changed = phase != before;
        track.saved.phase = phase;
        track
            .live
            .set_percent(track.saved.phase.percent(&track.plan));
        if changed {
            self.save(&route, &track.saved);
        }
        match event {
            Event::Held { .. } if track.held_recorded => {}
            Event::Held { .. } => {
                track.held_recorded = true;
                self.record(&route, event);
            }
            event => self.record(&route, event),
        }
    }

    /// An operator's action on `route`'s rollout.
    pub(crate) fn act(&self, route: &str, action: Action) -> Result<String, Refused> {
        let mut state = self.state();
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
            let now = Instant::now();
            if matches!(action, Action::Resume | Action::Approve) {
                // Judging starts over from what the step serves from now on.
                track.window = Window {
                    new: track.live.new.seen(),
                    old: track.live.old.seen(),
                    shadow: track.window.shadow,
                    since: now,
                };
                track.next_check = now + track.spec.interval;
            }
            track.saved.phase = phase;
            track.saved.step_since_ms = now_ms();
            track
                .live
                .set_percent(track.saved.phase.percent(&track.plan));
            let label = phase_label(&track.saved.phase, &track.plan.steps);
            let saved = track.saved.clone();
            self.save(route, &saved);
            self.record(route, event);
            return Ok(label);
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
            freeze.saved.step_since_ms = now_ms();
            let saved = freeze.saved.clone();
            self.save(route, &saved);
            self.record(route, Event::RolledBack { from });
            return Ok("rolled back (frozen at 0 %)".into());
        }
        Err(Refused::NoRollout(route.to_owned()))
    }

    /// Every rollout as `banyan status` shows it.
    pub(crate) fn status(&self) -> BTreeMap<String, RolloutStatus> {
        let state = self.state();
        let now = Instant::now();
        let mut out = BTreeMap::new();
        for (id, t) in &state.tracks {
            let new = t.live.new.seen().since(&t.window.new);
            let old = t.live.old.seen().since(&t.window.old);
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
                        .then(|| t.next_check.saturating_duration_since(now).as_millis() as u64),
                    window: WindowStatus {
                        seconds: now.saturating_duration_since(t.window.since).as_secs_f64(),
                        new_requests: new.counts.requests,
                        new_errors: new.counts.errors,
                        old_requests: old.counts.requests,
                        old_errors: old.counts.errors,
                    },
                    gates: t.last.clone(),
                    last_check: t
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

/// The saved "plan" of a frozen route.
const FROZEN: &str = "frozen";

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

/// One rollout in `GET /rollouts` and `banyan status`.
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

/// The controller's loop: a look at the live table every [`TICK`], until the process ends.
pub(crate) async fn run(live: Arc<crate::reload::LiveTable>, results: Arc<Results>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let table = live.current();
        live.rollouts().tick(&table, &results, Instant::now());
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
        let mut now = Instant::now();
        rollouts.tick(&table, &results, now);
        assert_eq!(live.percent(), 5.0);
        for want in [25.0, 100.0] {
            serve(&live, 150, None);
            now += Duration::from_secs(1);
            rollouts.tick(&table, &results, now);
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
                Event::Migrated => "migrated",
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
        let mut now = Instant::now();
        rollouts.tick(&table, &results, now);
        // Little traffic: the check holds, however bad it looks.
        serve(&live, 10, Some(2));
        now += Duration::from_secs(1);
        rollouts.tick(&table, &results, now);
        assert_eq!(rollouts.status()["products"].phase, "canary 10 %");
        // Enough of it, failing 10 %: two failed checks in a row abort.
        for _ in 0..2 {
            serve(&live, 300, Some(10));
            now += Duration::from_secs(1);
            rollouts.tick(&table, &results, now);
        }
        let status = &rollouts.status()["products"];
        assert_eq!((status.phase.as_str(), live.percent()), ("aborted", 0.0));
        let Phase::Aborted { cause, .. } = &status.state else {
            panic!("{:?}", status.state)
        };
        assert_eq!(cause.gate, Gate::ErrorRate);
        // Aborted stays aborted, and rollback is still refused nothing.
        serve(&live, 300, None);
        rollouts.tick(&table, &results, now + Duration::from_secs(5));
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
            let mut now = Instant::now();
            rollouts.tick(&table, &results, now);
            for _ in 0..2 {
                serve(&live, 150, None);
                now += Duration::from_secs(1);
                rollouts.tick(&table, &results, now);
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
        let now = Instant::now();
        rollouts.tick(&table, &results, now);
        assert_eq!(
            rollouts.status()["products"].phase,
            "canary 25 %, awaiting approval"
        );
        assert_eq!(
            rollouts.act("products", Action::Approve).unwrap(),
            "canary 25 %"
        );
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
        rollouts.tick(&edited, &results, now);
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
        let now = Instant::now();
        rollouts.tick(&table, &results, now);
        let without = text.replace(
            "rollout = { to = \"catalog\", steps = [25, 100], interval = \"1s\", min_requests = 100 }\n",
            "",
        );
        let frozen = table_of(&without, &rollouts);
        rollouts.tick(&frozen, &results, now);
        assert_eq!(frozen.split_basis_points(0), 2500);
        assert_eq!(rollouts.status()["products"].phase, "frozen at 25 %");
        // Still frozen after a restart.
        let restarted = Rollouts::open(dir.path());
        let again = table_of(&without, &restarted);
        assert_eq!(again.split_basis_points(0), 2500);
        restarted.tick(&again, &results, now);
        assert_eq!(
            restarted.act("products", Action::Rollback).unwrap(),
            "rolled back (frozen at 0 %)"
        );
        assert_eq!(again.split_basis_points(0), 0);
        // A split in the file takes over.
        let split = without.replace(
            "upstream = \"legacy\"\n",
            "upstream = \"legacy\"\nsplit = { to = \"catalog\", percent = 10 }\n",
        );
        let own = table_of(&split, &restarted);
        restarted.tick(&own, &results, now);
        assert_eq!(own.split_basis_points(0), 1000);
        assert!(!restarted.status().contains_key("products"));
    }
}
