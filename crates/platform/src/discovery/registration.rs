//! Registers this instance in Consul with a gRPC health check, keeps it registered
//! (an agent that restarted or forgot it gets it again) and deregisters it on shutdown.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    discovery::consul::{AgentCheck, AgentServiceRegistration, CheckStatus, Consul, ConsulError},
    support::backoff::Backoff,
};

/// How this instance appears in Consul.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Register at all (`registration.enabled`); off in the embedded default, which has no Consul.
    pub enabled: bool,
    /// The Consul service name clients look up (`registration.service`), e.g. `users`.
    pub service: String,
    /// The address other services dial (`registration.address`); empty means `server.host`.
    pub address: String,
    /// This instance's name, part of its service ID (`registration.instance_name`, e.g. the
    /// pod name from the downward API); empty (the default) leaves it out. Either way the
    /// ID is the same for every run on one address and port, so a restarted instance
    /// replaces its own entry instead of leaving a dead one that its check keeps passing.
    #[serde(default)]
    pub instance_name: String,
    /// Consul tags (`registration.tags`).
    pub tags: Vec<String>,
    /// How often Consul runs the gRPC health check (`registration.check_interval`, 10s; more than 0s).
    #[serde(with = "crate::config::positive_duration")]
    pub check_interval: Duration,
    /// Timeout of one check (`registration.check_timeout`, 2s; more than 0s).
    #[serde(with = "crate::config::positive_duration")]
    pub check_timeout: Duration,
    /// Consul removes an instance critical for this long (`registration.deregister_critical_after`,
    /// 1m; Consul reaps about once a minute, so smaller values act as 1m).
    #[serde(with = "humantime_serde")]
    pub deregister_critical_after: Duration,
    /// How often to confirm the agent still has this instance (`registration.refresh_interval`, 10s; more than 0s).
    #[serde(with = "crate::config::positive_duration")]
    pub refresh_interval: Duration,
}

impl RegistrationConfig {
    /// Disabled, for service `service`, with the defaults above.
    pub fn for_service(service: impl Into<String>) -> Self {
        Self {
            enabled: false,
            service: service.into(),
            address: String::new(),
            instance_name: String::new(),
            tags: vec!["grpc".to_owned()],
            check_interval: Duration::from_secs(10),
            check_timeout: Duration::from_secs(2),
            deregister_critical_after: Duration::from_secs(60),
            refresh_interval: Duration::from_secs(10),
        }
    }

    /// The registration of the instance serving at `bound`, with `version` in its meta.
    /// Its service ID is deterministic: `{service}-{address}-{port}`, or
    /// `{service}-{instance_name}-{address}-{port}` when an instance name is set.
    /// Its check starts passing: the server registers only once it serves.
    pub fn instance(&self, bound: SocketAddr, version: &str) -> AgentServiceRegistration {
        let address = if self.address.is_empty() { bound.ip().to_string() } else { self.address.clone() };
        let id = match self.instance_name.as_str() {
            "" => format!("{}-{}-{}", self.service, address, bound.port()),
            name => format!("{}-{name}-{}-{}", self.service, address, bound.port()),
        };
        AgentServiceRegistration {
            id,
            name: self.service.clone(),
            address: address.clone(),
            port: bound.port(),
            tags: self.tags.clone(),
            meta: BTreeMap::from([("version".to_owned(), version.to_owned())]),
            check: AgentCheck {
                // No service suffix: the server's overall status, which goes NOT_SERVING
                // when the database fails and when the instance starts draining.
                grpc: format!("{address}:{}", bound.port()),
                grpc_use_tls: false,
                interval: go_duration(self.check_interval),
                timeout: go_duration(self.check_timeout),
                deregister_critical_service_after: go_duration(self.deregister_critical_after),
                status: CheckStatus::Passing,
            },
        }
    }
}

