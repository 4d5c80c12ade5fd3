//! The orders service's configuration: defaults, then `--config` TOML, then `ORDERS_*` env vars.

use std::path::Path;

use platform::{
    auth::AuthConfig,
    client::ClientConfig,
    config::{ConfigError, DatabaseConfig, InvalidKey, LogConfig, ServerConfig},
    discovery::consul::ConsulConfig,
    discovery::registration::RegistrationConfig,
    observability::admin::AdminConfig,
    observability::traces::TelemetryConfig,
    server::rate_limit::RateLimitConfig,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Everything the orders service can be told; every key's default is listed in
/// `crates/orders/config.defaults.toml`, written from [`Config::default`] and checked by a test. Keys are nested TOML sections; the env
/// var for `users.endpoints` is `ORDERS_USERS__ENDPOINTS` (a list: `[http://a:1,http://b:2]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener: `server.host` (127.0.0.1), `server.port` (50052), `server.drain_period`
    /// (1s lame duck after SIGTERM), `server.shutdown_grace` (10s),
    /// `server.max_concurrent_requests` (1024; beyond it calls are answered UNAVAILABLE),
    /// `server.http2_keepalive_interval` (2h; `0s` off), `server.http2_keepalive_timeout` (20s).
    /// Limits: `server.http2_max_concurrent_streams` (256 per connection),
    /// `server.max_connections` (768), `server.max_open_streams` (1024 streaming calls),
    /// `server.idle_timeout` (5m without an open call closes a connection),
    /// `server.stream_stall_timeout` (30s: a stream whose client stops reading is ended).
    pub server: ServerConfig,
    /// Storage: `database.url` defaults to the embedded SQLite file `orders.db`.
    pub database: DatabaseConfig,
    /// Logging: `log.level` (info), `log.format` (json).
    pub log: LogConfig,
    /// Traces: `telemetry.otlp_endpoint` (none: no export; e.g. `http://jaeger:4317`,
    /// env `ORDERS_TELEMETRY__OTLP_ENDPOINT`), `telemetry.service_name` (orders),
    /// `telemetry.sampling_ratio` (1.0), `telemetry.export_timeout` (3s).
    pub telemetry: TelemetryConfig,
    /// Prometheus `GET /metrics`: `admin.host` (127.0.0.1), `admin.port` (9052).
    pub admin: AdminConfig,
    /// The users service: `users.resolver` (`static`, `consul` or `dns`),
    /// `users.endpoints` (`["http://127.0.0.1:50051"]`), `users.consul_service` (`users`),
    /// `users.timeout` (1s deadline per call), retries, budget and outlier detection:
    /// see [`ClientConfig`].
    pub users: ClientConfig,
    /// The local Consul agent: `consul.address` (`http://127.0.0.1:8500`), `consul.datacenter`, `consul.token`.
    pub consul: ConsulConfig,
    /// This instance in Consul: `registration.enabled` (false), `registration.service` (`orders`), ….
    pub registration: RegistrationConfig,
    /// ListOrders paging.
    pub paging: PagingConfig,
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
}

/// ListOrders paging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingConfig {
    /// Key that signs page tokens (`paging.token_secret`), a secret: never logged. Every
    /// replica behind one address must share it, or a token from one is refused by
    /// another. Unset or empty (the default) means a random key per process: fine for
    /// one replica.
    #[serde(with = "platform::config::optional_secret")]
    pub token_secret: Option<SecretString>,
    /// Page size when the request says 0 (`paging.default_page_size`, 50; 1 to
    /// `max_page_size`).
    pub default_page_size: u32,
    /// Largest page size a request may ask for (`paging.max_page_size`, 1000; at least 1).
    pub max_page_size: u32,
}

