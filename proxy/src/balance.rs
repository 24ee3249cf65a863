//! Spreading client connections evenly over the worker threads, each served where its events
//! arrive.
//!
//! Banyan's workers are single-threaded runtimes (Pingora's no-steal runtime: a connection
//! stays on the thread that runs it, which keeps its state in that core's cache and its
//! upstream connections in that thread's idle pool). Pingora places each accepted connection on
//! a thread drawn at random, so 64 long-lived keep-alive connections on two threads land 36/28
//! or worse as often as not, and for as long as they live the busier thread's clients wait
//! longer: the imbalance shows in the latency tail, not in the average.
//!
//! [`Workers::place`] moves a new connection to the thread serving the fewest connections
//! (HAProxy's default; Envoy's "exact balance"). Threads join the registry the first time a
//! connection lands on them, so a thread no connection has reached yet is not a candidate; with
//! random placement every thread is reached within the first few connections. Every connection
//! runs as a new task on its thread (the same one or another), and the task Pingora accepted it
//! in ends: Pingora does not track connection tasks (it stops accepting at shutdown and leaves
//! the rest to the grace period), so nothing is lost by leaving it, and an idle connection does
//! not keep that task's state. Then [`register_here`] moves the socket's
//! registration to the serving thread's event loop.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use pingora_core::protocols::l4::stream::Stream as TcpClient;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use tokio::runtime::Handle;

/// One worker thread: where to spawn on it and how many connections it serves now.
struct Worker {
    thread: std::thread::ThreadId,
    handle: Handle,
    live: Arc<AtomicUsize>,
}

/// The worker threads seen so far and their connection counts.
#[derive(Default)]
pub(crate) struct Workers {
    threads: RwLock<Vec<Worker>>,
}

/// Counts a connection on its thread while it lives: the connection's future holds it.
pub(crate) struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Runs `serve` (one client connection, from its first request to its end) as a task of
    /// its own on the thread with the fewest connections, and returns at once: the task Pingora
    /// accepted the connection in then ends, also when the connection stays on its thread.
    /// Awaited there instead, the connection would keep Pingora's task (its accept handshake's
    /// timer and state) and the boxed future that called this for as long as it lives: 3.7 KB
    /// of an idle connection's 6.4 (heaptrack, 5,000 idle connections).
    ///
    /// `serve` is given the connection's [`Live`] count to hold (and drop when the connection
    /// ends), rather than this wrapping its future in one that does: an async block awaiting
    /// another future holds it twice over in its layout, which doubled the task.
    pub(crate) fn place<F>(&self, serve: impl FnOnce(Live) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let here = self.register_current();
        let (target, live) = self.least_loaded().unwrap_or((None, here));
        live.fetch_add(1, Ordering::Relaxed);
        let serve = serve(Live(live));
        match target {
            None => tokio::spawn(serve),
            Some(handle) => handle.spawn(serve),
        };
    }

    /// Client connections open now, on every thread.
    pub(crate) fn open(&self) -> usize {
        self.threads
            .read()
            .unwrap()
            .iter()
            .map(|w| w.live.load(Ordering::Relaxed))
            .sum()
    }

    /// This thread's counter, registering the thread when it is new.
    fn register_current(&self) -> Arc<AtomicUsize> {
        let id = std::thread::current().id();
        if let Some(w) = self.threads.read().unwrap().iter().find(|w| w.thread == id) {
            return w.live.clone();
        }
        let mut threads = self.threads.write().unwrap();
        if let Some(w) = threads.iter().find(|w| w.thread == id) {
            return w.live.clone();
        }
        let live = Arc::new(AtomicUsize::new(0));
        threads.push(Worker {
            thread: id,
            handle: Handle::current(),
            live: live.clone(),
        });
        live
    }

    /// The least-loaded thread: `None` for the handle when it is this one (ties stay here).
    fn least_loaded(&self) -> Option<(Option<Handle>, Arc<AtomicUsize>)> {
        let id = std::thread::current().id();
        let threads = self.threads.read().unwrap();
        let here = threads.iter().find(|w| w.thread == id)?;
        let mut best = here;
        let mut best_live = here.live.load(Ordering::Relaxed);
        for w in threads.iter() {
            let live = w.live.load(Ordering::Relaxed);
            if live < best_live {
                best = w;
                best_live = live;
            }
        }
        let handle = (best.thread != id).then(|| best.handle.clone());
        Some((handle, best.live.clone()))
    }
}

