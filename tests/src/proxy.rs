//! Starting the real `banyan` proxy for a test: its route table in a temporary directory, its
//! listener and admin API on free ports, and helpers to edit the table the ways operators do.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::ServiceProcess;

pub struct ProxyApp {
    /// `http://127.0.0.1:PORT`: what clients use.
    pub address: String,
    /// `http://127.0.0.1:PORT`: the admin API.
    pub admin: String,
    pub config: PathBuf,
    /// The admin token (in `admin-token` beside the table; [`table`] names it).
    pub admin_token: String,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub process: ServiceProcess,
    /// How the proxy was started (for [`ProxyApp::start_upgrade`]).
    args: Vec<String>,
}

/// An announced `http://ADDR` as a client reaches it: a wildcard address on 127.0.0.1.
fn reachable(url: &str) -> String {
    url.replace("http://0.0.0.0:", "http://127.0.0.1:")
        .replace("http://[::]:", "http://[::1]:")
}

/// Writes the ports `process` got into its `--listen` and `--admin` arguments: an upgrade takes
/// the sockets over by their addresses.
fn pin_ports(args: &mut [String], process: &ServiceProcess) {
    for (flag, url) in [
        ("--listen", &process.address),
        ("--admin", &process.announced["admin"]),
    ] {
        if let Some(i) = args.iter().position(|a| a == flag) {
            args[i + 1] = url.trim_start_matches("http://").to_owned();
        }
    }
}

/// Starts the proxy on `routes` (a routes.toml; listen/admin are set on the command line).
pub async fn spawn_proxy(routes: &str) -> ProxyApp {
    spawn_proxy_with(routes, &[]).await
}

