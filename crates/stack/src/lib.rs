//! Runs the services from their release binaries, as an operator would: the process
//! supervision shared by the `demo` driver and the system tests.
//!
//! Each service is started with its config in `*_`-prefixed env vars and port 0; its
//! JSON log goes to a file, and the addresses it binds (gRPC and the metrics endpoint)
//! are read from its `"listening"` log line, so nothing waits on a fixed port or a sleep.

#![warn(missing_docs)]

pub mod auth;
pub mod connect;
pub mod consul;
pub mod load;
pub mod tls;
pub mod traffic;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::{
    fs::File,
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::{oneshot, watch},
};

/// How long a service may take to bind: a guard against a hung start, not a wait.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// A running service process; killed if dropped without [`Service::stop`].
pub struct Service {
    /// Its name in logs and summaries, e.g. `users-a`.
    pub name: String,
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// The metrics endpoint, `http://127.0.0.1:PORT` (`GET /metrics`).
    pub admin_address: String,
    /// Where its stdout (JSON log lines) is copied.
    pub log_path: PathBuf,
    child: Child,
    /// Copies stdout to the log file; done once the process has exited.
    copier: Option<tokio::task::JoinHandle<()>>,
    /// Lines copied to the log file so far: changes when a new line is readable there.
    lines: watch::Receiver<usize>,
}

/// A port that was free a moment ago on 127.0.0.1 (bound to port 0, then released), for
/// tools that cannot be told to pick their own (Consul, Jaeger).
///
/// # Errors
/// When no loopback port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// An empty directory `$TMPDIR/stack-{name}-{pid}` for one test's databases and logs
/// (emptied first when a previous run left it behind).
///
/// # Panics
/// When the directory cannot be created: a test helper, it has no one to report to.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stack-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

/// The directory of the release binaries: `$STACK_BIN_DIR`, else the workspace's
/// `target/release`.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("STACK_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release"))
}