/// The client socket under `tcp`, registered with this thread's I/O driver, as a bare tokio
/// stream; `None` when no descriptor is left for it (the connection is then closed).
///
/// Pingora's accept loop runs on one worker thread, and the socket it accepts is registered
/// with that thread's event loop (epoll) even when the connection is served on another: every
/// readiness event of the connection is then seen by the accepting thread, which wakes the
/// serving one through its eventfd (a `write` system call per event, measured at one per
/// request), and the connection's latency depends on both threads being scheduled. Served
/// where it is registered, a connection touches only its own thread.
///
/// The socket is duplicated and the duplicate registered here; dropping `tcp` deregisters the
/// original from its thread and closes only its descriptor. The same moves a connection back
/// from Pingora's stream after Pingora's pipeline answered a request on it
/// ([`crate::connection`]). A bare stream is all an idle connection holds: with Pingora's
/// `Stream` around it (boxed, with its socket digest and timing fields) an idle connection took
/// 2.8 KiB, without it 1.6 (bench/RESULTS.md, idle-10k).
pub(crate) fn register_here(tcp: &impl std::os::fd::AsRawFd) -> Option<tokio::net::TcpStream> {
    use std::os::fd::BorrowedFd;
    // SAFETY: the descriptor is `tcp`'s, open for as long as `tcp` lives, which outlasts this
    // borrow; `try_clone_to_owned` makes a new descriptor (dup with close-on-exec) that the
    // returned stream owns.
    #[allow(unsafe_code)]
    let fd = unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) };
    let owned = fd.try_clone_to_owned().ok()?;
    tokio::net::TcpStream::from_std(std::net::TcpStream::from(owned)).ok()
}

/// `tcp` as the stream Pingora's pipeline takes: Pingora's transport buffers off (its
/// `From<TcpStream>`; nothing is buffered when the stream is given back) and the socket digest
/// its session reads the client's address from.
pub(crate) fn for_pingora(tcp: tokio::net::TcpStream) -> TcpClient {
    use std::os::fd::AsRawFd;
    let fd = tcp.as_raw_fd();
    let mut wrapped = TcpClient::from(tcp);
    wrapped.set_socket_digest(SocketDigest::from_raw_fd(fd));
    wrapped
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds `n` single-threaded runtimes on their own threads, like Pingora's no-steal pool.
    fn runtimes(n: usize) -> Vec<Handle> {
        (0..n)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    tx.send(rt.handle().clone()).unwrap();
                    rt.block_on(std::future::pending::<()>());
                });
                rx.recv().unwrap()
            })
            .collect()
    }

    #[test]
    fn connections_accepted_on_one_thread_spread_over_all() {
        let handles = runtimes(3);
        let workers = Arc::new(Workers::default());
        // Every thread has been reached once, as random placement does within a few connections.
        for h in &handles {
            let w = workers.clone();
            h.spawn(async move { w.register_current() });
        }
        // Registration is asynchronous; wait until all three are known.
        while workers.threads.read().unwrap().len() < 3 {
            std::thread::yield_now();
        }
        // Twelve long-lived connections, all accepted on the first thread.
        let (release, gate) = tokio::sync::watch::channel(false);
        let (ran_on, seen) = std::sync::mpsc::channel();
        for _ in 0..12 {
            let w = workers.clone();
            let mut gate = gate.clone();
            let ran_on = ran_on.clone();
            handles[0].spawn(async move {
                w.place(move |live| async move {
                    ran_on.send(std::thread::current().id()).unwrap();
                    let _ = gate.wait_for(|open| *open).await;
                    drop(live);
                });
            });
        }
        let mut per_thread: std::collections::HashMap<_, usize> = Default::default();
        for _ in 0..12 {
            *per_thread.entry(seen.recv().unwrap()).or_default() += 1;
        }
        assert_eq!(per_thread.len(), 3, "{per_thread:?}");
        assert!(per_thread.values().all(|&n| n == 4), "{per_thread:?}");
        // Closed connections are no longer counted.
        release.send(true).unwrap();
        let counts = || -> Vec<usize> {
            workers
                .threads
                .read()
                .unwrap()
                .iter()
                .map(|w| w.live.load(Ordering::Relaxed))
                .collect()
        };
        while counts().iter().any(|&n| n > 0) {
            std::thread::yield_now();
        }
    }

    /// Waits for a task spawned on one of [`runtimes`].
    fn wait<T>(task: tokio::task::JoinHandle<T>) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(task).unwrap()
    }

    #[test]
    fn a_socket_accepted_on_one_thread_is_served_on_another() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let handles = runtimes(2);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        // Accepted (and registered) on the first thread, as Pingora's accept loop does.
        let accepted = handles[0].spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (s, _) = listener.accept().await.unwrap();
            Box::new(TcpClient::from(s))
        });
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let tcp = wait(accepted);
        let old_fd = std::os::fd::AsRawFd::as_raw_fd(&*tcp);
        // Served on the second: it echoes one message, from the socket registered there.
        let served = handles[1].spawn(async move {
            let mut bare = register_here(&*tcp).unwrap();
            drop(tcp);
            let mut buf = [0u8; 5];
            bare.read_exact(&mut buf).await.unwrap();
            bare.write_all(&buf).await.unwrap();
            bare.flush().await.unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&bare);
            // And as Pingora's pipeline gets it, with the client's address.
            let wrapped = for_pingora(bare);
            let peer = wrapped
                .get_socket_digest()
                .and_then(|d| d.peer_addr().cloned());
            (fd, peer)
        });
        std::io::Write::write_all(&mut client, b"hello").unwrap();
        let mut echo = [0u8; 5];
        std::io::Read::read_exact(&mut client, &mut echo).unwrap();
        assert_eq!(&echo, b"hello");
        let (new_fd, peer) = wait(served);
        assert_ne!(new_fd, old_fd, "the socket was not re-registered");
        assert_eq!(
            peer.and_then(|p| p.as_inet().copied()),
            Some(client.local_addr().unwrap())
        );
    }
}
