//! The service's database pool (PostgreSQL or the embedded SQLite), the circuit
//! breaker in front of it, and its metrics.
//!
//! The pool is deadpool's, over sqlx connections (docs/adr/0004-deadpool-over-sqlx-connections.md):
//! sqlx's own pool pings every connection it takes back, one round trip per query.
//!
//! Beside this file: `errors` (sqlx errors classified by SQLSTATE: [`StorageFailure`]) and
//! `metrics` (the pool's metrics, [`Database::collector`]); neither imports the other.

mod errors;
pub mod metrics;

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult};
use prometheus::{Histogram, HistogramOpts};
use sqlx::{
    AnyConnection, ConnectOptions, Connection,
    any::AnyConnectOptions,
    migrate::{MigrateError, Migrator},
};
use tokio::sync::{Notify, watch};

pub use self::errors::{StorageFailure, is_unavailable};
pub use crate::config::Backend;
use crate::{config::DatabaseConfig, support::backoff::Backoff};

/// The name of the span [`Database::span`] makes for each query (OpenTelemetry's
/// database client span; it is named `"{operation} {table}"` in traces).
pub const QUERY_SPAN: &str = "db.query";

/// Holds a query's span (see [`Database::span`]) open while the query runs.
pub trait InSpan: Future + Sized {
    /// `self`, with `span` open from now until it finishes or is dropped. Unlike
    /// `tracing`'s `instrument`, the span is not entered at each poll (nor to drop the
    /// future): nothing inside a query logs at INFO, and each enter and exit runs every
    /// layer of the subscriber, twice per query at least. The span's start and end, which
    /// OpenTelemetry exports, are the same; a line sqlx writes while the query runs (a
    /// slow statement, at WARN) belongs to the caller's span.
    fn in_span(self, span: tracing::Span) -> SpanHeld<Self> {
        SpanHeld { inner: self, _span: span }
    }
}

impl<F: Future> InSpan for F {}

pin_project_lite::pin_project! {
    /// The future of [`InSpan::in_span`].
    pub struct SpanHeld<F> {
        #[pin]
        inner: F,
        _span: tracing::Span,
    }
}

impl<F: Future> Future for SpanHeld<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// A pool and how long callers waited for its connections: what repositories hold.
/// Cloning is cheap; clones share the pool and the histogram.
///
/// Queries take their connection with [`Database::acquire`] rather than passing the
/// pool to sqlx as an executor: sqlx has no hook around its own acquire, the wait for
/// a connection is the first sign of a pool that is too small, and the breaker in
/// front of the pool must see every call.
#[derive(Clone)]
pub struct Database {
    pool: managed::Pool<Connector>,
    acquire_timeout: Duration,
    /// `db.system` of its spans.
    system: &'static str,
    name: Arc<str>,
    wait_time: Histogram,
    breaker: Arc<Breaker>,
}

/// The circuit breaker in front of the pool, shared by every clone of a [`Database`].
/// Only the health probe ([`crate::server::health::watch_database`]) opens and closes it, so
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
    /// When the breaker was made: the epoch of `distrusted_at`.
    created: Instant,
    /// When pooled connections were last put in doubt (the breaker closed after being
    /// open, or a query found the database gone: [`Database::noticed`]), in nanoseconds
    /// since `created`; 0 before that ever happened. An atomic: every checkout reads it.
    distrusted_at: AtomicU64,
}

impl Breaker {
    /// Opens (`true`) or closes the breaker; returns whether that changed it.
    pub(crate) fn set_open(&self, open: bool) -> bool {
        let changed = self.open.send_if_modified(|current| std::mem::replace(current, open) != open);
        if changed && !open {
            self.distrust_pooled();
        }
        changed
    }

    /// Puts the pooled connections in doubt from now: see [`Breaker::recovering`].
    fn distrust_pooled(&self) {
        self.distrusted_at.store(self.nanos_since_created().max(1), Ordering::Relaxed);
    }

    /// Whether the breaker closed, or a query found the database gone, less than
    /// `window` ago: pooled connections released before the outage, and the one that
    /// query ran on, may be dead yet too recently used for the pool's ping.
    fn recovering(&self, window: Duration) -> bool {
        let since = self.distrusted_at.load(Ordering::Relaxed);
        since != 0 && u128::from(self.nanos_since_created().saturating_sub(since)) < window.as_nanos()
    }

    fn nanos_since_created(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_nanos()).unwrap_or(u64::MAX)
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