impl PagingConfig {
    /// The rules across its keys: both sizes at least 1, the default at most the maximum.
    ///
    /// # Errors
    /// [`InvalidKey`] naming the key that breaks one.
    pub fn check(&self) -> Result<(), InvalidKey> {
        let invalid = |key, reason: String| Err(InvalidKey { key, reason });
        if self.max_page_size == 0 {
            return invalid("paging.max_page_size", "must be at least 1".to_owned());
        }
        if self.default_page_size == 0 {
            return invalid("paging.default_page_size", "must be at least 1".to_owned());
        }
        if self.default_page_size > self.max_page_size {
            let reason =
                format!("{} is more than paging.max_page_size ({})", self.default_page_size, self.max_page_size);
            return invalid("paging.default_page_size", reason);
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::on_port(50052),
            database: DatabaseConfig::at("sqlite://orders.db?mode=rwc".parse().expect("a valid literal")),
            log: LogConfig::default(),
            telemetry: TelemetryConfig::for_service("orders"),
            admin: AdminConfig::on_port(9052),
            // `users.consul_service` defaults to `users`, used once `users.resolver = "consul"`.
            users: ClientConfig::for_upstream("users", vec!["http://127.0.0.1:50051".parse().expect("a valid URI")]),
            consul: ConsulConfig::default(),
            registration: RegistrationConfig::for_service("orders"),
            paging: PagingConfig { token_secret: None, default_page_size: 50, max_page_size: 1000 },
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

impl Config {
    /// Loads the layers (see [`platform::config::load`]) with the `ORDERS_` prefix, then
    /// checks the rules across keys ([`PagingConfig::check`]); Kubernetes' service-link
    /// variables (`ORDERS_SERVICE_HOST`, `ORDERS_PORT`, …) are ignored.
    ///
    /// # Errors
    /// One-line [`ConfigError`] naming the bad key and its source.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        platform::config::load_checked("ORDERS_", file, |config: &Self| {
            config.paging.check()?;
            config.auth.check()
        })
    }
}

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use std::time::Duration;

    use platform::client::ResolverConfig;

    use super::*;

    /// The error, as text, of [`Config::load`] of an `orders.toml` holding `toml` (in a
    /// [`figment::Jail`]: a directory of its own).
    fn refusal_of_file(toml: &str) -> String {
        let mut error = String::new();
        figment::Jail::expect_with(|jail| {
            jail.create_file("orders.toml", toml)?;
            error = Config::load(Some(Path::new("orders.toml"))).expect_err("refused").to_string();
            Ok(())
        });
        error
    }

    #[test]
    fn the_defaults_file_and_the_readme_table_give_what_config_default_says() {
        testkit::assert_defaults_documented(&Config::default(), env!("CARGO_MANIFEST_DIR"), "orders");
    }

    #[test]
    fn the_readme_example_env_vars_set_the_resolver_a_method_timeout_and_max_attempts() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ORDERS_USERS__RESOLVER", "consul");
            jail.set_env("ORDERS_USERS__METHOD_TIMEOUTS__GETUSERBYEMAIL", "300ms");
            jail.set_env("ORDERS_USERS__RETRY_POLICY__MAXATTEMPTS", "4");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert!(matches!(config.users.resolver, ResolverConfig::Consul { .. }), "{:?}", config.users.resolver);
            assert_eq!(config.users.timeout_of("GetUserByEmail"), Duration::from_millis(300));
            assert_eq!(config.users.retry_policy.max_attempts, 4);
            assert_eq!(config.users.retry_policy.initial_backoff, Duration::from_millis(25), "others keep defaults");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_retryable_code_is_a_config_error_naming_the_key() {
        let error = refusal_of_file("[users.retry_policy]\nretryableStatusCodes = [\"BUSY\"]\n");
        assert!(error.contains("users.retry_policy.retryableStatusCodes") && error.contains("BUSY"), "{error}");
    }

    #[test]
    fn an_https_users_endpoint_without_a_tls_section_is_refused_at_load_naming_the_key_and_the_variable() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ORDERS_USERS__ENDPOINTS", "[https://users.internal:50051]");
            let error = Config::load(None).expect_err("no TLS settings to speak it with").to_string();
            assert!(error.contains("`users`") && error.contains("`endpoints`"), "{error}");
            assert!(error.contains("ORDERS_USERS__ENDPOINTS"), "{error}");
            assert!(error.contains("needs the `tls` section") && !error.contains('\n'), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_consul_resolver_without_a_service_is_refused_at_load_naming_the_key() {
        let error = refusal_of_file("[users]\nresolver = \"consul\"\nconsul_service = \"\"\n");
        assert!(error.contains("users") && error.contains("consul_service"), "{error}");
    }
}
