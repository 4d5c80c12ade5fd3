//! What `grpc.health.v1.Health` reports: the [`Health`] handle and the database watch that drives it.

use std::sync::{Arc, Mutex, PoisonError};

use sqlx::{AnyPool, Connection};
use tokio::task::JoinHandle;
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};

use crate::config::DatabaseConfig;

/// The health statuses a server reports through `grpc.health.v1.Health`: one for the
/// server as a whole (`""`) and one per added service. Cloning is cheap; clones share
/// the statuses (a clone taken before a service was added does not set that service).
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Vec<&'static str>,
    /// The status last set; `None` before the first.
    serving: Arc<Mutex<Option<bool>>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Statuses with no service added and nothing reported yet (a `Check` answers
    /// NOT_FOUND for `""` until the first [`Health::set_serving`]).
    pub fn new() -> Self {
        Self { reporter: HealthReporter::new(), services: Vec::new(), serving: Arc::new(Mutex::new(None)) }
    }

    /// Adds `service` (a fully qualified name such as `users.v1.UserService`) to the
    /// names [`Health::set_serving`] sets.
    pub fn add(&mut self, service: &'static str) {
        self.services.push(service);
    }

    /// The `grpc.health.v1.Health` service answering `Check` and `Watch` from these statuses.
    pub fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.reporter.clone()))
    }

    /// Sets the server (`""`) and every added service to SERVING or NOT_SERVING.
    /// Setting the status it already has does nothing, so `Watch` streams get a message
    /// only when the status changes (gRPC health checking protocol, `Watch`).
    pub async fn set_serving(&self, serving: bool) {
        {
            let mut current = self.serving.lock().unwrap_or_else(PoisonError::into_inner);
            if *current == Some(serving) {
                return;
            }
            *current = Some(serving);
        }
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.reporter.set_service_status("", status).await;
        for service in &self.services {
            self.reporter.set_service_status(*service, status).await;
        }
    }
}

/// Spawns a task that pings the database every `config.health_check_interval` and
/// reports `health` SERVING while it answers, NOT_SERVING while it does not
/// (`grpc.health.v1`: a replica that cannot reach its data should get no traffic).
/// A ping that takes longer than `config.acquire_timeout` counts as no answer.
pub fn watch_database(pool: AnyPool, config: &DatabaseConfig, health: Health) -> JoinHandle<()> {
    let interval = config.health_check_interval;
    let timeout = config.acquire_timeout;
    tokio::spawn(async move {
        let mut last = None;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let reachable = matches!(tokio::time::timeout(timeout, ping(&pool)).await, Ok(Ok(())));
            if last != Some(reachable) {
                if reachable {
                    tracing::info!("database reachable; serving");
                } else {
                    tracing::warn!("database unreachable; not serving");
                }
                health.set_serving(reachable).await;
                last = Some(reachable);
            }
        }
    })
}

async fn ping(pool: &AnyPool) -> Result<(), sqlx::Error> {
    pool.acquire().await?.ping().await
}
