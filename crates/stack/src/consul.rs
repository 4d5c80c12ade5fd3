//! A throwaway `consul agent -dev` on loopback, on free ports, for system tests and
//! the demo. Its state lives in memory: a restart forgets every registration.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use platform::discovery::consul::{Consul, ConsulConfig, Instance};
use tokio::process::{Child, Command};

use crate::free_port;

/// How long the agent may take to elect itself leader: a guard, not a wait.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// A running dev-mode Consul agent; killed if dropped.
pub struct ConsulAgent {
    /// `http://127.0.0.1:PORT` of its HTTP API.
    pub address: String,
    ports: [u16; 3],
    log_path: PathBuf,
    child: Option<Child>,
}

/// The agent exited before it had a leader.
#[derive(Debug)]
pub struct Exited {
    status: std::process::ExitStatus,
    log: PathBuf,
}

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "consul exited ({}) before it had a leader; see {}", self.status, self.log.display())
    }
}

impl std::error::Error for Exited {}

/// The consul binary: `$CONSUL`, else the one `make tools` builds.
pub fn consul_binary() -> PathBuf {
    std::env::var_os("CONSUL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/consul"))
}

impl ConsulAgent {
    /// Starts an agent logging to `log_dir/consul.log` on free ports and returns once it
    /// has a leader. A port found free can be taken by another process before the agent
    /// binds it, and the agent then exits: it is started again on other ports, up to
    /// three times in all.
    ///
    /// # Errors
    /// When the binary is missing (run `make tools`), exits three times, or elects no
    /// leader in a minute.
    pub async fn start(log_dir: &Path) -> anyhow::Result<Self> {
        let mut attempts = 3;
        loop {
            let ports = [free_port()?, free_port()?, free_port()?];
            match Self::start_on(log_dir, ports).await {
                Err(error) if attempts > 1 && error.is::<Exited>() => attempts -= 1,
                started => return started,
            }
        }
    }

    /// [`ConsulAgent::start`] on `ports` (HTTP, Serf LAN, server RPC), without retries.
    ///
    /// # Errors
    /// As [`ConsulAgent::start`]; an agent that exits before it has a leader (a port
    /// already taken, say) is an [`Exited`] error, at once.
    pub async fn start_on(log_dir: &Path, ports: [u16; 3]) -> anyhow::Result<Self> {
        let mut agent = Self {
            address: format!("http://127.0.0.1:{}", ports[0]),
            ports,
            log_path: log_dir.join("consul.log"),
            child: None,
        };
        agent.restart().await?;
        Ok(agent)
    }

    /// Starts the agent again on the same ports (after [`ConsulAgent::kill`]).
    ///
    /// # Errors
    /// As [`ConsulAgent::start`].
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let binary = consul_binary();
        if !binary.is_file() {
            bail!("{} not found: run `make tools` (scripts/install-tools.sh builds it)", binary.display());
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path)?;
        let [http, serf_lan, server] = self.ports.map(|port| port.to_string());
        let child = Command::new(&binary)
            .args(["agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-node", "test"])
            .args(["-http-port", &http, "-serf-lan-port", &serf_lan, "-server-port", &server])
            .args(["-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1", "-serf-wan-port", "-1"])
            .args(["-log-level", "warn"])
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let consul = self.client()?;
        let child = self.child.insert(child);
        let deadline = tokio::time::Instant::now() + START_PATIENCE;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(Exited { status, log: self.log_path.clone() }.into());
            }
            // The agent lists itself as service `consul` once it has a leader.
            let answer = tokio::time::timeout_at(deadline, consul.healthy_instances("consul", 0, Duration::ZERO)).await;
            match answer {
                Ok(Ok(answer)) if !answer.value.is_empty() => return Ok(()),
                Ok(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => bail!("consul had no leader within {START_PATIENCE:?}; see {}", self.log_path.display()),
            }
        }
    }

    /// Kills the agent (SIGKILL): every registration is lost with it.
    ///
    /// # Errors
    /// When the process cannot be killed.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// A client of this agent.
    ///
    /// # Errors
    /// Never for the address built here (it parses as a URI).
    pub fn client(&self) -> anyhow::Result<Consul> {
        Ok(Consul::new(&ConsulConfig { address: self.address.parse()?, ..ConsulConfig::default() }))
    }

    /// The passing instances of `service` now.
    ///
    /// # Errors
    /// When the agent does not answer.
    pub async fn passing(&self, service: &str) -> anyhow::Result<Vec<Instance>> {
        Ok(self.client()?.healthy_instances(service, 0, Duration::ZERO).await?.value)
    }

    /// Waits until `condition` holds for the passing instances of `service`, following
    /// them with Consul blocking queries; bounded by `patience`.
    ///
    /// # Errors
    /// When `patience` runs out or the agent stops answering; the message shows the
    /// last instances seen.
    pub async fn wait_for(
        &self,
        service: &str,
        patience: Duration,
        condition: impl Fn(&[Instance]) -> bool,
    ) -> anyhow::Result<Vec<Instance>> {
        let consul = self.client()?;
        let mut last = Vec::new();
        let watch = async {
            let mut index = 0;
            loop {
                let answer = consul.healthy_instances(service, index, Duration::from_secs(5)).await?;
                if condition(&answer.value) {
                    return Ok::<_, anyhow::Error>(answer.value);
                }
                index = answer.index.max(1);
                last = answer.value;
            }
        };
        match tokio::time::timeout(patience, watch).await {
            Ok(result) => result,
            Err(_) => {
                bail!("consul: {service} did not reach the expected state within {patience:?}; last seen {last:?}")
            }
        }
    }
}