    /// Makes calls wake the probe once they have waited `slow_wait` for a connection.
    pub(crate) fn watched(&self, slow_wait: Duration) {
        let _ = self.slow_wait.set(slow_wait);
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
    /// A pool of at most `config.max_connections` connections to `config.url`, named
    /// `name` (the service's) in the `pool_name` label of its metrics, after one
    /// connection was opened and checked: a database that cannot be reached fails the
    /// start, not the first call.
    ///
    /// SQLite connections run in WAL mode with foreign keys on, so several processes
    /// (the two users replicas of `make demo`) can share one file.
    ///
    /// A connect that fails for want of the database (refused, reset, TLS, a server
    /// still starting or out of connections: see [`is_unavailable`]) is tried again after a [`Backoff`] from 50 ms, doubling,
    /// until `config.acquire_timeout` has passed: a database that comes up just after the
    /// service (a container started alongside it) is still reached.
    ///
    /// # Errors
    /// When sqlx refuses an option in the URL, the database refuses the connection (bad
    /// credentials, unknown database), or no connection could be opened within
    /// `config.acquire_timeout`.
    pub async fn connect(config: &DatabaseConfig, name: &str) -> Result<Self, sqlx::Error> {
        let database = Self::connect_lazy(config, name)?;
        let deadline = tokio::time::Instant::now() + config.acquire_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(50), config.acquire_timeout);
        loop {
            // Not through `acquire`: no call waits here, so nothing to observe or wake.
            let first = tokio::time::timeout_at(deadline, database.pool.get()).await;
            match first.map_err(|_| sqlx::Error::PoolTimedOut)?.map_err(pool_error) {
                Ok(connection) => {
                    drop(connection);
                    return Ok(database);
                }
                Err(error) if is_unavailable(&error) => {
                    let delay = backoff.next_delay();
                    if tokio::time::Instant::now() + delay >= deadline {
                        return Err(error);
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The pool [`Database::connect`] returns, without opening any connection yet: the
    /// first call that needs one opens it.
    ///
    /// # Errors
    /// When sqlx refuses an option in the URL.
    pub fn connect_lazy(config: &DatabaseConfig, name: &str) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let options: AnyConnectOptions = config.url.expose_secret().parse()?;
        let opts = HistogramOpts::new(
            "db_client_connections_wait_time_seconds",
            "The time it took to obtain an open connection from the pool.",
        )
        .const_label("pool_name", name)
        .buckets(WAIT_BUCKETS.to_vec());
        // A fixed, valid name, label and increasing buckets: creating it cannot fail.
        let wait_time = Histogram::with_opts(opts).expect("valid histogram");
        let breaker = Arc::new(Breaker {
            open: watch::Sender::new(false),
            suspect: Notify::new(),
            slow_wait: OnceLock::new(),
            created: Instant::now(),
            distrusted_at: AtomicU64::new(0),
        });
        let connector = Connector {
            options: Arc::new(options),
            backend: config.url.backend(),
            ping_after_idle: config.ping_after_idle,
            max_lifetime: config.max_lifetime,
            breaker: breaker.clone(),
        };
        let size = usize::try_from(config.max_connections.get()).unwrap_or(usize::MAX);
        // Without timeouts or hooks configured, building cannot fail.
        let pool = managed::Pool::builder(connector).max_size(size).build().expect("a pool without timeouts");
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(close_idle(pool.weak(), config.idle_timeout));
        }
        Ok(Self {
            pool,
            acquire_timeout: config.acquire_timeout,
            system: config.url.backend().system(),
            name: name.into(),
            wait_time,
            breaker,
        })
    }

    /// The breaker in front of the pool, for the health probe.
    pub(crate) fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// How the pool connects, for the health probe's connection of its own.
    pub(crate) fn connect_options(&self) -> Arc<AnyConnectOptions> {
        self.pool.manager().options.clone()
    }

    /// Applies `migrator`'s migrations not yet applied, on one pooled connection.
    ///
    /// # Errors
    /// No connection (see [`Database::acquire`]), or a migration that failed.
    pub async fn migrate(&self, migrator: &Migrator) -> Result<(), MigrateError> {
        let mut connection = self.acquire().await?;
        migrator.run(&mut *connection).await
    }

    /// The connections open now, idle or in use: at most `database.max_connections`.
    pub fn open_connections(&self) -> usize {
        self.pool.status().size
    }

    /// Closes the pool: calls waiting for a connection and later ones fail with
    /// [`sqlx::Error::PoolClosed`], idle connections are closed gracefully (PostgreSQL
    /// hears a `Terminate`), and connections in use are closed when they come back.
    pub async fn close(&self) {
        let idle = self.pool.retain(|_, _| false).removed;
        self.pool.close();
        for connection in idle {
            let _ = connection.close().await;
        }
    }

    /// A connection from the pool, waiting up to `database.acquire_timeout` for one
    /// (also to open a new one), unless the database is known to be down (see
    /// [`DatabaseDown`]): then it fails at once, before any statement runs, so the caller
    /// can answer UNAVAILABLE and its client retry another replica without a doubt about
    /// side effects. A wait that ends in an error or lasts longer than
    /// `database.health_check_timeout` wakes the health probe, which then checks the
    /// database at once.
    ///
    /// A pooled connection idle for `database.ping_after_idle` or more, or taken in that
    /// time after the breaker closed, is pinged first and replaced if it died; see
    /// [`PooledConnection`] for what happens when it comes back.
    ///
    /// The wait is observed in `db_client_connections_wait_time_seconds`, also when it
    /// ends in an error (a timed-out wait is the longest wait there is); a refusal of
    /// the open breaker is no wait and is not observed.
    ///
    /// # Errors
    /// [`DatabaseDown`] (as [`sqlx::Error::Io`]) while the database is known to be
    /// down, also for a wait under way when that becomes known;
    /// [`sqlx::Error::PoolTimedOut`] when no connection was free or opened in time,
    /// [`sqlx::Error::PoolClosed`] after shutdown, or the error of opening a new one.
    pub async fn acquire(&self) -> Result<PooledConnection, sqlx::Error> {
        let mut open = self.breaker.open.subscribe();
        if *open.borrow_and_update() {
            return Err(DatabaseDown::error());
        }
        let started = Instant::now();
        let acquire = self.pool.get();
        tokio::pin!(acquire);
        let slow = self.breaker.slow_wait.get().copied();
        let slow_wait = tokio::time::sleep(slow.unwrap_or(Duration::MAX));
        tokio::pin!(slow_wait);
        let timed_out = tokio::time::sleep(self.acquire_timeout);
        tokio::pin!(timed_out);
        let mut woke_probe = slow.is_none();
        let connection = loop {
            // Biased, the pool first: an idle connection is handed over before either
            // timer is polled, so neither is ever registered with the runtime.
            tokio::select! {
                biased;
                connection = &mut acquire => break Some(connection.map_err(pool_error)),
                Ok(_) = open.wait_for(|open| *open) => break None,
                () = &mut timed_out => break Some(Err(sqlx::Error::PoolTimedOut)),
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
        connection
            .map(|connection| PooledConnection { connection: Some(connection), settle_within: self.acquire_timeout })
    }

    /// `error` from a query on this database, passed through; first, when it means the
    /// database cannot be reached ([`is_unavailable`]), it wakes the health probe as a
    /// failed acquire does, so a connection that died unnoticed (reused within
    /// `database.ping_after_idle`, so not pinged) turns the service NOT_SERVING at once.
    /// It also has every pooled connection pinged when next handed out, for
    /// `database.ping_after_idle` from now: the connection the query ran on, and others
    /// of the same server, may be dead (a terminated backend, a restarted server) and
    /// would fail the next calls too.
    pub fn noticed(&self, error: sqlx::Error) -> sqlx::Error {
        if is_unavailable(&error) {
            self.breaker.distrust_pooled();
            self.breaker.suspect();
        }
        error
    }

    /// A span for one query on this database, to hold over the query's future with
    /// [`InSpan::in_span`]: OpenTelemetry's database conventions (`db.system`,
    /// `db.operation` such as `SELECT`, `db.sql.table`), named `"{operation} {table}"`.
    /// It is a child of the current span (the RPC's). Never add the statement's
    /// parameters: they hold user data.
    pub fn span(&self, operation: &'static str, table: &'static str) -> tracing::Span {
        tracing::info_span!(
            QUERY_SPAN,
            otel.name = format!("{operation} {table}"),
            otel.kind = "client",
            db.system = self.system,
            db.operation = operation,
            db.sql.table = table,
        )
    }
}

/// Closes the pool's connections not handed out for `idle_timeout`
/// (`database.idle_timeout`), checking every minute or every `idle_timeout` when that is
/// shorter, until the pool is closed or dropped.
async fn close_idle(pool: managed::WeakPool<Connector>, idle_timeout: Duration) {
    let mut checks = tokio::time::interval(idle_check_period(idle_timeout));
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checks.tick().await;
    loop {
        checks.tick().await;
        let Some(pool) = pool.upgrade().filter(|pool| !pool.is_closed()) else { return };
        for connection in pool.retain(|_, metrics| metrics.last_used() < idle_timeout).removed {
            let _ = connection.close().await;
        }
    }
}

/// How often [`close_idle`] looks for connections idle `idle_timeout`: every minute, or
/// every `idle_timeout` when that is shorter (so none stays open much past it).
fn idle_check_period(idle_timeout: Duration) -> Duration {
    idle_timeout.min(Duration::from_secs(60))
}

/// Opens and checks the pool's connections (deadpool's `Manager`).
struct Connector {
    /// Parsed once: every connection of an in-memory SQLite URL then opens the same database.
    options: Arc<AnyConnectOptions>,
    backend: Backend,
    /// `database.ping_after_idle`.
    ping_after_idle: Duration,
    /// `database.max_lifetime`.
    max_lifetime: Duration,
    breaker: Arc<Breaker>,
}

impl managed::Manager for Connector {
    type Type = AnyConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<AnyConnection, sqlx::Error> {
        let mut connection = self.options.connect().await?;
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL").execute(&mut connection).await?;
            sqlx::query("PRAGMA foreign_keys = ON").execute(&mut connection).await?;
        }
        Ok(connection)
    }

    /// Runs as a pooled connection is handed out. A connection that fails here is
    /// closed and the next idle one tried, or a new one opened.
    ///
    /// Pinged (one round trip) only when it was last handed out `ping_after_idle` or more
    /// ago (pgx's rule), or when the breaker closed or a query found the database gone
    /// ([`Database::noticed`]) less than that ago (connections released before an
    /// outage, or the one that query ran on, may be dead yet too recently used for the
    /// first rule):
    /// one that died while idle (a restarted server, a terminated backend, a cut
    /// network) is then replaced before a query uses it. A connection used more recently
    /// skips the ping, a round trip per query (docs/perf.md).
    async fn recycle(&self, connection: &mut AnyConnection, metrics: &Metrics) -> RecycleResult<sqlx::Error> {
        if metrics.age() >= self.max_lifetime {
            return Err(RecycleError::message("older than its maximum lifetime"));
        }
        if metrics.last_used() >= self.ping_after_idle || self.breaker.recovering(self.ping_after_idle) {
            connection.ping().await?;
        }
        Ok(())
    }
}

/// A connection from the pool ([`Database::acquire`]); dereferences to sqlx's
/// [`AnyConnection`], to run queries on with `&mut *connection`. Dropping it hands the
/// connection back.
///
/// A connection comes back as it is, without the round trip sqlx's own pool spends on
/// a ping, unless work is still queued on it: a transaction dropped without commit
/// (the call was cancelled, or failed half-way) queues its `ROLLBACK` there. Such a
/// connection is first flushed in a task of its own, within `database.acquire_timeout`
/// (or closed when that fails), so the rolled-back transaction's locks are released at
/// once rather than when the connection is next used.
pub struct PooledConnection {
    /// `None` once handed to the task that flushes it.
    connection: Option<Object<Connector>>,
    /// `database.acquire_timeout`.
    settle_within: Duration,
}

impl std::fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConnection").finish_non_exhaustive()
    }
}

impl std::ops::Deref for PooledConnection {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        // `Some` until dropped.
        self.connection.as_ref().expect("a pooled connection")
    }
}

impl std::ops::DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.connection.as_mut().expect("a pooled connection")
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        // `should_flush`/`flush`: the hooks sqlx keeps for its own pool (`Connection`,
        // doc-hidden): bytes queued but not sent, and sending them then reading every
        // answer still due.
        let Some(mut connection) = self.connection.take_if(|connection| connection.should_flush()) else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to flush on (a test's runtime shutting down): close it instead.
            drop(Object::take(connection));
            return;
        };
        let within = self.settle_within;
        runtime.spawn(async move {
            if !matches!(tokio::time::timeout(within, connection.flush()).await, Ok(Ok(()))) {
                drop(Object::take(connection));
            }
        });
    }
}

