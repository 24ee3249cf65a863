//! Where a rollout stands and how one check moves it: the state machine, apart from clocks,
//! traffic and storage, so every transition is a plain function of (state, verdict).
//!
//! The rules:
//! - a check **passes** (every gate passed): the failure count starts again, and the rollout
//!   moves to the next step, unless the current step is one of `approve_at` and has not been
//!   approved, in which case it waits there (its gates still checked: a failure still aborts);
//!   moving onto 100 % marks the route migrated;
//! - a check **fails** (any gate failed): counted; `failures` of them in a row abort: the new
//!   side goes to 0 % at once and the rollout stays aborted, with the gate that failed and its
//!   figures, until the operator acts;
//! - an **inconclusive** check (a gate without enough traffic, or worse but not yet
//!   significantly) holds the step and neither adds to nor clears the failure count: it is no
//!   evidence either way;
//! - pause holds the share where it is and stops judging; resume starts the step's judging
//!   over; rollback sends the route to 0 % from any phase, migrated included.
//!
//! Advancing only ever raises the new side's share and aborting drops it to 0, so with sticky
//! splits users only move old -> new while a rollout advances, and back only when it aborts.

use serde::{Deserialize, Serialize};

use super::gate::{Judged, Verdict};

/// A rollout as the route table states it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Shares of the new side, in percent, rising; 0 is shadow only, the last is 100.
    pub(crate) steps: Vec<f64>,
    /// Steps that wait for `banyan rollout approve` once their gates pass.
    pub(crate) approve_at: Vec<f64>,
    /// Failed checks in a row that abort.
    pub(crate) failures: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub(crate) enum Phase {
    Running {
        step: usize,
        failed_in_row: u32,
        approved: bool,
    },
    AwaitingApproval {
        step: usize,
        failed_in_row: u32,
    },
    Paused {
        step: usize,
    },
    Aborted {
        step: usize,
        /// The failing gate's verdict, figures included.
        cause: Judged,
    },
    Migrated,
    RolledBack,
    /// The rollout block was removed from the file: the route stays at the share it had,
    /// towards `to` with `sticky`, until the file gives it a split or the operator rolls back.
    Frozen {
        percent: f64,
        to: String,
        sticky: String,
    },
}

/// What a check or an operator's action did, for the history and the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    /// The gates passed (their figures kept with the step they moved on from).
    Advanced {
        from: f64,
        to: f64,
        #[serde(default)]
        gates: Vec<Judged>,
    },
    Migrated {
        #[serde(default)]
        gates: Vec<Judged>,
    },
    Held {
        reason: String,
    },
    FailedCheck {
        count: u32,
        of: u32,
        cause: Judged,
    },
    Aborted {
        at: f64,
        cause: Judged,
    },
    AwaitingApproval {
        at: f64,
    },
    Approved {
        at: f64,
    },
    Paused {
        at: f64,
    },
    Resumed {
        at: f64,
    },
    RolledBack {
        from: f64,
    },
    /// A rollout began (its block is new, or was edited: `reason` says which).
    Started {
        steps: Vec<f64>,
        reason: String,
    },
    /// The proxy started again and picked the rollout up where it was.
    Restored {
        at: f64,
    },
    /// The rollout block was removed; the route stays at this share.
    Frozen {
        at: f64,
    },
    /// A frozen share ended: the file now says what the route does.
    Unfrozen {
        reason: String,
    },
    /// A route table was applied (route `*`).
    TableApplied {
        version: String,
    },
}

impl Phase {
    pub(crate) fn start() -> Phase {
        Phase::Running {
            step: 0,
            failed_in_row: 0,
            approved: false,
        }
    }

    /// The new side's share of the route, in percent.
    pub(crate) fn percent(&self, plan: &Plan) -> f64 {
        match self {
            Phase::Running { step, .. }
            | Phase::AwaitingApproval { step, .. }
            | Phase::Paused { step } => plan.steps[*step],
            Phase::Migrated => 100.0,
            Phase::Aborted { .. } | Phase::RolledBack => 0.0,
            Phase::Frozen { percent, .. } => *percent,
        }
    }

    /// Whether checks are judged in this phase.
    pub(crate) fn judging(&self) -> bool {
        matches!(self, Phase::Running { .. } | Phase::AwaitingApproval { .. })
    }

