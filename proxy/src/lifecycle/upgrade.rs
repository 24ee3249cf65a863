//! Zero-downtime restart and upgrade: a new process takes the listening sockets of the running
//! one, so not one connection is refused while the binary, `listen` or `threads` change.
//!
//! Pingora carries listening sockets from one process to the next over a Unix socket (its
//! "upgrade" mode): the new process, started with `--upgrade`, waits on `--upgrade-socket`; the
//! old one, on SIGQUIT, sends every listening socket it has (the client listener and the admin
//! API's) and keeps accepting for a few seconds while the new one starts on the same sockets;
//! the kernel queues connections on the shared socket, so none is refused. Then the old one
//! closes its connections and exits ([`super::drain`]).
//!
//! With `--pid-file`, every `banyan run` records its pid there once it serves, and
//! `banyan run --upgrade` sends the SIGQUIT itself, to the pid it finds there, as soon as its
//! own end of the upgrade socket is bound; the procedure is one command. Without a pid file,
//! send SIGQUIT to the old process yourself within 5 s of starting the new one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the new process waits for its upgrade socket to be bound before it gives up on
/// signalling the old one (Pingora's side waits 5 s for the sockets).
const BIND_WAIT: Duration = Duration::from_secs(5);

/// Where the process records its pid, and the upgrade socket.
#[derive(Debug, Clone)]
pub(crate) struct Handoff {
    pub pid_file: Option<PathBuf>,
    pub socket: PathBuf,
}

impl Handoff {
    /// Before taking over: finds the old process and arranges for it to be told (SIGQUIT) once
    /// this process listens on the upgrade socket. Errors when there is nothing to take over.
    pub(crate) fn prepare_takeover(&self) -> anyhow::Result<()> {
        // A socket file left by an earlier run would make the wait below see "bound" too early.
        let _ = std::fs::remove_file(&self.socket);
        let Some(pid_file) = &self.pid_file else {
            tracing::info!(socket = %self.socket.display(), "waiting for the listening sockets: send SIGQUIT to the running banyan now");
            return Ok(());
        };
        let old = read_pid(pid_file)?;
        let socket = self.socket.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !socket.exists() {
                if start.elapsed() > BIND_WAIT {
                    tracing::error!(socket = %socket.display(), "the upgrade socket was never bound; the old process was not signalled");
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            tracing::info!(
                pid = old,
                "asking the running banyan for its listening sockets (SIGQUIT)"
            );
            if let Err(e) = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(old),
                nix::sys::signal::Signal::SIGQUIT,
            ) {
                tracing::error!(pid = old, error = %e, "cannot signal the running banyan");
            }
        });
        Ok(())
    }

    /// Records this process's pid, once it serves.
    pub(crate) fn record_pid(&self) {
        if let Some(path) = &self.pid_file
            && let Err(e) = std::fs::write(path, format!("{}\n", std::process::id()))
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the pid file");
        }
    }

    /// Removes the pid file at exit, unless a newer process has written its own pid there.
    pub(crate) fn forget_pid(&self) {
        if let Some(path) = &self.pid_file
            && read_pid(path).ok() == Some(std::process::id() as i32)
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn read_pid(path: &Path) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "--upgrade: cannot read the pid file {} ({e}); is a banyan with --pid-file running?",
            path.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("--upgrade: {} does not hold a pid", path.display()))?;
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        anyhow::bail!(
            "--upgrade: the process {pid} named by {} is not running; start without --upgrade",
            path.display()
        );
    }
    Ok(pid)
}
