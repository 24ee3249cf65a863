//! The shadow thread: where every shadow job runs, off the client's path, at idle priority,
//! fed through a bounded inbox (see [`super::mirror`] for why nothing crosses the other way).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::answer::Answer;
use super::bounds::{Backlog, Backlogs};
use super::results::{self, Event, Results};
use crate::route_table::RouteTable;

use super::exchange::{Replica, run};

/// The process-wide part of shadowing: the runtime shadow tasks run on (and the candidates'
/// connections, [`super::client`]), and the results store.
///
/// Shadow tasks run on their own thread, scheduled `SCHED_IDLE` on Linux: it only gets CPU time
/// no client request wants. On a saturated machine the shadow side slows down, its in-flight
/// bound fills and further shadows are dropped (and counted) instead of taking CPU from clients.
/// Where idle scheduling is refused, the thread runs at the lowest normal priority.
///
/// Its inbox is bounded ([`INBOX`] messages): what does not fit is counted in the route's
/// [`Backlog`] instead, so a starved shadow thread costs no memory (see [`super::bounds`]).
pub(crate) struct Shadower {
    pub(super) inbox: std::sync::mpsc::SyncSender<Message>,
}

/// What the client's side sends the shadow thread.
pub(super) enum Message {
    Event {
        route: String,
        endpoint: String,
        event: Event,
    },
    Job(Box<Job>),
}

/// A request to shadow, complete: the copy, the primary's answer, its in-flight slot.
pub(super) struct Job {
    pub(super) table: Arc<RouteTable>,
    pub(super) route: usize,
    pub(super) endpoint: String,
    pub(super) copy: Replica,
    pub(super) primary: Answer,
    pub(super) _permit: OwnedSemaphorePermit,
}

/// Messages the shadow thread's inbox holds (about 1 MiB at most): at its 1 ms tick, room for
/// more than ten times the events of 100,000 requests/s before the backlogs take over.
const INBOX: usize = 16_384;

/// How often the shadow thread looks for messages: quickly while they come, backing off to
/// [`TICK_IDLE`] when none do.
const TICK_BUSY: Duration = Duration::from_millis(1);
const TICK_IDLE: Duration = Duration::from_millis(50);

/// Starts the shadow thread: it runs shadow jobs until the process ends.
fn start_shadow_thread(
    inbox: std::sync::mpsc::Receiver<Message>,
    results: Arc<Results>,
    backlogs: Backlogs,
) {
    std::thread::Builder::new()
        .name("banyan-shadow".into())
        .spawn(move || {
            let lowered = service_kit::priority::lower_current_thread();
            tracing::debug!(?lowered, "shadow thread priority");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building the shadow runtime");
            // Candidates are called with the fast path's wire code ([`super::client`]), its
            // connections kept in this thread's own idle list.
            rt.block_on(drain(inbox, results, backlogs));
        })
        .expect("starting the shadow thread");
}

async fn drain(
    inbox: std::sync::mpsc::Receiver<Message>,
    results: Arc<Results>,
    backlogs: Backlogs,
) {
    let mut tick = TICK_BUSY;
    loop {
        tokio::time::sleep(tick).await;
        let mut any = false;
        loop {
            match inbox.try_recv() {
                Ok(Message::Event {
                    route,
                    endpoint,
                    event,
                }) => results.count(&route, &endpoint, event),
                Ok(Message::Job(job)) => {
                    tokio::spawn(run(results.clone(), *job));
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            }
            any = true;
        }
        any |= count_backlogs(&backlogs, &results);
        tick = if any {
            TICK_BUSY
        } else {
            (tick * 2).min(TICK_IDLE)
        };
    }
}

/// Counts what the routes' backlogs hold (under [`results::OTHER`]); true when anything was.
fn count_backlogs(backlogs: &Backlogs, results: &Results) -> bool {
    let mut any = false;
    for (route, backlog) in backlogs.load().iter() {
        for (event, n) in backlog.take() {
            results.count_many(route, results::OTHER, event, n);
            any = true;
        }
    }
    any
}

impl Shadower {
    /// Starts the shadow thread; it drains `backlogs` ([`crate::reload::LiveTable`] keeps them).
    pub(crate) fn new(results: Arc<Results>, backlogs: Backlogs) -> Self {
        let (shadower, rx) = Self::unstarted(INBOX);
        start_shadow_thread(rx, results, backlogs);
        shadower
    }

    /// A shadower and the receiving end of its inbox, with no thread reading it yet.
    fn unstarted(capacity: usize) -> (Self, std::sync::mpsc::Receiver<Message>) {
        let (inbox, rx) = std::sync::mpsc::sync_channel(capacity);
        (Self { inbox }, rx)
    }

    /// Reports a client-side event; into `backlog` when the inbox is full. Never waits.
    pub(super) fn event(&self, route: &str, endpoint: &str, event: Event, backlog: &Backlog) {
        let sent = self.inbox.try_send(Message::Event {
            route: route.to_owned(),
            endpoint: endpoint.to_owned(),
            event,
        });
        if let Err(std::sync::mpsc::TrySendError::Full(_)) = sent {
            backlog.add(event);
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::metrics::Metrics;
    use crate::shadow::bounds::Bounds;

    /// A shadow thread that does not get the CPU: what does not fit in its inbox waits in the
    /// route's backlog, and nothing is lost once it runs.
    #[test]
    fn events_beyond_a_full_inbox_wait_in_the_backlog_and_are_all_counted() {
        let results = Arc::new(Results::new(Arc::new(Metrics::new())));
        let bounds = Bounds::default();
        let bound = bounds.get("r", 1);
        bounds.retain(&["r"]);
        let (shadower, inbox) = Shadower::unstarted(2);
        for _ in 0..5 {
            shadower.event("r", "GET /x", Event::DroppedInFlight, &bound.backlog);
        }
        assert!(count_backlogs(&bounds.backlogs(), &results));
        let totals = |results: &Results| results.snapshot()["r"].totals().dropped_in_flight;
        assert_eq!(totals(&results), 3, "three waited in the backlog");
        assert_eq!(
            results.snapshot()["r"].endpoints[results::OTHER]
                .counts
                .dropped_in_flight,
            3
        );
        for m in inbox.try_iter() {
            let Message::Event {
                route,
                endpoint,
                event,
            } = m
            else {
                panic!("only events were sent");
            };
            results.count(&route, &endpoint, event);
        }
        assert_eq!(
            totals(&results),
            5,
            "the two in the inbox, under their endpoint"
        );
        assert!(!count_backlogs(&bounds.backlogs(), &results), "taken once");
        assert_eq!(totals(&results), 5);
    }
}