/// A Go `time.ParseDuration` string, as Consul expects.
fn go_duration(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// This instance, kept registered by a background task until [`Registered::deregister`].
pub struct Registered {
    consul: Consul,
    id: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Registered {
    /// Registers `instance` now (replacing an entry a crashed run left under the same
    /// ID, and removing entries of the same service on the same address and port under
    /// other IDs), then again every time a check every `refresh` finds the agent no
    /// longer has it (an agent restart loses its services; so does `consul reload` of a
    /// dev agent). Failures are logged and retried with backoff, never fatal: the
    /// service keeps serving whether or not Consul is up.
    pub fn start(consul: Consul, instance: AgentServiceRegistration, refresh: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let id = instance.id.clone();
        let task = tokio::spawn({
            let consul = consul.clone();
            async move {
                let mut backoff = Backoff::new(Duration::from_millis(200), refresh.max(Duration::from_millis(200)));
                let mut registered = false;
                loop {
                    let attempt = if registered {
                        ensure_registered(&consul, &instance).await
                    } else {
                        register(&consul, &instance).await
                    };
                    let delay = match attempt {
                        Ok(()) => {
                            registered = true;
                            backoff.reset();
                            refresh
                        }
                        Err(error) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(service_id = instance.id, %error, retry_in_ms = delay.as_millis() as u64, "consul registration failed");
                            delay
                        }
                    };
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stopped.wait_for(|stop| *stop) => return,
                    }
                }
            }
        });
        Self { consul, id, stop, task }
    }

    /// The Consul service ID of this instance.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops re-registering and removes the instance from Consul, so clients stop
    /// picking it. A failure is logged: Consul's DeregisterCriticalServiceAfter removes
    /// it anyway once the check has failed long enough.
    pub async fn deregister(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        match self.consul.deregister(&self.id).await {
            Ok(()) => tracing::info!(service_id = self.id, "deregistered from consul"),
            Err(error) => tracing::warn!(service_id = self.id, %error, "consul deregistration failed"),
        }
    }
}

/// Registers `instance` unless the agent already has it.
async fn ensure_registered(consul: &Consul, instance: &AgentServiceRegistration) -> Result<(), ConsulError> {
    if consul.is_registered(&instance.id).await? {
        return Ok(());
    }
    register(consul, instance).await
}

/// Registers (or replaces) `instance`, then deregisters the other entries of its service
/// on its address and port: left by a run that crashed before this ID scheme, or under
/// another instance name. Their checks reach this process, so Consul would never reap them.
async fn register(consul: &Consul, instance: &AgentServiceRegistration) -> Result<(), ConsulError> {
    consul.register(instance).await?;
    for stale in consul.agent_services(&instance.name).await? {
        if stale.id != instance.id && stale.address == instance.address && stale.port == instance.port {
            consul.deregister(&stale.id).await?;
            tracing::info!(
                service_id = instance.id,
                stale_id = stale.id,
                "removed a stale consul entry on this address"
            );
        }
    }
    tracing::info!(
        service_id = instance.id,
        service = instance.name,
        address = instance.address,
        port = instance.port,
        "registered in consul"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_gets_the_same_id_for_its_address_and_port_and_a_passing_grpc_check_on_it() {
        let mut config = RegistrationConfig::for_service("users");
        let bound: SocketAddr = "127.0.0.1:4242".parse().expect("addr");
        let (a, b) = (config.instance(bound, "1.2.3"), config.instance(bound, "1.2.4"));
        assert_eq!(a.id, b.id, "a restart on the same address replaces its own entry");
        assert_eq!(a.id, "users-127.0.0.1-4242");
        assert_ne!(a.id, config.instance("127.0.0.1:4243".parse().expect("addr"), "1.2.3").id);
        config.instance_name = "users-7d9f-x2".to_owned();
        assert_eq!(config.instance(bound, "1.2.3").id, "users-users-7d9f-x2-127.0.0.1-4242");
        assert_eq!(a.check.status, CheckStatus::Passing);
        assert_eq!((a.address.as_str(), a.port), ("127.0.0.1", 4242));
        assert_eq!(a.check.grpc, "127.0.0.1:4242");
        assert_eq!(a.meta["version"], "1.2.3");
        assert_eq!(a.check.interval, "10000ms");
    }
}
