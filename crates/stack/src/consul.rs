//! A throwaway `consul agent -dev` on loopback, on free ports, for system tests and
//! the demo. Its state lives in memory: a restart forgets every registration.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use platform::consul::{Consul, ConsulConfig, Instance};
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

/// The consul binary: `$CONSUL`, else the one `make tools` builds.
pub fn consul_binary() -> PathBuf {
    std::env::var_os("CONSUL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/consul"))
}

impl ConsulAgent {
    /// Starts an agent logging to `log_dir/consul.log` and returns once it has a leader.
    ///
    /// # Errors
    /// When the binary is missing (run `make tools`), exits, or elects no leader in a minute.
    pub async fn start(log_dir: &Path) -> anyhow::Result<Self> {
        let ports = [free_port()?, free_port()?, free_port()?];
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
        self.child = Some(child);
        let consul = self.client()?;
        let ready = async {
            // The agent lists itself as service `consul` once it has a leader.
            loop {
                if let Ok(answer) = consul.healthy_instances("consul", 0, Duration::ZERO).await
                    && !answer.value.is_empty()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(START_PATIENCE, ready)
            .await
            .with_context(|| format!("consul had no leader within {START_PATIENCE:?}; see {}", self.log_path.display()))
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