    /// One check of the current step, whose gates judged `gates`. Returns the phase after
    /// it and what happened; a new step (advanced) starts its judging from nothing.
    pub(crate) fn check(&self, plan: &Plan, gates: &[Judged]) -> (Phase, Event) {
        let (step, failed_in_row, approved) = match *self {
            Phase::Running {
                step,
                failed_in_row,
                approved,
            } => (step, failed_in_row, approved),
            Phase::AwaitingApproval {
                step,
                failed_in_row,
            } => (step, failed_in_row, false),
            _ => {
                return (
                    self.clone(),
                    Event::Held {
                        reason: "not judging in this phase".into(),
                    },
                );
            }
        };
        let at = plan.steps[step];
        match Verdict::of_all(gates) {
            Verdict::Fail => {
                let cause = gates
                    .iter()
                    .find(|g| g.verdict == Verdict::Fail)
                    .cloned()
                    .expect("a failed check has a failed gate");
                let count = failed_in_row + 1;
                if count >= plan.failures {
                    (
                        Phase::Aborted {
                            step,
                            cause: cause.clone(),
                        },
                        Event::Aborted { at, cause },
                    )
                } else {
                    let phase = match self {
                        Phase::AwaitingApproval { .. } => Phase::AwaitingApproval {
                            step,
                            failed_in_row: count,
                        },
                        _ => Phase::Running {
                            step,
                            failed_in_row: count,
                            approved,
                        },
                    };
                    (
                        phase,
                        Event::FailedCheck {
                            count,
                            of: plan.failures,
                            cause,
                        },
                    )
                }
            }
            Verdict::Inconclusive => {
                let reason = gates
                    .iter()
                    .filter(|g| g.verdict == Verdict::Inconclusive)
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                (self.clone(), Event::Held { reason })
            }
            Verdict::Pass if plan.approve_at.contains(&at) && !approved => (
                Phase::AwaitingApproval {
                    step,
                    failed_in_row: 0,
                },
                Event::AwaitingApproval { at },
            ),
            Verdict::Pass if step + 1 >= plan.steps.len() || plan.steps[step + 1] >= 100.0 => (
                Phase::Migrated,
                Event::Migrated {
                    gates: gates.to_vec(),
                },
            ),
            Verdict::Pass => (
                Phase::Running {
                    step: step + 1,
                    failed_in_row: 0,
                    approved: false,
                },
                Event::Advanced {
                    from: at,
                    to: plan.steps[step + 1],
                    gates: gates.to_vec(),
                },
            ),
        }
    }

    /// `banyan rollout approve`: a step waiting for approval moves on at its next passing
    /// check (`None`: nothing to approve).
    pub(crate) fn approve(&self, plan: &Plan) -> Option<(Phase, Event)> {
        let step = match *self {
            Phase::AwaitingApproval { step, .. } => step,
            Phase::Running {
                step,
                approved: false,
                ..
            } if plan.approve_at.contains(&plan.steps[step]) => step,
            _ => return None,
        };
        Some((
            Phase::Running {
                step,
                failed_in_row: 0,
                approved: true,
            },
            Event::Approved {
                at: plan.steps[step],
            },
        ))
    }

    pub(crate) fn pause(&self, plan: &Plan) -> Option<(Phase, Event)> {
        match *self {
            Phase::Running { step, .. } | Phase::AwaitingApproval { step, .. } => Some((
                Phase::Paused { step },
                Event::Paused {
                    at: plan.steps[step],
                },
            )),
            _ => None,
        }
    }

    pub(crate) fn resume(&self, plan: &Plan) -> Option<(Phase, Event)> {
        match *self {
            Phase::Paused { step } => Some((
                Phase::Running {
                    step,
                    failed_in_row: 0,
                    approved: false,
                },
                Event::Resumed {
                    at: plan.steps[step],
                },
            )),
            _ => None,
        }
    }