impl Service {
    /// Starts `bin_dir/binary` with `env`, logging to `log_dir/name.log`, and returns
    /// once it has logged the address it listens on.
    ///
    /// # Errors
    /// When the binary is missing, exits early, or does not bind within a minute.
    pub async fn start(binary: &str, name: &str, env: &[(&str, String)], log_dir: &Path) -> anyhow::Result<Self> {
        let path = bin_dir().join(binary);
        if !path.is_file() {
            bail!("{} not found: build the release binaries first (`cargo build --release`)", path.display());
        }
        let mut command = Command::new(&path);
        command.stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true).env("RUST_LOG", "info");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().with_context(|| format!("start {}", path.display()))?;
        let stdout = child.stdout.take().context("the child's stdout is piped")?;
        let log_path = log_dir.join(format!("{name}.log"));
        let mut log = File::create(&log_path).await.with_context(|| format!("create {}", log_path.display()))?;
        let (bound, address) = oneshot::channel();
        let (copied, lines) = watch::channel(0usize);
        let copier = tokio::spawn(async move {
            let mut bound = Some(bound);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if bound.is_some()
                    && let Some(addresses) = listening_addresses(&line)
                    && let Some(bound) = bound.take()
                {
                    let _ = bound.send(addresses);
                }
                let _ = log.write_all(line.as_bytes()).await;
                let _ = log.write_all(b"\n").await;
                let _ = log.flush().await;
                copied.send_modify(|n| *n += 1);
            }
        });
        let (address, admin_address) = match tokio::time::timeout(START_PATIENCE, address).await {
            Ok(Ok(addresses)) => addresses,
            Ok(Err(_)) => bail!("{name} exited before it listened; see {}", log_path.display()),
            Err(_) => bail!("{name} did not listen within {START_PATIENCE:?}; see {}", log_path.display()),
        };
        Ok(Self {
            name: name.to_owned(),
            address: format!("http://{address}"),
            admin_address: format!("http://{admin_address}"),
            log_path,
            child,
            copier: Some(copier),
            lines,
        })
    }

    /// Sends SIGTERM, waits for the process to exit and for its last log line to
    /// reach the log file; returns its exit code.
    ///
    /// # Errors
    /// When the signal cannot be sent or the process is killed by a signal.
    pub async fn stop(&mut self) -> anyhow::Result<i32> {
        let pid = self.child.id().context("the process is still running")?;
        let sent = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        if !sent.success() {
            bail!("kill -TERM {pid} failed");
        }
        let status = self.child.wait().await?;
        if let Some(copier) = self.copier.take() {
            let _ = copier.await;
        }
        status.code().with_context(|| format!("{} was killed by a signal", self.name))
    }

    /// Kills the process with SIGKILL (no drain, no deregistration) and waits for it.
    ///
    /// # Errors
    /// When the process cannot be killed.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        if let Some(copier) = self.copier.take() {
            let _ = copier.await;
        }
        Ok(())
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.address.rsplit(':').next().and_then(|port| port.parse().ok()).unwrap_or_default()
    }

    /// Every JSON line the service has logged so far.
    ///
    /// # Errors
    /// When the log file cannot be read.
    pub fn log_lines(&self) -> anyhow::Result<Vec<Value>> {
        let text = std::fs::read_to_string(&self.log_path)?;
        Ok(text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect())
    }

    /// Waits until the service answers SERVING to a `grpc.health.v1` Watch of its whole
    /// server (service `""`), as an orchestrator's readiness probe sees it. Bounded by
    /// `patience`.
    ///
    /// # Errors
    /// When `patience` runs out, or the service cannot be reached or ends the watch.
    pub async fn wait_serving(&self, patience: Duration) -> anyhow::Result<()> {
        use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
        let serving = async {
            let channel = tonic::transport::Channel::from_shared(self.address.clone())?.connect().await?;
            let request = HealthCheckRequest { service: String::new() };
            let mut updates = HealthClient::new(channel).watch(request).await?.into_inner();
            while let Some(update) = updates.message().await? {
                if update.status() == ServingStatus::Serving {
                    return Ok(());
                }
            }
            bail!("{} ended its health watch", self.name)
        };
        tokio::time::timeout(patience, serving)
            .await
            .with_context(|| format!("{} was not SERVING within {patience:?}", self.name))?
    }

    /// Waits until the service has logged a line whose `message` is `message`, following
    /// the log as lines arrive; returns that line. Bounded by `patience`.
    ///
    /// # Errors
    /// When `patience` runs out, the process exits first, or the log is unreadable.
    pub async fn wait_for_log(&self, message: &str, patience: Duration) -> anyhow::Result<Value> {
        self.wait_for_line(&format!("{message:?}"), |line| line["message"] == message, patience).await
    }

    /// Waits until the service has finished an RPC of `method` (e.g. `GetUserByEmail`):
    /// it is taking calls. Bounded by `patience`.
    ///
    /// # Errors
    /// When `patience` runs out, the process exits first, or the log is unreadable.
    pub async fn wait_for_rpc(&self, method: &str, patience: Duration) -> anyhow::Result<Value> {
        let finished = |line: &Value| line["message"] == "rpc finished" && line["rpc.method"] == method;
        self.wait_for_line(&format!("a finished {method}"), finished, patience).await
    }

    /// The first log line `wanted` accepts (`what` names it in errors), following the log.
    async fn wait_for_line(
        &self,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
        patience: Duration,
    ) -> anyhow::Result<Value> {
        let mut lines = self.lines.clone();
        let follow = async {
            loop {
                if let Some(line) = self.log_lines()?.into_iter().find(|line| wanted(line)) {
                    return Ok(line);
                }
                if lines.changed().await.is_err() {
                    bail!("{} exited before it logged {what}", self.name);
                }
            }
        };
        tokio::time::timeout(patience, follow)
            .await
            .with_context(|| format!("{} did not log {what} within {patience:?}", self.name))?
    }

    /// How many RPCs of `method` (e.g. `GetUserByEmail`) this service has finished.
    ///
    /// # Errors
    /// When the log file cannot be read.
    pub fn rpcs_finished(&self, method: &str) -> anyhow::Result<usize> {
        self.rpcs_finished_since(method, std::time::UNIX_EPOCH)
    }

    /// How many RPCs of `method` this service has finished at or after `since`, by the
    /// `timestamp` (RFC 3339, UTC) of their log lines.
    ///
    /// # Errors
    /// When the log file cannot be read.
    pub fn rpcs_finished_since(&self, method: &str, since: std::time::SystemTime) -> anyhow::Result<usize> {
        let at = |line: &Value| line["timestamp"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok());
        Ok(self
            .log_lines()?
            .iter()
            .filter(|line| line["message"] == "rpc finished" && line["rpc.method"] == method)
            .filter(|line| at(line).is_some_and(|at| at >= since))
            .count())
    }
}

