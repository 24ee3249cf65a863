//! Writing a service's own changes back into the monolith before the write is answered, so the
//! user who made it finds it on the other side of the cut at once.
//!
//! During a migration a write taken by an extracted service (a registration, a product edit) is
//! also needed by the monolith, where orders still live. A background loop writing it back
//! every 200 ms is not enough: a client that registers and orders at once, or creates a
//! product and orders it, reaches the monolith before the loop does and is told the user or the
//! product does not exist. So the request that made a write runs a write-back round itself,
//! after its own commit, and answers once its change is in the monolith; the background loop
//! still runs for everything else (and for a round that failed).
//!
//! Rounds take turns (one mutex around the follower): a request's round starts after its own
//! commit, so it sees its own change. A round reads the outbox from the checkpoint in sequence
//! order, so once a round has read up to the request's sequence number, its change was written
//! back; a round that found nothing after the checkpoint means it was written back earlier.
//! The wait is bounded ([`WAIT`]): when the monolith is slow or down, the write (committed
//! here, owned here) is answered anyway, logged, and the background loop delivers it later.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::outbox::{self, Follower, Outbox};

/// How long a request waits for its change to reach the monolith.
pub const WAIT: Duration = Duration::from_secs(2);

/// What one write-back round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Round {
    /// Rows written into the monolith.
    pub written: usize,
    /// The highest outbox sequence number the round read (`None`: nothing after the checkpoint).
    pub read_up_to: Option<i64>,
}

/// One kind of write-back: a round of it (read the own outbox after the checkpoint, write the
/// rows into the monolith, save the checkpoint there).
pub trait WriteBack: Send + Sync + 'static {
    fn round<'a>(
        &'a self,
        follower: &'a mut Follower,
    ) -> impl Future<Output = anyhow::Result<Round>> + Send + 'a;
}

/// A write-back that requests can drive (see the module docs).
pub struct WriteThrough<W> {
    back: W,
    follower: tokio::sync::Mutex<Follower>,
    what: &'static str,
}

impl<W: WriteBack> WriteThrough<W> {
    pub fn new(back: W, outbox: Outbox, what: &'static str) -> Arc<Self> {
        Arc::new(Self {
            back,
            follower: tokio::sync::Mutex::new(Follower::new(outbox)),
            what,
        })
    }

    async fn round(&self) -> anyhow::Result<Round> {
        let mut follower = self.follower.lock().await;
        self.back.round(&mut follower).await
    }

    /// Called after the commit of a change recorded in the outbox under `seq`: returns once it
    /// is written back (true), or after [`WAIT`] (false; the background loop delivers it).
    pub async fn written_back(&self, seq: i64) -> bool {
        let rounds = async {
            loop {
                match self.round().await {
                    Ok(Round {
                        read_up_to: None, ..
                    }) => return,
                    Ok(Round {
                        read_up_to: Some(s),
                        ..
                    }) if s >= seq => return,
                    // A batch that ended before it: the next round goes on from there.
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), what = self.what, "write-back on behalf of a request failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        };
        let done = tokio::time::timeout(WAIT, rounds).await.is_ok();
        if !done {
            tracing::warn!(
                seq,
                what = self.what,
                "a write was answered before it reached the monolith (it is slow or down); it follows within the sync lag"
            );
        }
        done
    }

    /// The background loop: a round every [`outbox::POLL`], until the process stops.
    pub async fn run(self: Arc<Self>) {
        let mut tick = outbox::ticker();
        loop {
            tick.tick().await;
            let result = self.round().await.map(|r| r.written);
            outbox::log_round(self.what, result);
        }
    }
}