/// What [`Database::acquire`] returns for an error of deadpool's.
fn pool_error(error: PoolError<sqlx::Error>) -> sqlx::Error {
    match error {
        PoolError::Backend(error) => error,
        PoolError::Closed => sqlx::Error::PoolClosed,
        // Only with the timeouts and hooks that `Database::connect_lazy` does not set.
        PoolError::Timeout(_) | PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            sqlx::Error::PoolTimedOut
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_trip_on_both_sides_of_the_epoch() {
        for micros in [0, 1, -1, 1_700_000_000_123_456, -86_400_000_000] {
            assert_eq!(to_micros(from_micros(micros)), micros);
        }
    }

    #[test]
    fn idle_connections_are_looked_for_every_minute_or_every_idle_timeout_when_shorter() {
        let minute = Duration::from_secs(60);
        let default =
            crate::config::DatabaseConfig::at("sqlite::memory:".parse().expect("a database URL")).idle_timeout;
        assert_eq!(idle_check_period(default), minute, "at the default idle_timeout ({default:?})");
        assert_eq!(idle_check_period(minute), minute);
        assert_eq!(idle_check_period(Duration::from_millis(100)), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn every_wait_for_a_connection_is_observed_including_one_that_times_out() {
        let mut config = crate::config::DatabaseConfig::at("sqlite::memory:".parse().expect("a database URL"));
        config.max_connections = std::num::NonZeroU32::MIN;
        config.acquire_timeout = std::time::Duration::from_millis(50);
        let db = Database::connect(&config, "test").await.expect("in-memory SQLite");
        let metrics = crate::observability::metrics::Metrics::new();
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
