//! Typed, layered configuration: defaults in code, then an optional TOML file, then environment variables.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    num::NonZeroU32,
    path::Path,
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Loads a service's configuration `T` from three layers, later ones winning:
/// `T::default()`, then the TOML file at `file` (if given), then environment
/// variables named `{prefix}{SECTION}__{KEY}` (for example `ORDERS_SERVER__PORT=6000`;
/// `__` separates nesting levels, names are case-insensitive).
///
/// # Errors
/// [`ConfigError`] when the file is missing or unreadable, or a value has the wrong
/// type; its message names the key and the layer it came from (file path or env var).
pub fn load<T>(prefix: &str, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        if !file.is_file() {
            return Err(ConfigError(format!("config file {} does not exist", file.display())));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    figment.merge(Env::prefixed(prefix).split("__")).extract().map_err(|e| ConfigError(describe(&e, prefix)))
}

/// One line per figment error: what is wrong, at which key, from which source.
fn describe(error: &figment::Error, prefix: &str) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() { "(root)".to_owned() } else { e.path.join(".") };
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(source) => format!("{} ({source})", m.name),
                    // Figment names the env provider, not the variable: rebuild its name.
                    None if m.name.contains("environment") => {
                        format!("environment variable {prefix}{}", e.path.join("__").to_uppercase())
                    }
                    None => m.name.to_string(),
                })
                .unwrap_or_else(|| "unknown source".to_owned());
            format!("invalid config key `{key}` from {source}: {}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A configuration that could not be loaded. `Display` is one line naming the key
/// and the source (file or environment variable) of the bad value.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where and how the gRPC server listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Interface to bind. Default `127.0.0.1`; use `0.0.0.0` inside a container.
    pub host: IpAddr,
    /// TCP port; `0` picks a free one (see the app's `port()`).
    pub port: u16,
    /// Lame-duck period after a shutdown signal, e.g. `"5s"`: health already says
    /// NOT_SERVING and the instance has left Consul, but the listener still accepts,
    /// so calls routed here before clients noticed still succeed.
    #[serde(with = "humantime_serde")]
    pub drain_period: Duration,
    /// How long in-flight RPCs may run after the drain period, once the listener is
    /// closed, before they are cut, e.g. `"10s"`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Calls the application services may handle at once in this process (default
    /// 1024; at least 1). A call beyond it is answered UNAVAILABLE at once, so the
    /// client can retry another replica, instead of queueing until its deadline passes.
    /// Health checks and reflection are not counted. A streaming call holds its place
    /// until its response headers are sent.
    pub max_concurrent_requests: NonZeroU32,
    /// How long a connection may be idle before the server sends an HTTP/2 PING to
    /// check that the client is still there, e.g. `"2h"` (the default, grpc-go's
    /// server `keepalive.ServerParameters.Time`); `"0s"` sends none.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    /// How long the server waits for a PING's acknowledgement before it closes the
    /// connection, e.g. `"20s"` (the default, grpc-go's `Timeout`).
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
}

impl ServerConfig {
    /// A loopback server config on `port`.
    pub fn on_port(port: u16) -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            drain_period: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            max_concurrent_requests: NonZeroU32::new(1024).expect("1024 is not zero"),
            http2_keepalive_interval: Duration::from_secs(2 * 60 * 60),
            http2_keepalive_timeout: Duration::from_secs(20),
        }
    }

    /// The socket address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// The service's own database.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// sqlx URL: `postgres://user:pass@host:port/db` in production, or
    /// `sqlite://path.db?mode=rwc` for the embedded default. Never logged.
    pub url: String,
    /// Upper bound of pooled connections.
    pub max_connections: u32,
    /// How long a query waits for a pooled connection before it fails, e.g. `"2s"`.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// How often the health check pings the database, e.g. `"2s"`.
    #[serde(with = "humantime_serde")]
    pub health_check_interval: Duration,
}

impl DatabaseConfig {
    /// Defaults for a database at `url`.
    pub fn at(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(2),
            health_check_interval: Duration::from_secs(2),
        }
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: show only its scheme.
        let scheme = self.url.split(':').next().unwrap_or_default();
        f.debug_struct("DatabaseConfig")
            .field("url", &format_args!("{scheme}://…"))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("health_check_interval", &self.health_check_interval)
            .finish()
    }
}

/// Log level and format.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directives, e.g. `"info"` or `"info,sqlx=warn"`.
    /// `RUST_LOG`, when set, wins over this.
    pub level: String,
    /// `json` (one object per line, the default) or `pretty` for a terminal.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: LogFormat::Json }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable, multi-line.
    Pretty,
}

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Sample {
        server: ServerConfig,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self { server: ServerConfig::on_port(7000) }
        }
    }

    #[test]
    fn env_overrides_defaults_with_double_underscore_nesting() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SAMPLE_SERVER__PORT", "7100");
            let sample: Sample = load("SAMPLE_", None).map_err(|e| e.to_string())?;
            assert_eq!(sample.server.port, 7100);
            Ok(())
        });
    }

    #[test]
    fn a_bad_env_value_names_the_key_and_the_variable() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SAMPLE_SERVER__PORT", "seventy");
            let error = load::<Sample>("SAMPLE_", None).expect_err("a word is not a port");
            let message = error.to_string();
            assert!(message.contains("server.port"), "{message}");
            assert!(message.contains("SAMPLE_SERVER__PORT"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn a_bad_file_value_names_the_key_and_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("svc.toml", "[server]\nshutdown_grace = \"soon\"\n")?;
            let error = load::<Sample>("SAMPLE_", Some(Path::new("svc.toml"))).expect_err("not a duration");
            let message = error.to_string();
            assert!(message.contains("server.shutdown_grace"), "{message}");
            assert!(message.contains("svc.toml"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error_not_a_silent_default() {
        let error = load::<Sample>("SAMPLE_", Some(Path::new("/nonexistent/svc.toml"))).expect_err("no file");
        assert!(error.to_string().contains("/nonexistent/svc.toml"));
    }
}
