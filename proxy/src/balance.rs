//! Spreading client connections evenly over the worker threads.
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
//! random placement every thread is reached within the first few connections. A connection that
//! moves runs as a new task on its new thread, and the task Pingora accepted it in ends: Pingora
//! does not track connection tasks (it stops accepting at shutdown and leaves the rest to the
//! grace period), so nothing is lost by leaving it.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::runtime::Handle;

/// One worker thread: where to spawn on it and how many connections it serves now.
struct Worker {
    thread: std::thread::ThreadId,
    handle: Handle,
    live: Arc<AtomicUsize>,
}

/// The worker threads seen so far and their connection counts.
#[derive(Default)]
pub struct Workers {
    threads: RwLock<Vec<Worker>>,
}

/// Counts a connection on its thread while it lives.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Runs `serve` (one client connection, from its first request to its end) on the thread
    /// with the fewest connections: awaited here when this thread is one of those, else spawned
    /// there and left to run (this returns at once, and the task it was accepted in ends).
    pub async fn place<F>(&self, serve: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let here = self.register_current();
        let (target, live) = self.least_loaded().unwrap_or((None, here));
        live.fetch_add(1, Ordering::Relaxed);
        let live = Live(live);
        let counted = async move {
            serve.await;
            drop(live);
        };
        match target {
            None => counted.await,
            Some(handle) => {
                handle.spawn(counted);
            }
        }
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
                w.place(async move {
                    ran_on.send(std::thread::current().id()).unwrap();
                    let _ = gate.wait_for(|open| *open).await;
                })
                .await;
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
}
