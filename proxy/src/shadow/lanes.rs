//! Copies to one candidate backend that are ready together go together: pipelined on one
//! connection, written with one `send()`.
//!
//! Why: with one request and one answer per connection, each comparison paid a `send()` that
//! runs the loopback's delivery and wakes the candidate, and a `recv()` for its answer: about
//! 6 µs of kernel time a comparison, more than half of what it cost (bench/RESULTS.md, issue 22).
//! The shadow thread picks up the client side's jobs once a millisecond, so under load a tick
//! brings many copies for the same candidate at once; sent together, they cost one wake-up of
//! the candidate and usually one read of all the answers.
//!
//! How: every backend address has a lane on the shadow thread. A copy that may be pipelined
//! ([`client::pipelinable`]: GET or HEAD without a body, so sending it again is harmless when a
//! connection closes under it) joins its lane's queue; the first to join spawns a flush, which
//! runs after the jobs the same tick spawned (the shadow runtime runs its tasks in the order
//! they were woken) and takes up to the lane's depth of them onto one connection. More than
//! that, and another flush takes the rest on another connection at the same time. Writes and
//! copies with a body go alone, as before.
//!
//! What pipelining costs is head-of-line waiting: a candidate answers a connection's requests
//! one after another, so a batch of eight to a candidate that needs 50 ms each waits 400 ms for
//! its last answer, and holds its in-flight slots that long; behind an answer that never comes,
//! the rest wait for their timeout. The depth therefore follows what the candidate's answers
//! take, as TCP's window follows the network: a lane starts at one request a connection (the
//! old way), each batch answered whole within [`SLOW_ANSWER`] an answer doubles it, up to
//! [`MAX_DEPTH`], and a slower batch, or one with any failure, puts it back to one. Only a
//! candidate that keeps answering fast, where waiting in line costs microseconds, is
//! pipelined.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

#[cfg(test)]
use bytes::Bytes;

use super::answer::Answer;
use super::client::{self, Failed, Limits, Pending, Request};

/// The most requests one connection carries at a time.
pub(super) const MAX_DEPTH: usize = 64;

/// A batch whose answers took longer than this each (from the write to the last answer,
/// divided by their number) stops its lane pipelining until one is quicker.
const SLOW_ANSWER: Duration = Duration::from_millis(1);

/// A lane nobody used for this long is forgotten (its backend may be gone from the table).
const FORGET_AFTER: Duration = Duration::from_secs(60);

type Reply = oneshot::Sender<Result<Answer, Failed>>;

struct Lane {
    queue: Vec<(Pending, Reply)>,
    /// A flush is spawned and has not taken the queue yet.
    flushing: bool,
    depth: usize,
    used: Instant,
}

thread_local! {
    /// The shadow thread's lanes, by backend address.
    static LANES: RefCell<HashMap<SocketAddr, Lane>> = RefCell::new(HashMap::new());
}

/// Sends `req` to the backend at `addr` and reads its whole answer: pipelined with the other
/// copies for that backend that are ready now when it may be, else on a connection of its own.
pub(super) async fn exchange(
    addr: SocketAddr,
    req: &Request<'_>,
    limits: Limits,
) -> Result<Answer, Failed> {
    let pending = Pending::new(addr, req, limits);
    if !client::pipelinable(req) {
        let mut one = client::exchange_all(addr, std::slice::from_ref(&pending)).await;
        return one.pop().unwrap_or(Err(Failed::Broken("no answer")));
    }
    let (reply, answer) = oneshot::channel();
    if join(addr, pending, reply) {
        spawn_flush(addr);
    }
    answer
        .await
        .unwrap_or(Err(Failed::Broken("the lane was dropped")))
}

/// Queues a copy on its lane; true when a flush must be spawned for it.
fn join(addr: SocketAddr, pending: Pending, reply: Reply) -> bool {
    LANES.with(|lanes| {
        let mut lanes = lanes.borrow_mut();
        let now = Instant::now();
        if !lanes.contains_key(&addr) {
            lanes.retain(|_, l| l.flushing || !l.queue.is_empty() || now - l.used < FORGET_AFTER);
        }
        let lane = lanes.entry(addr).or_insert_with(|| Lane {
            queue: Vec::new(),
            flushing: false,
            depth: 1,
            used: now,
        });
        lane.used = now;
        lane.queue.push((pending, reply));
        !std::mem::replace(&mut lane.flushing, true)
    })
}

/// A flush of `addr`'s lane as a task of its own (a plain function: the flush spawns the next).
fn spawn_flush(addr: SocketAddr) {
    tokio::spawn(flush(addr));
}

/// Takes up to the lane's depth of its queue onto one connection (another flush takes the rest
/// at once), sends them, hands each answer to its copy, and adjusts the depth.
async fn flush(addr: SocketAddr) {
    let batch = LANES.with(|lanes| {
        let mut lanes = lanes.borrow_mut();
        let Some(lane) = lanes.get_mut(&addr) else {
            return Vec::new();
        };
        let n = lane.queue.len().min(lane.depth);
        let batch: Vec<_> = lane.queue.drain(..n).collect();
        if lane.queue.is_empty() {
            lane.flushing = false;
        } else {
            spawn_flush(addr);
        }
        batch
    });
    if batch.is_empty() {
        return;
    }
    let (items, replies): (Vec<Pending>, Vec<Reply>) = batch.into_iter().unzip();
    let started = Instant::now();
    let results = client::exchange_all(addr, &items).await;
    let all_answered = results.iter().all(Result::is_ok);
    let per_answer = started.elapsed() / items.len() as u32;
    LANES.with(|lanes| {
        if let Some(lane) = lanes.borrow_mut().get_mut(&addr) {
            lane.depth = if all_answered {
                next_depth(lane.depth, per_answer)
            } else {
                1
            };
        }
    });
    for (result, reply) in results.into_iter().zip(replies) {
        // The copy may have stopped waiting (its route's timeout): nothing to tell.
        let _ = reply.send(result);
    }
}

