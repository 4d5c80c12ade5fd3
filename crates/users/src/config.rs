//! The users service's configuration: defaults, then `--config` TOML, then `USERS_*` env vars.

use std::path::Path;

use platform::{
    auth::AuthConfig,
    config::{ConfigError, DatabaseConfig, LogConfig, ServerConfig},
    discovery::consul::ConsulConfig,
    discovery::registration::RegistrationConfig,
    observability::admin::AdminConfig,
    observability::traces::TelemetryConfig,
    server::fault::TestingConfig,
    server::rate_limit::RateLimitConfig,
};
use serde::{Deserialize, Serialize};

/// Everything the users service can be told; every key's default is listed in
/// `crates/users/config.defaults.toml`, written from [`Config::default`] and checked by a test. Keys are nested TOML sections; the env
/// var for `database.url` is `USERS_DATABASE__URL`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener: `server.host` (127.0.0.1), `server.port` (50051), `server.drain_period`
    /// (1s lame duck after SIGTERM), `server.shutdown_grace` (10s),
    /// `server.max_concurrent_requests` (1024; beyond it calls are answered UNAVAILABLE),
    /// `server.http2_keepalive_interval` (2h; `0s` off), `server.http2_keepalive_timeout` (20s).
    /// Limits: `server.http2_max_concurrent_streams` (256 per connection),
    /// `server.max_connections` (768), `server.max_open_streams` (1024 streaming calls),
    /// `server.idle_timeout` (5m without an open call closes a connection),
    /// `server.stream_stall_timeout` (30s: a stream whose client stops reading is ended).
    pub server: ServerConfig,
    /// Storage: `database.url` defaults to the embedded SQLite file `users.db`.
    pub database: DatabaseConfig,
    /// Logging: `log.level` (info), `log.format` (json).
    pub log: LogConfig,
    /// The local Consul agent: `consul.address` (`http://127.0.0.1:8500`), `consul.datacenter`, `consul.token`.
    pub consul: ConsulConfig,
    /// This instance in Consul: `registration.enabled` (false), `registration.service` (`users`), ….
    pub registration: RegistrationConfig,
    /// Traces: `telemetry.otlp_endpoint` (none: no export; e.g. `http://jaeger:4317`,
    /// env `USERS_TELEMETRY__OTLP_ENDPOINT`), `telemetry.service_name` (users),
    /// `telemetry.sampling_ratio` (1.0), `telemetry.export_timeout` (3s).
    pub telemetry: TelemetryConfig,
    /// Prometheus `GET /metrics`: `admin.host` (127.0.0.1), `admin.port` (9051).
    pub admin: AdminConfig,
    /// Who may call (see [`platform::auth`]): `auth.mode` (`jwt`; `none` runs open with a
    /// WARN), `auth.jwks_file`, `auth.issuer`, `auth.audience` (unset: business calls are
    /// refused UNAUTHENTICATED), `auth.algorithms` (`["EdDSA", "ES256", "RS256"]`),
    /// `auth.leeway` (30s), `auth.jwks_refresh` (5s), `auth.reflection` (`open`),
    /// `auth.default_scopes` (`[]`: any valid token), `auth.scopes.<Method>`.
    pub auth: AuthConfig,
    /// Per-method, per-caller quotas (see [`platform::server::rate_limit`]): `rate_limit.default`
    /// and `rate_limit.methods.<Method>` (`"N/s"` or `"N/m"`; unset: off),
    /// `rate_limit.max_callers` (10000).
    pub rate_limit: RateLimitConfig,
    /// Test-only fault knobs, off by default and refused unless `testing.enabled = true`:
    /// `testing.fail_ratio` (0.0; e.g. 0.3 answers 30 % of calls UNAVAILABLE),
    /// `testing.delay_ratio` (0.0) of calls held `testing.delay` (0s) first. For system
    /// tests and benches of the client's resilience only.
    pub testing: TestingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::on_port(50051),
            database: DatabaseConfig::at("sqlite://users.db?mode=rwc".parse().expect("a valid literal")),
            log: LogConfig::default(),
            consul: ConsulConfig::default(),
            registration: RegistrationConfig::for_service("users"),
            telemetry: TelemetryConfig::for_service("users"),
            admin: AdminConfig::on_port(9051),
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            testing: TestingConfig::default(),
        }
    }
}

impl Config {
    /// Loads the layers (see [`platform::config::load`]) with the `USERS_` prefix, then
    /// checks the rules across keys ([`AuthConfig::check`]);
    /// Kubernetes' service-link variables (`USERS_SERVICE_HOST`, `USERS_PORT`, …) are ignored.
    ///
    /// # Errors
    /// One-line [`ConfigError`] naming the bad key and its source.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        platform::config::load_checked("USERS_", file, |config: &Self| config.auth.check())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_file_and_the_readme_table_give_what_config_default_says() {
        testkit::assert_defaults_documented(&Config::default(), env!("CARGO_MANIFEST_DIR"), "users");
    }
}