/// [`spawn_proxy`] with more command-line arguments (e.g. `--shadow-redis`).
pub async fn spawn_proxy_with(routes: &str, extra: &[&str]) -> ProxyApp {
    let dir = tempfile::Builder::new()
        .prefix("banyan-proxy-")
        .tempdir()
        .unwrap();
    let config = dir.path().join("routes.toml");
    std::fs::write(&config, routes).unwrap();
    let admin_token = crate::random_hex(16);
    std::fs::write(
        dir.path().join(ADMIN_TOKEN_FILE),
        format!("{admin_token}\n"),
    )
    .unwrap();
    let (socket, pid_file) = (
        dir.path().join("upgrade.sock"),
        dir.path().join("banyan.pid"),
    );
    let mut args: Vec<String> = [
        "run",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    // Defaults, unless `extra` sets them: the admin API on loopback, its own upgrade socket and
    // pid file (tests run side by side), and a short grace period. Both listeners are on port 0:
    // the proxy picks free ports itself and announces them, so no other process can take a
    // port between a choice made here and the proxy's bind.
    for (flag, value) in [
        ("--admin", "127.0.0.1:0"),
        ("--shutdown-grace", "1"),
        ("--upgrade-socket", socket.to_str().unwrap()),
        ("--pid-file", pid_file.to_str().unwrap()),
    ] {
        if !extra.contains(&flag) {
            args.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let process =
        ServiceProcess::start_announcing("banyan", &arg_refs, &[], &["listening", "admin"], |a| {
            format!("{}/healthz", reachable(&a["admin"]))
        })
        .await;
    let admin_url = reachable(&process.announced["admin"]);
    pin_ports(&mut args, &process);
    ProxyApp {
        address: process.address.clone(),
        admin: admin_url,
        config,
        admin_token,
        dir,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
        process,
        args,
    }
}

impl ProxyApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// GET through the proxy; returns status and JSON body (Null when not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request through the proxy");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Which origin answered `path` (panics on a non-200).
    pub async fn backend_of(&self, path: &str) -> String {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body["backend"].as_str().unwrap_or_default().to_owned()
    }

    /// `GET path` on the admin API, as JSON.
    pub async fn admin_json(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `GET path` on the admin API, as text.
    pub async fn admin_text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Starts a second proxy with the same arguments and `--upgrade`: it takes the listening
    /// sockets over from this one (which it tells to hand them over, by the pid file), and is
    /// returned once it serves. This one then closes its connections and exits by itself.
    pub async fn start_upgrade(&self) -> ServiceProcess {
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.push("--upgrade");
        let check = self.admin.clone();
        ServiceProcess::start_checked("banyan", &args, &[], move |_| format!("{check}/healthz"))
            .await
    }

    /// Kills the proxy (SIGKILL: nothing is flushed or handed over) and starts it again on the
    /// same table and state directory, on new ports; returns once it serves.
    pub async fn restart(&mut self) {
        self.process.kill();
        let mut args = self.args.clone();
        for flag in ["--listen", "--admin"] {
            if let Some(i) = args.iter().position(|a| a == flag) {
                args[i + 1] = "127.0.0.1:0".into();
            }
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let process =
            ServiceProcess::start_announcing("banyan", &refs, &[], &["listening", "admin"], |a| {
                format!("{}/healthz", reachable(&a["admin"]))
            })
            .await;
        pin_ports(&mut args, &process);
        self.args = args;
        self.address = process.address.clone();
        self.admin = reachable(&process.announced["admin"]);
        self.process = process;
    }

    /// An admin API request with the admin token, as actions need it.
    pub fn admin_action(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(&self.admin_token)
    }

    /// `GET /routes` on the admin API.
    pub async fn routes(&self) -> Value {
        self.admin_json("/routes").await
    }

    /// `GET /shadow` on the admin API.
    pub async fn shadow(&self) -> Value {
        self.admin_json("/shadow").await
    }

    /// Shadow counters of `route` summed over its endpoints (`compared`, `matched`, ...).
    pub async fn shadow_totals(&self, route: &str) -> std::collections::BTreeMap<String, u64> {
        let mut totals = std::collections::BTreeMap::new();
        let snap = self.shadow().await;
        if let Some(eps) = snap["routes"][route]["endpoints"].as_object() {
            for e in eps.values() {
                for (k, v) in e["counts"].as_object().unwrap() {
                    *totals.entry(k.clone()).or_default() += v.as_u64().unwrap();
                }
            }
        }
        totals
    }

    /// Polls the shadow counters of `route` until `done` holds (60 s at most: the shadow side
    /// runs at idle priority, and a test suite on two cores can keep it waiting); returns them.
    pub async fn wait_shadow(
        &self,
        route: &str,
        done: impl Fn(&std::collections::BTreeMap<String, u64>) -> bool,
    ) -> std::collections::BTreeMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = self.shadow_totals(route).await;
            if done(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "shadow results of {route} never got there: {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rewrites the file in place (truncate + write, as `echo > file` or many tools do).
    pub fn write_in_place(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    /// Saves the way editors do: write a temporary file beside it, then rename it over.
    pub fn rename_save(&self, text: &str) {
        let tmp = self.dir.path().join(".routes.toml.swp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// Polls `/routes` until the live version differs from `old` (or `timeout` passes); returns
    /// the new version and how long it took.
    pub async fn wait_new_version(
        &self,
        old: &str,
        timeout: Duration,
    ) -> Option<(String, Duration)> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let v = self.routes().await["version"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if v != old {
                return Some((v, start.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// Resident memory of the proxy process: (current, peak) in bytes, from /proc.
    pub fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

/// The file beside the route table that holds the admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// A route table with the given upstreams (`name -> addresses`) and routes (TOML text); the
/// admin token is the one [`spawn_proxy`] writes.
pub fn table(upstreams: &[(&str, Vec<std::net::SocketAddr>)], extra: &str) -> String {
    let mut t = format!(
        "[proxy]\ndebug_headers = true\nreload_settle = \"50ms\"\nadmin_token_file = \"{ADMIN_TOKEN_FILE}\"\n\n"
    );
    for (name, addrs) in upstreams {
        let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        t.push_str(&format!(
            "[upstreams.{name}]\naddrs = [{}]\n\n",
            list.join(", ")
        ));
    }
    t.push_str(extra);
    t
}