/// The depth after a batch whose answers took `per_answer` each (see the module docs).
fn next_depth(depth: usize, per_answer: Duration) -> usize {
    if per_answer > SLOW_ANSWER {
        1
    } else {
        (depth * 2).min(MAX_DEPTH)
    }
}

/// The depth of the lane to `addr` (for tests).
#[cfg(test)]
pub(super) fn depth(addr: SocketAddr) -> Option<usize> {
    LANES.with(|lanes| lanes.borrow().get(&addr).map(|l| l.depth))
}

/// Opens the lane to `addr` at `depth`, as if quick batches had brought it there (for tests).
#[cfg(test)]
fn open_at(addr: SocketAddr, depth: usize) {
    LANES.with(|lanes| {
        lanes.borrow_mut().insert(
            addr,
            Lane {
                queue: Vec::new(),
                flushing: false,
                depth,
                used: Instant::now(),
            },
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow::client::{get, limits};
    use http::{HeaderMap, Method};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A candidate that answers every request after `delay`, one at a time per connection as
    /// HTTP/1.1 servers do; reports each connection's request count when it closes.
    async fn candidate(
        delay: Duration,
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                // As HTTP servers do (Nagle's wait would hold each answer behind the last).
                s.set_nodelay(true).unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let (mut seen, mut answered) = (Vec::new(), 0);
                    let mut buf = [0u8; 8192];
                    while let Ok(k @ 1..) = s.read(&mut buf).await {
                        seen.extend_from_slice(&buf[..k]);
                        let heads = String::from_utf8_lossy(&seen).matches("\r\n\r\n").count();
                        while answered < heads {
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(answer).await.is_err() {
                                break;
                            }
                            answered += 1;
                        }
                    }
                    let _ = tx.send(answered);
                });
            }
        });
        (addr, rx)
    }

    /// `n` copies to `addr` made ready at the same moment, as one tick of the shadow thread
    /// does; each answer's body.
    async fn copies(addr: SocketAddr, n: usize) -> Vec<Bytes> {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                tokio::spawn(async move {
                    let headers = HeaderMap::new();
                    let target = format!("/api/products/{i}");
                    let req = get(&Method::GET, &target, &headers);
                    exchange(addr, &req, limits()).await.map(|a| a.body)
                })
            })
            .collect();
        let mut bodies = Vec::new();
        for t in tasks {
            bodies.push(t.await.unwrap().unwrap());
        }
        bodies
    }

    #[tokio::test]
    async fn copies_ready_together_share_one_connection() {
        let (addr, mut closed) = candidate(Duration::ZERO).await;
        open_at(addr, MAX_DEPTH);
        let bodies = copies(addr, 12).await;
        assert!(bodies.iter().all(|b| &b[..] == b"ok"));
        // Closing the kept connection makes the candidate report what it carried.
        drop(crate::fast_path::idle::take(addr, Duration::from_secs(30)));
        assert_eq!(
            closed.recv().await,
            Some(12),
            "all twelve on one connection"
        );
    }

    #[tokio::test]
    async fn a_slow_candidate_gets_one_copy_a_connection() {
        let (addr, mut closed) = candidate(Duration::from_millis(5)).await;
        open_at(addr, MAX_DEPTH);
        copies(addr, 4).await;
        assert_eq!(
            depth(addr),
            Some(1),
            "answers 5 ms apart stop the pipelining"
        );
        copies(addr, 4).await;
        assert_eq!(depth(addr), Some(1));
        while let Some(c) = crate::fast_path::idle::take(addr, Duration::from_secs(30)) {
            drop(c);
        }
        let mut carried = Vec::new();
        for _ in 0..4 {
            carried.push(closed.recv().await.unwrap());
        }
        carried.sort();
        // The first four in line on one connection, which the next batch reused for one; the
        // other three of the second four each on a connection of its own.
        assert_eq!(carried, [1, 1, 1, 5]);
    }

    #[tokio::test]
    async fn a_new_lane_sends_one_copy_a_connection_and_a_failure_puts_it_back_there() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (reply, _answer) = oneshot::channel();
        let headers = HeaderMap::new();
        let req = get(&Method::GET, "/", &headers);
        assert!(join(dead, Pending::new(dead, &req, limits()), reply));
        assert_eq!(depth(dead), Some(1));
        open_at(dead, MAX_DEPTH);
        assert!(matches!(
            exchange(dead, &req, limits()).await,
            Err(Failed::Connect)
        ));
        assert_eq!(
            depth(dead),
            Some(1),
            "a refused connection ends the pipelining"
        );
    }

    #[test]
    fn slow_answers_stop_pipelining_and_fast_ones_bring_it_back() {
        let slow = Duration::from_millis(5);
        let fast = Duration::from_micros(40);
        assert_eq!(next_depth(MAX_DEPTH, slow), 1);
        assert_eq!(next_depth(1, slow), 1, "never below one a connection");
        assert_eq!(next_depth(1, fast), 2);
        assert_eq!(next_depth(MAX_DEPTH, fast), MAX_DEPTH);
    }
}
