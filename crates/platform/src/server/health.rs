//! What `grpc.health.v1.Health` reports: the [`Health`] handle and the database watch
//! that drives it and the breaker in front of the pool.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use sqlx::{AnyConnection, ConnectOptions, Connection, any::AnyConnectOptions};
use tokio::task::JoinHandle;
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};

use crate::{config::DatabaseConfig, database::Database};

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

/// Spawns a task that checks the database every `config.health_check_interval` (the
/// first time one interval after the start: the service has just connected), and at
/// once when a call's connection fails or a call has waited
/// `config.health_check_timeout` for one (see [`Database::acquire`]), and reports what it finds to `health` and to the breaker in
/// front of `database`'s pool: SERVING with the breaker closed while the database
/// answers, NOT_SERVING with the breaker open, calls then failing at once, while it
/// does not (`grpc.health.v1`: a replica that cannot reach its data should get no
/// traffic, and its clients should retry elsewhere without waiting).
///
/// A check pings a connection of the probe's own, outside the pool (a busy pool does
/// not delay it), opening a new one first if the last ping failed; it counts as no
/// answer when it fails or takes longer than `config.health_check_timeout`. So the
/// database's going away is reported at most `health_check_interval +
/// health_check_timeout` later (750 ms with the defaults; `2 × health_check_timeout`
/// after a call first waits in vain), and its return at most `health_check_interval`
/// plus one connect later. The probe checks at most once per `health_check_timeout`.
pub fn watch_database(database: &Database, config: &DatabaseConfig, health: Health) -> JoinHandle<()> {
    let interval = config.health_check_interval;
    let timeout = config.health_check_timeout;
    let database = database.clone();
    database.breaker().watched(timeout);
    let mut probe = Probe { options: database.connect_options(), connection: None };
    tokio::spawn(async move {
        let breaker = database.breaker();
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = breaker.suspected() => {}
            }
            let started = tokio::time::Instant::now();
            let answer = probe.check(timeout).await;
            // Open before NOT_SERVING, close before SERVING: a call that sees the new
            // health status already meets the breaker in the same state.
            if breaker.set_open(answer.is_err()) {
                match &answer {
                    Ok(()) => tracing::info!("database reachable; serving"),
                    Err(error) => tracing::warn!(%error, "database unreachable; not serving, failing calls fast"),
                }
            }
            health.set_serving(answer.is_ok()).await;
            // Calls may wake the probe often under load; it checks at most once per timeout.
            tokio::time::sleep_until(started + timeout).await;
        }
    })
}

/// The health probe's own connection to the database, outside the pool, opened by its
/// first check.
struct Probe {
    options: Arc<AnyConnectOptions>,
    connection: Option<AnyConnection>,
}

/// Why a health check failed.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error("no answer within {0:?} (database.health_check_timeout)")]
    TimedOut(Duration),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl Probe {
    /// Pings the database, opening a new connection first when there is none; all
    /// within `timeout`. After a failure the connection is dropped, so the next check
    /// connects anew.
    async fn check(&mut self, timeout: Duration) -> Result<(), CheckError> {
        let checked = tokio::time::timeout(timeout, async {
            if let Some(connection) = &mut self.connection
                && connection.ping().await.is_ok()
            {
                return Ok(());
            }
            // None yet, or its ping failed: it may be a connection the server ended
            // while the database is fine, so only a fresh one failing counts.
            self.connection = None;
            let mut connection = self.options.connect().await?;
            connection.ping().await?;
            self.connection = Some(connection);
            Ok(())
        })
        .await;
        let answer = checked.unwrap_or(Err(CheckError::TimedOut(timeout)));
        if answer.is_err() {
            self.connection = None;
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::database::DatabaseDown;

    /// Upper bound for the probe to notice: a guard against a hung test, not a wait.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// A PostgreSQL URL on a loopback port that accepts TCP connections (into the
    /// listener's backlog) and never answers, as a database behind a cut network does:
    /// a connect waits, for as long as the listener lives.
    fn silent_url() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        (listener, format!("postgres://probe@127.0.0.1:{port}/none"))
    }

    fn is_database_down(error: &sqlx::Error) -> bool {
        matches!(error, sqlx::Error::Io(io) if io.get_ref().is_some_and(|inner| inner.is::<DatabaseDown>()))
    }

    #[tokio::test]
    async fn an_unreachable_database_opens_the_breaker_and_its_calls_fail_at_once_also_those_already_waiting() {
        let (_silent, url) = silent_url();
        let mut config = DatabaseConfig::at(url.parse().expect("a database URL"));
        // A call waits for its connect that long, unless the breaker releases it.
        config.acquire_timeout = Duration::from_secs(60);
        let database = Database::connect_lazy(&config, "test").expect("a valid URL");
        let waiting = tokio::spawn({
            let database = database.clone();
            async move { database.acquire().await.map(drop) }
        });
        let health = Health::new();
        let probe = watch_database(&database, &config, health);

        let mut open = database.breaker().subscribe();
        tokio::time::timeout(PATIENCE, open.wait_for(|open| *open)).await.expect("opened in time").expect("open");
        let started = Instant::now();
        let refused = database.acquire().await.expect_err("the breaker is open");
        let took = started.elapsed();
        let released = tokio::time::timeout(PATIENCE, waiting).await.expect("released in time").expect("ran");
        probe.abort();

        assert!(is_database_down(&refused), "{refused:?}");
        assert!(crate::database::is_unavailable(&refused), "answered UNAVAILABLE");
        assert!(took < Duration::from_millis(50), "refused after {took:?}");
        let released = released.expect_err("no connection");
        assert!(is_database_down(&released), "{released:?}");
    }
}
