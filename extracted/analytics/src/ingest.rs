//! Durable ingestion with group commit and back-pressure.
//!
//! Each request hands its event to [`Ingestor::submit`] and waits for the writer's answer. The
//! writer takes the first queued event, plus everything else already queued (up to
//! [`MAX_BATCH`]), inserts them with one statement in one transaction, and only then answers
//! every waiting request. So 202 always means "committed", and under load one commit serves
//! hundreds of requests.
//!
//! The queue is bounded ([`Ingestor::new`]'s capacity). A request that finds it full waits up to
//! [`ENQUEUE_WAIT`] for room and then gets 503 with `Retry-After`: memory stays bounded, and the
//! client knows its event was not taken. On shutdown the server stops taking requests, the
//! requests in flight keep their place in the queue, and the writer drains it before the process
//! exits.

use std::time::Duration;

use service_kit::contract::analytics::Event;
use service_kit::db::{Database, Sql};
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;

/// The most events one transaction inserts.
pub const MAX_BATCH: usize = 1000;
/// How long a request waits for room in a full queue before 503.
pub const ENQUEUE_WAIT: Duration = Duration::from_secs(1);
/// Attempts at storing a batch before its requests are told it failed.
const ATTEMPTS: u32 = 3;

struct Pending {
    event: Event,
    user_id: Option<i64>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The sending side, cloned into every request.
#[derive(Clone)]
pub struct Ingestor {
    queue: mpsc::Sender<Pending>,
}

impl Ingestor {
    /// Starts the writer on `db`; it runs until every `Ingestor` clone is dropped and the queue
    /// is drained.
    pub fn new(db: Database, capacity: usize) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity);
        let writer = tokio::spawn(write_batches(db, rx));
        (Self { queue: tx }, writer)
    }

    /// Stores `event`; returns once it is committed.
    pub async fn submit(&self, event: Event, user_id: Option<i64>) -> Result<(), Error> {
        let (done, stored) = oneshot::channel();
        let pending = Pending {
            event,
            user_id,
            done,
        };
        match tokio::time::timeout(ENQUEUE_WAIT, self.queue.send(pending)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Error::NotStored("the writer has stopped".into())),
            Err(_) => return Err(Error::Saturated),
        }
        match stored.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::NotStored(e)),
            Err(_) => Err(Error::NotStored("the writer stopped mid-batch".into())),
        }
    }
}

async fn write_batches(db: Database, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut result = Err(String::new());
        for attempt in 1..=ATTEMPTS {
            result = insert(&db, &batch).await.map_err(|e| e.to_string());
            match &result {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, events = batch.len(), "storing a batch of events failed");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
        for p in batch.drain(..) {
            // A request that gave up (client gone) no longer listens; its event is stored anyway.
            let _ = p.done.send(result.clone());
        }
    }
    tracing::info!("event writer drained and stopped");
}

async fn insert(db: &Database, batch: &[Pending]) -> Result<(), sqlx::Error> {
    let mut tx = db.pool.begin().await?;
    for chunk in batch.chunks(200) {
        let mut q = Sql::new("INSERT INTO events (type, product_id, user_id, at) VALUES ");
        for (i, p) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(").bind(p.event.kind.clone());
            q.push(", ").bind(p.event.product_id);
            q.push(", ").bind(p.user_id);
            q.push(", ").bind(p.event.at).push(")");
        }
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await
}