/// The addresses in a `{"message": "... listening", "address": "...", "admin_address": "..."}`
/// log line: gRPC, then the metrics endpoint.
fn listening_addresses(line: &str) -> Option<(String, String)> {
    let value: Value = serde_json::from_str(line).ok()?;
    let message = value.get("message")?.as_str()?;
    if !message.ends_with("listening") {
        return None;
    }
    let address = value.get("address")?.as_str()?.to_owned();
    Some((address, value.get("admin_address")?.as_str()?.to_owned()))
}

/// Env vars for a users replica over the SQLite file `database`, auth off.
pub fn users_env(database: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("USERS_SERVER__PORT", "0".to_owned()),
        ("USERS_ADMIN__PORT", "0".to_owned()),
        ("USERS_DATABASE__URL", format!("sqlite://{}?mode=rwc", database.display())),
        // Open unless the caller adds [`auth::DevAuth::users_env`] after these.
        ("USERS_AUTH__MODE", "none".to_owned()),
    ]
}

/// Env vars for an orders replica over the SQLite file `database`, calling `users`, auth off.
pub fn orders_env(database: &Path, users: &[&Service]) -> Vec<(&'static str, String)> {
    let endpoints: Vec<&str> = users.iter().map(|s| s.address.as_str()).collect();
    vec![
        ("ORDERS_SERVER__PORT", "0".to_owned()),
        ("ORDERS_ADMIN__PORT", "0".to_owned()),
        ("ORDERS_DATABASE__URL", format!("sqlite://{}?mode=rwc", database.display())),
        ("ORDERS_USERS__ENDPOINTS", format!("[{}]", endpoints.join(","))),
        // Open unless the caller adds [`auth::DevAuth::orders_env`] after these.
        ("ORDERS_AUTH__MODE", "none".to_owned()),
    ]
}

/// A fresh W3C `traceparent` for a request the caller starts, with the "sampled" flag:
/// returns `(trace_id, header value)`. The trace id (32 lowercase hex digits) is what
/// Jaeger shows and what the services' log lines carry as `trace_id`.
pub fn new_traceparent() -> (String, String) {
    // The first digit is fixed non-zero: some tools print trace ids without leading zeros.
    let trace_id = format!("4{}", &uuid::Uuid::new_v4().simple().to_string()[1..]);
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let header = format!("00-{trace_id}-{span_id}-01");
    (trace_id, header)
}

/// `message` as a request carrying `traceparent` (see [`new_traceparent`]).
///
/// # Errors
/// When `traceparent` is not a valid header value.
pub fn traced_request<T>(message: T, traceparent: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("traceparent", traceparent.parse().context("a traceparent header value")?);
    Ok(request)
}

/// The body of `GET {service.admin_address}/metrics` (Prometheus text format), fetched with curl.
///
/// # Errors
/// When curl is missing or the endpoint does not answer 200.
pub async fn scrape(service: &Service) -> anyhow::Result<String> {
    let url = format!("{}/metrics", service.admin_address);
    let output = Command::new("curl").args(["--silent", "--show-error", "--fail", &url]).output().await?;
    if !output.status.success() {
        bail!("GET {url} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The sum of the samples of `name` in a Prometheus text body whose labels include
/// all of `labels`; 0 when there is none (a counter that never moved has no series yet).
pub fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric != name {
                return None;
            }
            let all_match = labels.iter().all(|(key, wanted)| rest.contains(&format!("{key}=\"{wanted}\"")));
            if all_match { value.parse::<f64>().ok() } else { None }
        })
        .sum()
}
