//! The services' command line and exit codes: serve (the default), `health-check` for
//! container health checks, `migrate` for a migration Job; any bad config exits 78.

use std::{future::Future, net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use sqlx::migrate::Migrator;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{
    config::{DatabaseConfig, ServerConfig},
    database::Database,
    observability::logs::Telemetry,
};

/// Exit code of a bad configuration: `EX_CONFIG` from BSD `sysexits.h`.
pub const EX_CONFIG: u8 = 78;

/// How long `health-check` waits to connect and for the answer: container health checks
/// run it every few seconds and have their own timeout, usually longer.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Command line of a service; everything else is config.
#[derive(Debug, Parser)]
pub struct Cli {
    /// TOML config file, applied over the defaults and under the env vars.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// What to do; serves when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary does once its config is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Subcommand)]
pub enum Command {
    /// Serve gRPC until SIGTERM (the default).
    #[default]
    Serve,
    /// Ask the local server `grpc.health.v1.Health/Check` (service ""): exit 0 when it
    /// answers SERVING, 1 otherwise. For container health checks.
    HealthCheck,
    /// Apply the embedded database migrations to `database.url` and exit 0. For a
    /// Kubernetes Job run before a rollout.
    Migrate,
}

impl Cli {
    /// Parses the process arguments for the service `name` described by `about`; prints
    /// help or the usage error and exits (code 2) when asked or when they are wrong.
    pub fn from_env(name: &'static str, about: &'static str) -> Self {
        let command = <Self as CommandFactory>::command().name(name).about(about).version(env!("CARGO_PKG_VERSION"));
        Self::from_arg_matches(&command.get_matches()).unwrap_or_else(|error| error.exit())
    }

    /// The subcommand, [`Command::Serve`] when none was given.
    pub fn subcommand(&self) -> Command {
        self.command.unwrap_or_default()
    }
}

/// Prints `{name}: config error: {error}` (one line naming the key and its source) and
/// returns [`EX_CONFIG`].
pub fn config_error(name: &str, error: impl std::fmt::Display) -> ExitCode {
    eprintln!("{name}: config error: {error}");
    ExitCode::from(EX_CONFIG)
}

/// Runs the service: with `telemetry` started (an error there is a bad `log.*` or
/// `telemetry.*` value: [`EX_CONFIG`]), awaits `app` (build, then serve until stopped),
/// flushes the spans and log lines still queued whatever happened, and exits 0, or 1
/// with one line when `app` failed.
pub async fn serve(
    name: &str,
    telemetry: Result<Telemetry, String>,
    app: impl Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let telemetry = match telemetry {
        Ok(telemetry) => telemetry,
        Err(error) => return config_error(name, error),
    };
    let result = app.await;
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `health-check`: calls `grpc.health.v1.Health/Check` with service "" on
/// `server.host:server.port` (loopback when the host is unspecified, `0.0.0.0` or `::`),
/// and exits 0 when the answer is SERVING, 1 (with one line saying why) otherwise,
/// including when nothing answers within 3 seconds. `server.port` 0 cannot be checked.
pub async fn health_check(name: &str, server: &ServerConfig) -> ExitCode {
    match serving_status(server).await {
        Ok(ServingStatus::Serving) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("{name}: health-check: {}", status.as_str_name());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("{name}: health-check: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The status the server at `server` reports for the whole server (service "").
async fn serving_status(server: &ServerConfig) -> Result<ServingStatus, String> {
    if server.port == 0 {
        return Err("server.port is 0 (a random port): nothing to check".to_owned());
    }
    let host = match server.host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        host => host,
    };
    let address = std::net::SocketAddr::new(host, server.port);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("{address}: {e}"))?
        .connect_timeout(HEALTH_CHECK_TIMEOUT)
        .timeout(HEALTH_CHECK_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| format!("connect to {address}: {e}"))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map_err(|status| format!("{address} answered {:?}: {}", status.code(), status.message()))?;
    Ok(answer.into_inner().status())
}

/// `migrate`: connects to `database.url`, applies `migrator`'s migrations not yet
/// applied, and exits 0, or 1 with one line naming what failed.
pub async fn migrate(name: &str, database: &DatabaseConfig, migrator: &Migrator) -> ExitCode {
    let result = async {
        let pool = Database::connect(database, name).await.map_err(|e| format!("connect to {}: {e}", database.url))?;
        let applied = pool.migrate(migrator).await.map_err(|e| format!("apply migrations: {e}"));
        pool.close().await;
        applied
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: migrate: {error}");
            ExitCode::FAILURE
        }
    }
}
