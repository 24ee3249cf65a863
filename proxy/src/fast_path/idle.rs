//! Kept-alive upstream connections of the fast path, per worker thread and backend address.
//!
//! Why not Pingora's connection pool: it is built for many threads sharing one pool, and pays
//! for it on every request: each returned connection goes into an `Arc<Mutex>`, an LRU and a
//! sharded map under locks, and gets a spawned task that watches it while idle, which is then
//! woken and torn down when the connection is taken again. This pool is a per-thread list: a
//! worker thread takes the most recently returned connection and puts it back, with no lock and
//! no task. A connection taken on one thread and returned on another (tasks of a work-stealing
//! runtime can move) simply joins the other thread's list.
//!
//! An idle connection is not watched; instead it is checked when taken: past the upstream's
//! `idle_timeout`, closed by the backend, or with unexpected bytes waiting, it is dropped and
//! the next one is tried. A backend closing a connection at the moment it is reused is still
//! possible; the fast path then tries an idempotent request once more on a new connection, and
//! answers any other as failed (the backend may have taken it: [`crate::edge::failure`]).
//! At most [`MAX_IDLE_PER_BACKEND`] connections per thread and backend are kept; the oldest go.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Idle connections kept per worker thread and backend. More concurrent requests than this to
/// one backend still work; their connections are closed when done instead of kept. Sized for
/// a thousand concurrent clients per thread: below the concurrency, every request past the
/// bound opens and closes a connection, and at 1,000 clients (bench `small-1000`, with 128)
/// that churn overflowed the backend's accept queue until connects timed out and the backend
/// left rotation. Unused connections still go after the upstream's `idle_timeout`.
pub(crate) const MAX_IDLE_PER_BACKEND: usize = 1024;

struct Idle {
    stream: TcpStream,
    since: Instant,
    /// The upstream's `idle_timeout` when it was returned (for the sweep).
    timeout: Duration,
}

thread_local! {
    static IDLE: RefCell<Pool> = RefCell::new(Pool::default());
}

#[derive(Default)]
struct Pool {
    lists: HashMap<SocketAddr, VecDeque<Idle>>,
    /// Returns since the last sweep.
    puts: u32,
}

/// Every this many returns, expired connections of every backend are closed and empty lists
/// dropped: a backend a reload removed is never asked for again, so its list would otherwise
/// keep its connections (and its entry) for the life of the thread.
const SWEEP_EVERY: u32 = 256;

/// A kept-alive connection to `addr` that is still usable, if there is one.
pub(crate) fn take(addr: SocketAddr, idle_timeout: Duration) -> Option<TcpStream> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.lists.get_mut(&addr)?;
        let mut found = None;
        while let Some(c) = list.pop_back() {
            if c.since.elapsed() >= idle_timeout {
                // Everything older is expired too.
                list.clear();
                break;
            }
            if usable(&c.stream) {
                found = Some(c.stream);
                break;
            }
        }
        // An emptied list stays (with its room) for the connection's return: removing it here
        // freed and allocated it again on every request. The sweep drops lists left empty.
        found
    })
}

/// Keeps `stream` (which just finished a complete exchange) for the next request to `addr`.
pub(crate) fn put(addr: SocketAddr, stream: TcpStream, idle_timeout: Duration) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.puts += 1;
        if idle.puts >= SWEEP_EVERY {
            idle.puts = 0;
            idle.lists.retain(|_, list| {
                list.retain(|c| c.since.elapsed() < c.timeout);
                !list.is_empty()
            });
        }
        let list = idle.lists.entry(addr).or_default();
        while list
            .front()
            .is_some_and(|c| c.since.elapsed() >= idle_timeout)
        {
            list.pop_front();
        }
        if list.len() >= MAX_IDLE_PER_BACKEND {
            list.pop_front();
        }
        list.push_back(Idle {
            stream,
            since: Instant::now(),
            timeout: idle_timeout,
        });
    })
}

/// Idle connections this thread holds to `addr` (for tests).
#[cfg(test)]
pub(crate) fn count(addr: SocketAddr) -> usize {
    IDLE.with(|idle| idle.borrow().lists.get(&addr).map_or(0, |l| l.len()))
}

/// Backends this thread keeps a list for (for tests).
#[cfg(test)]
pub(crate) fn backends() -> usize {
    IDLE.with(|idle| idle.borrow().lists.len())
}

/// An idle connection is usable when reading from it would block: no EOF (the backend closed
/// it), no error, no bytes the backend sent unasked. Costs no syscall when the runtime has not
/// seen the socket become readable.
fn usable(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair(listener: &tokio::net::TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn closed_expired_and_chatty_connections_are_not_reused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let long = Duration::from_secs(60);

        let (alive, _alive_server) = pair(&listener).await;
        put(addr, alive, long);
        assert!(take(addr, long).is_some());
        assert!(take(addr, long).is_none(), "taken once only");

        let (closed, server) = pair(&listener).await;
        put(addr, closed, long);
        drop(server);
        // The close reaches the socket asynchronously; wait until the runtime sees it.
        let c = take_when(addr, long, false).await;
        assert!(c.is_none(), "a connection the backend closed is dropped");

        let (chatty, mut server) = pair(&listener).await;
        server
            .write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
            .await
            .unwrap();
        put(addr, chatty, long);
        assert!(
            take_when(addr, long, false).await.is_none(),
            "unasked bytes: dropped"
        );

        let (old, _old_server) = pair(&listener).await;
        put(addr, old, long);
        assert!(take(addr, Duration::ZERO).is_none(), "expired");
        assert_eq!(count(addr), 0);
    }

    /// Takes until the result is `want_some` (the kernel and runtime report a peer's close or
    /// bytes a moment later), putting back a still-usable connection between tries.
    async fn take_when(addr: SocketAddr, t: Duration, want_some: bool) -> Option<TcpStream> {
        for _ in 0..1000 {
            match take(addr, t) {
                Some(c) if !want_some => {
                    c.readable().await.ok();
                    put(addr, c, t);
                }
                r => return r,
            }
        }
        panic!("the connection's state never showed")
    }

    #[tokio::test]
    async fn a_backend_no_longer_asked_for_loses_its_list() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let (c, _s) = pair(&listener).await;
        put(gone, c, Duration::ZERO);
        assert_eq!(backends(), 1);
        let addr = listener.local_addr().unwrap();
        let mut servers = Vec::new();
        for _ in 0..SWEEP_EVERY {
            let (c, s) = pair(&listener).await;
            servers.push(s);
            put(addr, c, Duration::from_secs(60));
        }
        assert_eq!(
            count(gone),
            0,
            "the removed backend's connection was closed"
        );
        assert_eq!(backends(), 1, "and its list dropped");
    }

    #[tokio::test]
    async fn the_pool_keeps_a_bounded_number_per_backend() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let long = Duration::from_secs(60);
        let mut servers = Vec::new();
        for _ in 0..MAX_IDLE_PER_BACKEND + 5 {
            let (c, s) = pair(&listener).await;
            servers.push(s);
            put(addr, c, long);
        }
        assert_eq!(count(addr), MAX_IDLE_PER_BACKEND);
    }
}
