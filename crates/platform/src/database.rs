//! The service's database pool (PostgreSQL or the embedded SQLite), the circuit
//! breaker in front of it, and its metrics.

use std::{
    io,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use prometheus::{
    Histogram, HistogramOpts, IntGaugeVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use sqlx::{Any, AnyPool, Connection, any::AnyPoolOptions, pool::PoolConnection};
use tokio::sync::{Notify, watch};

pub use crate::config::Backend;
use crate::config::DatabaseConfig;

/// A pool and how long callers waited for its connections: what repositories hold.
/// Cloning is cheap; clones share the pool and the histogram.
///
/// Queries take their connection with [`Database::acquire`] rather than passing the
/// pool to sqlx as an executor: sqlx has no hook around its own acquire, the wait for
/// a connection is the first sign of a pool that is too small, and the breaker in
/// front of the pool must see every call.
#[derive(Clone)]
pub struct Database {
    pool: AnyPool,
    /// `db.system` of its spans.
    system: &'static str,
    name: Arc<str>,
    wait_time: Histogram,
    breaker: Arc<Breaker>,
}

/// The circuit breaker in front of the pool, shared by every clone of a [`Database`].
/// Only the health probe ([`crate::health::watch_database`]) opens and closes it, so
/// "open" and "NOT_SERVING" are one state; calls feed it by waking the probe.
///
/// - closed (the database answered the probe last): calls take a connection from the pool;
/// - open (it did not): calls fail at once with [`DatabaseDown`], and calls still
///   waiting for a connection are released with it;
/// - the probe's next success is the half-open trial: it closes the breaker.
pub(crate) struct Breaker {
    /// `true` while open.
    open: watch::Sender<bool>,
    /// Woken by a call whose connection failed or is slow in coming, so the probe
    /// checks at once instead of at its next tick.
    suspect: Notify,
    /// Set once a probe watches this database: how long a call may wait for a
    /// connection before it wakes the probe (`database.health_check_timeout`).
    /// Without a probe the breaker stays closed and calls never wake anything.
    slow_wait: OnceLock<Duration>,
    /// Set with `slow_wait`: for how long after the breaker closes every connection a
    /// call takes is pinged first (`database.ping_after_idle`; see [`Database::acquire`]).
    ping_after_idle: OnceLock<Duration>,
    /// When the breaker last closed after being open.
    closed_at: Mutex<Option<Instant>>,
}

impl Breaker {
    /// Opens (`true`) or closes the breaker; returns whether that changed it.
    pub(crate) fn set_open(&self, open: bool) -> bool {
        let changed = self.open.send_if_modified(|current| std::mem::replace(current, open) != open);
        if changed && !open {
            *self.closed_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
        changed
    }

    /// Whether the breaker closed less than `ping_after_idle` ago: pooled connections
    /// released before the outage may be dead yet too recently used for the pool's ping.
    fn recovering(&self) -> bool {
        let Some(window) = self.ping_after_idle.get() else { return false };
        self.closed_at.lock().unwrap_or_else(PoisonError::into_inner).is_some_and(|at| at.elapsed() < *window)
    }

    /// Completes when a call has woken the probe since the last time this completed.
    pub(crate) async fn suspected(&self) {
        self.suspect.notified().await;
    }

    /// Follows the breaker's state (`true` while open).
    #[cfg(test)]
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.open.subscribe()
    }

    /// Makes calls wake the probe once they have waited `slow_wait` for a connection,
    /// and ping their connection while the breaker closed less than `ping_after_idle` ago.
    pub(crate) fn watched(&self, slow_wait: Duration, ping_after_idle: Duration) {
        let _ = self.slow_wait.set(slow_wait);
        let _ = self.ping_after_idle.set(ping_after_idle);
    }

    /// Wakes the probe (a no-op without one).
    fn suspect(&self) {
        if self.slow_wait.get().is_some() {
            self.suspect.notify_one();
        }
    }
}

/// Why a call got no connection while the database is known to be down (the breaker
/// is open): it is not tried until the health probe reaches the database again.
/// [`Database::acquire`] returns it as [`sqlx::Error::Io`] (kind `NotConnected`), so
/// [`is_unavailable`] holds for it and the call answers UNAVAILABLE.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the database is down (it did not answer the health probe); not tried until it does")]
pub struct DatabaseDown;

impl DatabaseDown {
    fn error() -> sqlx::Error {
        sqlx::Error::Io(io::Error::new(io::ErrorKind::NotConnected, Self))
    }
}

/// Buckets of `db_client_connections_wait_time_seconds`, in seconds: from an idle
/// connection handed over at once (well under 0.1 ms) to the default acquire timeout.
const WAIT_BUCKETS: [f64; 12] = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

impl Database {
    /// `pool`, named `name` (the service's) in the `pool_name` label of its metrics.
    pub fn new(pool: AnyPool, name: &str) -> Self {
        let opts = HistogramOpts::new(
            "db_client_connections_wait_time_seconds",
            "The time it took to obtain an open connection from the pool.",
        )
        .const_label("pool_name", name)
        .buckets(WAIT_BUCKETS.to_vec());
        // A fixed, valid name, label and increasing buckets: creating it cannot fail.
        let wait_time = Histogram::with_opts(opts).expect("valid histogram");
        let url = pool.connect_options().database_url.clone();
        let system = Backend::of_scheme(url.scheme()).map_or("other_sql", Backend::system);
        let breaker = Arc::new(Breaker {
            open: watch::Sender::new(false),
            suspect: Notify::new(),
            slow_wait: OnceLock::new(),
            ping_after_idle: OnceLock::new(),
            closed_at: Mutex::new(None),
        });
        Self { pool, system, name: name.into(), wait_time, breaker }
    }

    /// The breaker in front of the pool, for the health probe.
    pub(crate) fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The pool itself, for migrations and the health probe.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A connection from the pool, waiting up to the pool's `acquire_timeout` for one,
    /// unless the database is known to be down (see [`DatabaseDown`]): then it fails at
    /// once, before any statement runs, so the caller can answer UNAVAILABLE and its
    /// client retry another replica without a doubt about side effects. A wait that
    /// ends in an error or lasts longer than `database.health_check_timeout` wakes the
    /// health probe, which then checks the database at once.
    ///
    /// The wait is observed in `db_client_connections_wait_time_seconds`, also when it
    /// ends in an error (a timed-out wait is the longest wait there is); a refusal of
    /// the open breaker is no wait and is not observed.
    ///
    /// # Errors
    /// [`DatabaseDown`] (as [`sqlx::Error::Io`]) while the database is known to be
    /// down, also for a wait under way when that becomes known;
    /// [`sqlx::Error::PoolTimedOut`] when no connection freed up in time,
    /// [`sqlx::Error::PoolClosed`] after shutdown, or the error of opening a new one.
    pub async fn acquire(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        let mut open = self.breaker.open.subscribe();
        if *open.borrow_and_update() {
            return Err(DatabaseDown::error());
        }
        let started = Instant::now();
        let acquire = self.pool.acquire();
        tokio::pin!(acquire);
        let slow = self.breaker.slow_wait.get().copied();
        let slow_wait = tokio::time::sleep(slow.unwrap_or(Duration::MAX));
        tokio::pin!(slow_wait);
        let mut woke_probe = slow.is_none();
        let connection = loop {
            tokio::select! {
                connection = &mut acquire => break Some(connection),
                Ok(_) = open.wait_for(|open| *open) => break None,
                () = &mut slow_wait, if !woke_probe => {
                    woke_probe = true;
                    self.breaker.suspect();
                }
            }
        };
        self.wait_time.observe(started.elapsed().as_secs_f64());
        let connection = connection.ok_or_else(DatabaseDown::error)?;
        if connection.as_ref().is_err_and(is_unavailable) {
            self.breaker.suspect();
        }
        let mut connection = connection?;
        // Just after an outage, a connection released before it and idle for less than
        // `ping_after_idle` would skip the pool's ping (see `connect`), yet the outage may
        // have cut it: ping it, and replace a dead one, as many times as the pool is large.
        let mut replacements = self.pool.options().get_max_connections();
        while self.breaker.recovering() && replacements > 0 {
            if connection.ping().await.is_ok() {
                break;
            }
            replacements -= 1;
            connection.close_on_drop();
            drop(connection);
            connection = self.pool.acquire().await.map_err(|error| self.noticed(error))?;
        }
        Ok(connection)
    }

    /// `error` from a query on this database, passed through; first, when it means the
    /// database cannot be reached ([`is_unavailable`]), it wakes the health probe as a
    /// failed acquire does, so a connection that died unnoticed (reused within
    /// `database.ping_after_idle`, so not pinged) turns the service NOT_SERVING at once.
    pub fn noticed(&self, error: sqlx::Error) -> sqlx::Error {
        if is_unavailable(&error) {
            self.breaker.suspect();
        }
        error
    }

    /// A span for one query on this database, to `.instrument()` the query's future
    /// with: OpenTelemetry's database conventions (`db.system`, `db.operation` such as
    /// `SELECT`, `db.sql.table`), named `"{operation} {table}"`. It is a child of the
    /// current span (the RPC's). Never add the statement's parameters: they hold user data.
    pub fn span(&self, operation: &'static str, table: &'static str) -> tracing::Span {
        tracing::info_span!(
            "db.query",
            otel.name = format!("{operation} {table}"),
            otel.kind = "client",
            db.system = self.system,
            db.operation = operation,
            db.sql.table = table,
        )
    }

    /// The pool's metric families, read at scrape time, to register in the service's
    /// registry (`metrics.register(database.collector())`): OpenTelemetry's database connection-pool metrics as semantic
    /// conventions 1.24 name them (`db.client.connections.usage`, `.max`, `.wait_time`,
    /// attributes `state` and `pool.name`), in Prometheus form:
    /// `db_client_connections_usage{state="idle"|"used"}` and
    /// `db_client_connections_max` (gauges, connections) and
    /// `db_client_connections_wait_time_seconds` (histogram, seconds), each labelled
    /// `pool_name`. (Later conventions renamed the first `db.client.connection.count`,
    /// whose `_count` suffix Prometheus reserves for histograms: `promtool check
    /// metrics` rejects it.)
    pub fn collector(&self) -> PoolCollector {
        let families = PoolCollector::gauges(&self.name, [0, 0, 0]);
        let collectors = families.iter().map(|g| g as &dyn Collector).chain([&self.wait_time as &dyn Collector]);
        let descs = collectors.flat_map(Collector::desc).cloned().collect();
        PoolCollector { database: self.clone(), descs }
    }
}

/// The [`Collector`] of a [`Database`]'s pool metrics; see [`Database::collector`].
#[derive(Clone)]
pub struct PoolCollector {
    database: Database,
    descs: Vec<Desc>,
}

impl PoolCollector {
    /// Fresh gauges holding `[idle, used, max]` connections.
    fn gauges(name: &str, [idle, used, max]: [u32; 3]) -> [IntGaugeVec; 2] {
        let pool = "pool_name";
        // Fixed, valid names and labels: creating these cannot fail.
        let count = IntGaugeVec::new(
            Opts::new("db_client_connections_usage", "The number of connections in each state."),
            &[pool, "state"],
        )
        .expect("valid gauge");
        count.with_label_values(&[name, "idle"]).set(i64::from(idle));
        count.with_label_values(&[name, "used"]).set(i64::from(used));
        let most = IntGaugeVec::new(
            Opts::new("db_client_connections_max", "The maximum number of open connections allowed."),
            &[pool],
        )
        .expect("valid gauge");
        most.with_label_values(&[name]).set(i64::from(max));
        [count, most]
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let pool = &self.database.pool;
        let size = pool.size();
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
        let max = pool.options().get_max_connections();
        let gauges = Self::gauges(&self.database.name, [idle, size - idle, max]);
        gauges.iter().flat_map(Collector::collect).chain(self.database.wait_time.collect()).collect()
    }
}

/// Opens a pool to `config.url` and checks one connection.
///
/// SQLite connections run in WAL mode with foreign keys on, so several processes
/// (the two users replicas of `make demo`) can share one file.
///
/// A connection leaving the pool after `config.ping_after_idle` (1s) or more of idleness
/// is pinged first: one that died while idle (database restarted, backend terminated,
/// the network cut during an outage) is replaced before any query uses it, so the first
/// calls after a database outage succeed. A connection used more recently skips the
/// ping, a round trip per query (docs/perf.md); pinging none made every dead pooled
/// connection fail one call after an outage.
///
/// # Errors
/// When the database cannot be reached within `acquire_timeout`, or sqlx refuses an
/// option in the URL.
pub async fn connect(config: &DatabaseConfig) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let backend = config.url.backend();
    let ping_after_idle = config.ping_after_idle;
    AnyPoolOptions::new()
        .max_connections(config.max_connections.get())
        .acquire_timeout(config.acquire_timeout)
        // Ping only a connection idle for `ping_after_idle` or more (pgx's rule), not every
        // one: the ping is a round trip of its own, a third of GetUser's (docs/perf.md).
        // A connection that died while idle (a restarted server, a cut network, an outage
        // the breaker rode out) is then found and replaced before a query uses it.
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= ping_after_idle {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect(config.url.expose_secret())
        .await
}

/// A time as stored in a `BIGINT` column: microseconds since the Unix epoch.
/// Times before the epoch are stored as negative numbers; times further than
/// ±292,000 years away saturate.
pub fn to_micros(time: std::time::SystemTime) -> i64 {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map(|m| -m).unwrap_or(i64::MIN),
    }
}

/// The inverse of [`to_micros`].
pub fn from_micros(micros: i64) -> std::time::SystemTime {
    let magnitude = std::time::Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 { std::time::UNIX_EPOCH + magnitude } else { std::time::UNIX_EPOCH - magnitude }
}

/// Whether `error` means the database could not be reached in time (a gRPC
/// UNAVAILABLE, worth retrying elsewhere) rather than a fault in the query or data.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_trip_on_both_sides_of_the_epoch() {
        for micros in [0, 1, -1, 1_700_000_000_123_456, -86_400_000_000] {
            assert_eq!(to_micros(from_micros(micros)), micros);
        }
    }

    #[tokio::test]
    async fn every_wait_for_a_connection_is_observed_including_one_that_times_out() {
        let mut config = crate::config::DatabaseConfig::at("sqlite::memory:".parse().expect("a database URL"));
        config.max_connections = std::num::NonZeroU32::MIN;
        config.acquire_timeout = std::time::Duration::from_millis(50);
        let db = Database::new(connect(&config).await.expect("in-memory SQLite"), "test");
        let metrics = crate::metrics::Metrics::new();
        metrics.register(db.collector()).expect("registered once");

        let held = db.acquire().await.expect("the one connection");
        let refused = db.acquire().await.expect_err("the pool of one is taken");
        assert!(matches!(refused, sqlx::Error::PoolTimedOut), "{refused:?}");
        let body = metrics.render();
        drop(held);

        let value = |series: &str| {
            body.lines()
                .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{series} missing from:\n{body}"))
        };
        let pool = "pool_name=\"test\"";
        assert_eq!(value(&format!("db_client_connections_wait_time_seconds_count{{{pool}}}")), 2.0);
        assert!(value(&format!("db_client_connections_wait_time_seconds_sum{{{pool}}}")) >= 0.05, "the timed-out wait");
        assert_eq!(value(&format!("db_client_connections_usage{{{pool},state=\"used\"}}")), 1.0);
        assert_eq!(value(&format!("db_client_connections_usage{{{pool},state=\"idle\"}}")), 0.0);
        assert_eq!(value(&format!("db_client_connections_max{{{pool}}}")), 1.0);
    }
}
