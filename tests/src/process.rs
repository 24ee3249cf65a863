//! Starting our binaries as real child processes and knowing when they are ready.
//!
//! A server started with `--listen 127.0.0.1:0` prints `listening on http://ADDR` on stdout once
//! bound; we read that line (so the port is never guessed) and then poll `/health`. Everything
//! else the process prints is kept and shown if the test fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long a process may take to bind and become healthy (generous: CI machines are small).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the workspace's binaries once per test process, with the profile and target directory
/// of the running test, so a test never starts a stale binary: `cargo test -p banyan-tests`
/// alone would not rebuild them. Cargo does not hold its build lock while tests run, and an
/// up-to-date build is a no-op. Outside cargo (`CARGO` unset) the binaries are used as found.
fn ensure_built() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let Ok(cargo) = std::env::var("CARGO") else {
            return;
        };
        let exe = std::env::current_exe().expect("current test executable");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>");
        let target_dir = profile_dir.parent().expect("target directory");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_owned(),
            Some(other) => other.to_owned(),
            None => "dev".to_owned(),
        };
        let out = Command::new(cargo)
            .args([
                "build",
                "--workspace",
                "--bins",
                "--profile",
                &profile,
                "--target-dir",
            ])
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("running cargo build for the binaries under test");
        assert!(
            out.status.success(),
            "building the binaries under test failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Path of one of the workspace's binaries, next to the running test executable.
pub fn binary(name: &str) -> PathBuf {
    ensure_built();
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test>-<hash>  ->  target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "binary {} is not built; run `cargo test --workspace` (it builds every binary) or `cargo build --workspace --bins`",
        path.display()
    );
    path
}

fn command(name: &str, args: &[&str], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(binary(name));
    cmd.args(args)
        // The child must not inherit the developer's or CI's storage settings.
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_KEY_PREFIX")
        .env_remove("BANYAN_ADMIN_EMAIL")
        .env_remove("BANYAN_ADMIN_PASSWORD")
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "text");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a command of one of our binaries to completion; panics with its output on failure.
pub fn run_to_completion(name: &str, args: &[&str], env: &[(String, String)]) -> String {
    let out = command(name, args, env).output().expect("running a binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a command and returns its status, stdout and stderr, whatever the outcome.
pub fn run_raw(
    name: &str,
    args: &[&str],
    env: &[(String, String)],
) -> (ExitStatus, String, String) {
    let out = command(name, args, env).output().expect("running a binary");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running server process; killed when dropped.
pub struct ServiceProcess {
    pub name: String,
    /// `http://ADDR`
    pub address: String,
    /// What it announced once bound: `listening`, and `admin` for the proxy (`http://ADDR`).
    pub announced: BTreeMap<String, String>,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    /// How it was started, for [`restart`](Self::restart).
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// `listening on ADDR` or `admin on ADDR`: what a server announced, and where (as printed:
/// our servers print `http://ADDR`).
fn announcement(line: &str) -> Option<(String, String)> {
    let (what, addr) = line.split_once(" on ")?;
    matches!(what, "listening" | "admin").then(|| (what.to_owned(), addr.trim().to_owned()))
}

fn pump(
    stream: impl Read + Send + 'static,
    log: Arc<Mutex<String>>,
    ready: Option<mpsc::Sender<(String, String)>>,
) {
    std::thread::spawn(move || {
        let mut ready = ready;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &ready
                && let Some((what, addr)) = announcement(&line)
                && tx.send((what, addr)).is_err()
            {
                ready = None;
            }
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
}

impl ServiceProcess {
    /// Starts `name` with `args` and `env`, waits for its address and a healthy `/health`.
    pub async fn start(name: &str, args: &[&str], env: &[(String, String)]) -> Self {
        Self::start_checked(name, args, env, |address| format!("{address}/health")).await
    }

    /// Kills the process and starts it again with the same arguments and environment (on the
    /// same storage; the address may change).
    pub async fn restart(&mut self) {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        *self = Self::start(&self.name, &args, &self.env).await;
    }

    /// Like [`start`](Self::start), with the readiness URL derived from the announced address.
    pub async fn start_checked(
        name: &str,
        args: &[&str],
        env: &[(String, String)],
        health_url: impl Fn(&str) -> String,
    ) -> Self {
        Self::start_announcing(name, args, env, &["listening"], |a| {
            health_url(&a["listening"])
        })
        .await
    }

    /// Starts `name` and waits until it has announced every one of `expected` (`listening`,
    /// `admin`: the `... on http://ADDR` lines a server prints once bound), then for a healthy
    /// answer at `health_url` of those addresses. The addresses are in [`Self::announced`].
    pub async fn start_announcing(
        name: &str,
        args: &[&str],
        env: &[(String, String)],
        expected: &[&str],
        health_url: impl Fn(&BTreeMap<String, String>) -> String,
    ) -> Self {
        let mut child = command(name, args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        pump(child.stdout.take().unwrap(), log.clone(), Some(tx));
        pump(child.stderr.take().unwrap(), log.clone(), None);
        let mut process = ServiceProcess {
            name: name.to_owned(),
            address: String::new(),
            announced: BTreeMap::new(),
            child: Some(child),
            log,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: env.to_vec(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !expected.iter().all(|e| process.announced.contains_key(*e)) {
            // Never block here: the test's runtime may be serving something the process needs
            // while it starts (a relay, a mock upstream).
            match rx.try_recv() {
                Ok((what, addr)) => {
                    process.announced.entry(what).or_insert(addr);
                    continue;
                }
                Err(mpsc::TryRecvError::Empty | mpsc::TryRecvError::Disconnected) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            if let Some(status) = process.try_status() {
                panic!(
                    "{name} exited ({status}) before listening:\n{}",
                    process.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not listen within {START_TIMEOUT:?}:\n{}",
                process.log()
            );
        }
        drop(rx); // later announcements (none expected) are only logged
        process.address = process
            .announced
            .get("listening")
            .cloned()
            .unwrap_or_default();
        let url = health_url(&process.announced);
        process.wait_healthy(&url, deadline).await;
        process
    }

    async fn wait_healthy(&mut self, url: &str, deadline: Instant) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let mut pause = Duration::from_millis(10);
        loop {
            if let Ok(r) = client.get(url).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self.try_status() {
                panic!(
                    "{} exited ({status}) before it was healthy:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} was not healthy in time:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(pause).await; // back-off between polls, not a wait for readiness
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("process is running")
    }

    /// SIGKILL, then waits: a crash, as far as anyone talking to the process can tell.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (returns at once).
    pub fn signal_term(&self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        kill(Pid::from_raw(self.pid()), Signal::SIGTERM).expect("sending SIGTERM");
    }

    /// Waits (up to `timeout`) for the process to exit, polling its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- output of {} -----\n{}", self.name, self.log());
        }
    }
}
