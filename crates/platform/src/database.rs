//! The service's database pool (PostgreSQL or the embedded SQLite) and its health probe.

use sqlx::{AnyPool, Connection, any::AnyPoolOptions};
use tokio::task::JoinHandle;

use crate::{config::DatabaseConfig, server::Health};

/// Which database engine a pool talks to; some statements differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: production and the integration tests.
    Postgres,
    /// SQLite: the embedded default, for `make demo` and a laptop.
    Sqlite,
}

impl Backend {
    /// The backend a sqlx URL names, from its scheme.
    ///
    /// # Errors
    /// When the scheme is neither `postgres`/`postgresql` nor `sqlite`.
    pub fn of_url(url: &str) -> Result<Self, String> {
        match url.split(':').next() {
            Some("postgres" | "postgresql") => Ok(Self::Postgres),
            Some("sqlite") => Ok(Self::Sqlite),
            _ => Err("the scheme must be postgres:// or sqlite://".to_owned()),
        }
    }

    /// The backend of `pool`, from the scheme of the URL it connects to; `None` for a
    /// scheme this module does not know.
    pub fn of_pool(pool: &AnyPool) -> Option<Self> {
        Self::of_url(pool.connect_options().database_url.as_str()).ok()
    }

    /// The OpenTelemetry `db.system` value: `postgresql` or `sqlite`.
    pub fn system(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::Sqlite => "sqlite",
        }
    }
}

/// A span for one database call on `pool`, to `.instrument()` the query's future
/// with: OpenTelemetry's database conventions (`db.system`, `db.operation` such as
/// `SELECT`, `db.sql.table`), named `"{operation} {table}"`. It is a child of the
/// current span (the RPC's). Never add the statement's parameters: they hold user data.
pub fn span(pool: &AnyPool, operation: &'static str, table: &'static str) -> tracing::Span {
    let system = Backend::of_pool(pool).map_or("other_sql", Backend::system);
    tracing::info_span!(
        "db.query",
        otel.name = format!("{operation} {table}"),
        otel.kind = "client",
        db.system = system,
        db.operation = operation,
        db.sql.table = table,
    )
}

/// Opens a pool to `config.url` and checks one connection.
///
/// SQLite connections run in WAL mode with foreign keys on, so several processes
/// (the two users replicas of `make demo`) can share one file.
///
/// # Errors
/// When the URL is malformed or the database cannot be reached within `acquire_timeout`.
pub async fn connect(config: &DatabaseConfig) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(&config.url).map_err(|e| sqlx::Error::Configuration(e.into()))?;
    AnyPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect(&config.url)
        .await
}

/// Spawns a task that pings the database every `config.health_check_interval` and
/// reports the server SERVING while it answers, NOT_SERVING while it does not
/// (`grpc.health.v1`: a replica that cannot reach its data should get no traffic).
pub fn watch_health(pool: AnyPool, config: &DatabaseConfig, health: Health) -> JoinHandle<()> {
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

    #[test]
    fn a_url_scheme_picks_the_backend() {
        assert_eq!(Backend::of_url("postgres://u@h/db"), Ok(Backend::Postgres));
        assert_eq!(Backend::of_url("sqlite://x.db?mode=rwc"), Ok(Backend::Sqlite));
        assert!(Backend::of_url("mysql://h/db").is_err());
    }
}