    /// `banyan rollback ROUTE`: back to the old side from anywhere, migrated included.
    pub(crate) fn rollback(&self, plan: &Plan) -> Option<(Phase, Event)> {
        match self {
            Phase::RolledBack => None,
            _ => Some((
                Phase::RolledBack,
                Event::RolledBack {
                    from: self.percent(plan),
                },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gate::{Counts, error_rate, mismatches};
    use super::*;

    fn plan(approve_at: &[f64]) -> Plan {
        Plan {
            steps: vec![0.0, 5.0, 25.0, 100.0],
            approve_at: approve_at.to_vec(),
            failures: 2,
        }
    }
    fn pass() -> Vec<Judged> {
        vec![error_rate(
            Counts {
                requests: 500,
                errors: 0,
            },
            Counts {
                requests: 500,
                errors: 0,
            },
            0.5,
            200,
        )]
    }
    fn fail() -> Vec<Judged> {
        vec![mismatches(50, 1000, 0.1, 100)]
    }
    fn hold() -> Vec<Judged> {
        vec![mismatches(0, 10, 0.1, 100)]
    }

    #[test]
    fn passing_checks_walk_the_steps_to_migrated() {
        let p = plan(&[]);
        let mut phase = Phase::start();
        let mut shares = vec![phase.percent(&p)];
        while phase != Phase::Migrated {
            phase = phase.check(&p, &pass()).0;
            shares.push(phase.percent(&p));
        }
        assert_eq!(shares, [0.0, 5.0, 25.0, 100.0]);
    }

    #[test]
    fn two_failed_checks_in_a_row_abort_to_zero_naming_the_gate() {
        let p = plan(&[]);
        let at_5 = Phase::start().check(&p, &pass()).0;
        let (once, event) = at_5.check(&p, &fail());
        assert!(matches!(
            event,
            Event::FailedCheck {
                count: 1,
                of: 2,
                ..
            }
        ));
        assert_eq!(once.percent(&p), 5.0);
        // An inconclusive check in between is no evidence: the count stands.
        let (still, _) = once.check(&p, &hold());
        assert_eq!(still, once);
        let (aborted, event) = still.check(&p, &fail());
        let Event::Aborted { at, cause } = event else {
            panic!("{event:?}")
        };
        assert_eq!((at, cause.gate), (5.0, super::super::gate::Gate::Shadow));
        assert_eq!(aborted.percent(&p), 0.0);
        assert!(!aborted.judging());
        // Aborted stays aborted.
        assert_eq!(aborted.check(&p, &pass()).0, aborted);
    }

    #[test]
    fn a_passing_check_clears_the_failure_count() {
        let p = Plan {
            steps: vec![0.0, 5.0, 5.0, 100.0],
            ..plan(&[])
        };
        let once = Phase::start().check(&p, &fail()).0;
        let cleared = once.check(&p, &pass()).0;
        assert!(matches!(
            cleared,
            Phase::Running {
                failed_in_row: 0,
                step: 1,
                ..
            }
        ));
    }

    #[test]
    fn low_traffic_never_moves_a_step() {
        let p = plan(&[]);
        let mut phase = Phase::start().check(&p, &pass()).0;
        for _ in 0..100 {
            let (next, event) = phase.check(&p, &hold());
            assert!(matches!(event, Event::Held { .. }), "{event:?}");
            phase = next;
        }
        assert_eq!(phase.percent(&p), 5.0);
    }

    #[test]
    fn an_approval_step_waits_for_the_operator() {
        let p = plan(&[25.0]);
        let at_25 = Phase::start().check(&p, &pass()).0.check(&p, &pass()).0;
        assert_eq!(at_25.percent(&p), 25.0);
        let (waiting, event) = at_25.check(&p, &pass());
        assert_eq!(event, Event::AwaitingApproval { at: 25.0 });
        assert_eq!(
            waiting.check(&p, &pass()).0,
            waiting,
            "no approval, no move"
        );
        let approved = waiting.approve(&p).unwrap().0;
        assert_eq!(approved.check(&p, &pass()).0, Phase::Migrated);
        // Waiting still judges: failures abort.
        let aborted = waiting.check(&p, &fail()).0.check(&p, &fail()).0;
        assert!(matches!(aborted, Phase::Aborted { step: 2, .. }));
    }

    #[test]
    fn pause_holds_resume_restarts_and_rollback_works_from_migrated() {
        let p = plan(&[]);
        let at_5 = Phase::start().check(&p, &pass()).0;
        let paused = at_5.pause(&p).unwrap().0;
        assert_eq!(paused.percent(&p), 5.0);
        assert!(!paused.judging());
        assert_eq!(paused.check(&p, &pass()).0, paused);
        assert_eq!(
            paused.resume(&p).unwrap().0,
            Phase::start().check(&p, &pass()).0
        );
        let (back, event) = Phase::Migrated.rollback(&p).unwrap();
        assert_eq!(
            (back.percent(&p), event),
            (0.0, Event::RolledBack { from: 100.0 })
        );
        assert!(back.rollback(&p).is_none());
    }
}
