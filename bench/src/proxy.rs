//! The release `banyan` binary as a child process for a benchmark.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::free_port;

pub struct Banyan {
    child: Child,
    pub listen: SocketAddr,
    pub admin: String,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

/// `target/<profile>/<name>`, beside the running benchmark binary.
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .context("the benchmark binary has a directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p banyan)",
            path.display()
        );
    }
    Ok(path)
}

impl Banyan {
    /// Starts `binary` on `routes` with only warnings logged; returns once its admin API
    /// answers.
    pub async fn start(binary: &Path, routes: &str) -> anyhow::Result<Self> {
        Self::start_logging(binary, routes, "warn").await
    }

    /// Starts `binary` on `routes` with the access log on (`RUST_LOG=info`): one line per
    /// request is formatted and written (to /dev/null: the write is paid, the disk is not).
    pub async fn start_with_access_log(binary: &Path, routes: &str) -> anyhow::Result<Self> {
        Self::start_logging(binary, routes, "info").await
    }

    async fn start_logging(binary: &Path, routes: &str, log: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("routes.toml");
        std::fs::write(&config, routes)?;
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let admin_addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(&config)
            .args(["--listen", &listen.to_string(), "--admin", &admin_addr])
            .env("RUST_LOG", log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let b = Banyan {
            child,
            listen,
            admin: format!("http://{admin_addr}"),
            config,
            _dir: dir,
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = b.client.get(format!("{}/healthz", b.admin)).send().await;
            if up.is_ok_and(|r| r.status().is_success())
                && tokio::net::TcpStream::connect(listen).await.is_ok()
            {
                return Ok(b);
            }
            if Instant::now() > deadline {
                bail!("banyan did not come up");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn version(&self) -> anyhow::Result<String> {
        let v: serde_json::Value = self
            .client
            .get(format!("{}/routes", self.admin))
            .send()
            .await?
            .json()
            .await?;
        Ok(v["version"].as_str().unwrap_or_default().to_owned())
    }

    /// Rewrites the route table and waits until the proxy serves it.
    pub async fn apply(&self, routes: &str) -> anyhow::Result<()> {
        let before = self.version().await?;
        if std::fs::read_to_string(&self.config)? == routes {
            return Ok(());
        }
        std::fs::write(&self.config, routes)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.version().await? == before {
            if Instant::now() > deadline {
                bail!("the new route table was not applied");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Writes the route table without waiting (for reloads during load).
    pub fn write(&self, routes: &str) -> anyhow::Result<()> {
        Ok(std::fs::write(&self.config, routes)?)
    }

    /// `GET path` on the admin API.
    pub async fn admin_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.admin_text(path).await?)?)
    }

    /// `GET path` on the admin API, as text (`/metrics`).
    pub async fn admin_text(&self, path: &str) -> anyhow::Result<String> {
        Ok(self
            .client
            .get(format!("{}{path}", self.admin))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size and CPU seconds (user + system) so far, from /proc.
    pub fn usage(&self) -> (u64, f64) {
        proc_usage(self.child.id())
    }

    /// CPU seconds so far of the shadow thread and of all other threads.
    pub fn shadow_and_other_cpu(&self) -> (f64, f64) {
        thread_cpu(self.child.id(), "banyan-shadow")
    }
}

/// RSS in bytes and CPU seconds of process `pid`, from /proc (Linux).
pub fn proc_usage(pid: u32) -> (u64, f64) {
    let u = usage_of(pid);
    (u.rss, u.cpu)
}

/// What a process holds and has spent so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Resident set size, bytes.
    pub rss: u64,
    /// CPU seconds, user and system.
    pub cpu: f64,
    /// The part of `cpu` the kernel spent on the process's behalf (system calls, the network
    /// stack, page faults), against what it spent in its own code.
    pub system: f64,
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, other: Usage) -> Usage {
        Usage {
            rss: self.rss + other.rss,
            cpu: self.cpu + other.cpu,
            system: self.system + other.system,
        }
    }
}

/// [`Usage`] of process `pid`, from /proc (Linux).
pub fn usage_of(pid: u32) -> Usage {
    usage_at(&format!("/proc/{pid}"))
}

/// [`Usage`] from a /proc process or task directory.
fn usage_at(dir: &str) -> Usage {
    let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the state field.
    let (user, system) = (ticks(11) as f64 / 100.0, ticks(12) as f64 / 100.0);
    Usage {
        rss,
        cpu: user + system,
        system,
    }
}

/// CPU seconds of process `pid` split into (threads named `name`, all other threads), from
/// /proc/PID/task (Linux).
pub fn thread_cpu(pid: u32, name: &str) -> (f64, f64) {
    let (mut named, mut rest) = (0.0, 0.0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0.0, 0.0);
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let tid: u32 = t.file_name().to_string_lossy().parse().unwrap_or(0);
        let cpu = usage_at(&format!("/proc/{pid}/task/{tid}")).cpu;
        if comm.trim() == name {
            named += cpu;
        } else {
            rest += cpu;
        }
    }
    (named, rest)
}

impl Drop for Banyan {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `bench-backend` child process (see that binary).
pub struct BackendProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl BackendProcess {
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let mut child = Command::new(sibling_binary("bench-backend")?)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .context("bench-backend did not say where it listens")?
            .parse()?;
        Ok(Self { child, addr })
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
