//! Typed, layered configuration: defaults in code, then an optional TOML file, then environment variables.
//! Every value is parsed into its ready type here, at load: a bad one stops the service
//! before it starts, with one line naming the key and where it came from.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    num::{NonZeroU32, NonZeroUsize},
    path::Path,
    str::FromStr,
    time::Duration,
};

use figment::{
    Figment, Metadata,
    providers::{Env, Format, Serialized, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};

use crate::transport::tls::ServerTls;

/// Loads a service's configuration `T` from three layers, later ones winning:
/// `T::default()`, then the TOML file at `file` (if given), then environment
/// variables named `{prefix}{SECTION}__{KEY}` (for example `ORDERS_SERVER__PORT=6000`;
/// `__` separates nesting levels, names are case-insensitive).
///
/// The variables Kubernetes injects for a Service whose name starts with the prefix's
/// service (`USERS_SERVICE_HOST`, `USERS_PORT=tcp://…`, … for a Service `users`; see
/// [`is_kubernetes_service_link`]) are not config and are skipped; any other unknown
/// `{prefix}*` variable is an error.
///
/// # Errors
/// [`ConfigError`] when the file is missing or unreadable, or a value has the wrong
/// type; its message names the key and the layer it came from (file path or env var).
pub fn load<T>(prefix: &str, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
    load_checked(prefix, file, |_: &T| Ok(()))
}

/// [`load`], then `check` for rules across keys (such as `paging.default_page_size`
/// at most `paging.max_page_size`); a broken rule is reported like a bad value, naming
/// the key [`InvalidKey`] blames and the layer that set it.
///
/// # Errors
/// As [`load`], and when `check` refuses.
pub fn load_checked<T>(
    prefix: &str,
    file: Option<&Path>,
    check: impl FnOnce(&T) -> Result<(), InvalidKey>,
) -> Result<T, ConfigError>
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
    let env_prefix = prefix.to_owned();
    let env = Env::prefixed(prefix)
        .filter(move |key| {
            let value = std::env::var(format!("{env_prefix}{key}")).unwrap_or_default();
            !is_kubernetes_service_link(key.as_str(), &value)
        })
        .split("__");
    let figment = figment.merge(env);
    let config: T = figment.extract().map_err(|e| ConfigError(describe(&e, prefix)))?;
    check(&config).map_err(|invalid| {
        let path: Vec<&str> = invalid.key.split('.').collect();
        let source = source_of(figment.find_metadata(invalid.key), &path, prefix);
        ConfigError(format!("invalid config key `{}` from {source}: {}", invalid.key, invalid.reason))
    })?;
    Ok(config)
}

/// Whether the env var `{prefix}{key}` (with `key` the part after the prefix) is one
/// of the service-link variables Kubernetes injects into every pod for each Service
/// in the namespace (Kubernetes docs, "Service > Discovering services > Environment
/// variables"; kubelet `envvars.go`). For a Service `users` with a port named `grpc`:
/// `USERS_SERVICE_HOST=10.0.0.1`, `USERS_SERVICE_PORT=50051`,
/// `USERS_SERVICE_PORT_GRPC=50051`, `USERS_PORT=tcp://10.0.0.1:50051`,
/// `USERS_PORT_50051_TCP=tcp://10.0.0.1:50051`, `USERS_PORT_50051_TCP_PROTO=tcp`,
/// `USERS_PORT_50051_TCP_PORT=50051`, `USERS_PORT_50051_TCP_ADDR=10.0.0.1`. A Service
/// whose name extends the prefix (`users-db`) injects the same with the rest of its
/// name in front (`USERS_DB_SERVICE_HOST`), so that is matched too.
///
/// Names alone could hide a typo (`USERS_SERVER_PORT` looks like the link of a Service
/// `users-server`), so the `*PORT*` forms must also carry the value Kubernetes gives
/// them (a port number, `tcp://…`, a protocol name). Nested config keys contain `__`;
/// these never do.
pub fn is_kubernetes_service_link(key: &str, value: &str) -> bool {
    let key = key.to_ascii_uppercase();
    if key.contains("__") {
        return false;
    }
    let is_port = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    let is_protocol = |p: &str| matches!(p, "TCP" | "UDP" | "SCTP");
    let is_link_url = |v: &str| v.split_once("://").is_some_and(|(proto, _)| is_protocol(&proto.to_ascii_uppercase()));
    // `[NAME_]SERVICE_HOST`, `[NAME_]SERVICE_PORT[_PORTNAME]`, `[NAME_]PORT[_N_PROTO[_FIELD]]`.
    let words: Vec<&str> = key.split('_').collect();
    (0..words.len()).any(|start| match &words[start..] {
        ["SERVICE", "HOST"] => !value.is_empty(),
        ["SERVICE", "PORT", ..] => is_port(value),
        ["PORT"] => is_link_url(value),
        ["PORT", n, proto] => is_port(n) && is_protocol(proto) && is_link_url(value),
        ["PORT", n, proto, "PROTO"] => is_port(n) && is_protocol(proto) && value.eq_ignore_ascii_case(proto),
        ["PORT", n, proto, "PORT"] => is_port(n) && is_protocol(proto) && value == *n,
        ["PORT", n, proto, "ADDR"] => is_port(n) && is_protocol(proto) && !value.is_empty(),
        _ => false,
    })
}

/// One line per figment error: what is wrong, at which key, from which source.
fn describe(error: &figment::Error, prefix: &str) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() { "(root)".to_owned() } else { e.path.join(".") };
            let path: Vec<&str> = e.path.iter().map(String::as_str).collect();
            let source = source_of(e.metadata.as_ref(), &path, prefix);
            format!("invalid config key `{key}` from {source}: {}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The layer a value at `path` came from: `default`, the file, or the env var's name.
fn source_of(metadata: Option<&Metadata>, path: &[&str], prefix: &str) -> String {
    metadata
        .map(|m| match &m.source {
            Some(source) => format!("{} ({source})", m.name),
            // Figment names the env provider, not the variable: find the variables that
            // set this key or, for an unknown section, a key under it.
            None if m.name.contains("environment") => {
                let key = format!("{prefix}{}", path.join("__")).to_uppercase();
                let mut names: Vec<String> = std::env::vars_os()
                    .filter_map(|(name, _)| name.into_string().ok())
                    .filter(|name| {
                        let upper = name.to_uppercase();
                        upper == key || upper.starts_with(&format!("{key}__"))
                    })
                    .collect();
                names.sort();
                if names.is_empty() {
                    names.push(key)
                }
                format!("environment variable {}", names.join(", "))
            }
            None => m.name.to_string(),
        })
        .unwrap_or_else(|| "unknown source".to_owned())
}

/// A rule across keys that a loaded config breaks (see [`load_checked`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKey {
    /// The dotted key to blame, e.g. `paging.default_page_size`.
    pub key: &'static str,
    /// Why, e.g. `60 is more than paging.max_page_size (50)`.
    pub reason: String,
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

/// Serde helpers for a `Duration` that must be more than zero (a pool acquire timeout,
/// an interval), written like humantime (`"2s"`, `"150ms"`). Use as
/// `#[serde(with = "platform::config::positive_duration")]`.
pub mod positive_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer, de::Error};

    /// Writes `duration` like `"2s"`.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(duration, serializer)
    }

    /// Reads a humantime duration and refuses `0s`.
    ///
    /// # Errors
    /// When the text is not a duration, or is zero.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let duration: Duration = humantime_serde::deserialize(deserializer)?;
        if duration.is_zero() {
            return Err(D::Error::custom("must be more than 0s"));
        }
        Ok(duration)
    }
}

/// Serde helpers for an optional secret (`consul.token`, `paging.token_secret`): an
/// empty string reads as `None`; a set secret is written as `"[redacted]"`, so a
/// serialized config never shows it (defaults hold no secrets, so nothing is lost).
/// Use as `#[serde(with = "platform::config::optional_secret")]`.
pub mod optional_secret {
    use std::fmt;

    use secrecy::{ExposeSecret, SecretString};
    use serde::{
        Deserializer, Serializer,
        de::{Error, Visitor},
    };

    /// Writes `None` as nothing and a secret as `"[redacted]"`.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(secret: &Option<SecretString>, serializer: S) -> Result<S::Ok, S::Error> {
        match secret {
            None => serializer.serialize_none(),
            Some(_) => serializer.serialize_str("[redacted]"),
        }
    }

    /// Reads a string; empty means `None`. An env value figment reads as a number or a
    /// bool (`12345`, `true`) is taken as its text; quote it (`"0123"`) to keep
    /// leading zeros.
    ///
    /// # Errors
    /// When the value is a list or a table.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SecretString>, D::Error> {
        let secret = deserializer.deserialize_any(SecretText)?;
        Ok(secret.filter(|s| !s.expose_secret().is_empty()))
    }

    /// Accepts any scalar as the secret's text; never quotes what it read in an error.
    struct SecretText;

    impl<'de> Visitor<'de> for SecretText {
        type Value = Option<SecretString>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(text)))
        }

        fn visit_u64<E: Error>(self, number: u64) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(number.to_string())))
        }

        fn visit_i64<E: Error>(self, number: i64) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(number.to_string())))
        }

        fn visit_f64<E: Error>(self, number: f64) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(number.to_string())))
        }

        fn visit_bool<E: Error>(self, value: bool) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(value.to_string())))
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_any(self)
        }
    }
}

/// Which database engine a URL names; some statements differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (`postgres://` or `postgresql://`): production and the integration tests.
    Postgres,
    /// SQLite (`sqlite:`): the embedded default, for `make demo` and a laptop.
    Sqlite,
}

impl Backend {
    /// The backend a URL scheme names (`postgres`, `postgresql`, `sqlite`), if any.
    pub fn of_scheme(scheme: &str) -> Option<Self> {
        match scheme {
            "postgres" | "postgresql" => Some(Self::Postgres),
            "sqlite" => Some(Self::Sqlite),
            _ => None,
        }
    }

    /// The OpenTelemetry `db.system` value: `postgresql` or `sqlite`.
    pub fn system(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::Sqlite => "sqlite",
        }
    }
}

/// A sqlx database URL, parsed at load: it knows its [`Backend`], and its password
/// (in the userinfo, or a `password=` query parameter) is a secret. `Display`,
/// `Debug` and `Serialize` show it with the password replaced by `***`; only
/// [`DatabaseUrl::expose_secret`] gives the URL to connect with.
#[derive(Clone)]
pub struct DatabaseUrl {
    backend: Backend,
    url: SecretString,
    redacted: String,
}

/// Why a text is not a [`DatabaseUrl`]; never quotes the text (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseUrlError {
    /// Not a URL at all.
    #[error("not a URL ({0}); expected postgres://user:password@host:port/db or sqlite://file.db?mode=rwc")]
    Malformed(String),
    /// A URL of another database.
    #[error("the scheme must be postgres://, postgresql:// or sqlite:, not `{0}:`")]
    UnknownScheme(String),
}

impl DatabaseUrl {
    /// Which engine it names.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL with its password, for the driver only: never log it.
    pub fn expose_secret(&self) -> &str {
        self.url.expose_secret()
    }
}

impl FromStr for DatabaseUrl {
    type Err = DatabaseUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut url = url::Url::parse(text).map_err(|e| DatabaseUrlError::Malformed(e.to_string()))?;
        let backend = Backend::of_scheme(url.scheme())
            .ok_or_else(|| DatabaseUrlError::UnknownScheme(url.scheme().chars().take(20).collect()))?;
        let secret_query = |key: &str| matches!(key, "password" | "sslpassword");
        let redacted = if url.password().is_some() || url.query_pairs().any(|(k, _)| secret_query(&k)) {
            if url.password().is_some() {
                // Only fails for URLs that cannot have a password; this one has one.
                let _ = url.set_password(Some("***"));
            }
            if url.query().is_some() {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if secret_query(&k) { "***".to_owned() } else { v.into_owned() };
                        (k.into_owned(), v)
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        } else {
            text.to_owned()
        };
        Ok(Self { backend, url: SecretString::from(text), redacted })
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted)
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = SecretString::deserialize(deserializer)?;
        text.expose_secret().parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for DatabaseUrl {
    /// The redacted form: a serialized config never holds the password (the defaults,
    /// the only config we serialize, have none).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted)
    }
}

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
    /// Calls one client may have open at once on one HTTP/2 connection, advertised as
    /// SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 6.5.2; default 256, at least 1); a
    /// client queues calls beyond it or opens another connection.
    pub http2_max_concurrent_streams: NonZeroU32,
    /// Streams a client may reset before the server has taken them (default 256, at
    /// least 1); one more and the connection is closed with GOAWAY ENHANCE_YOUR_CALM.
    /// The guard against HTTP/2 "rapid reset" (CVE-2023-44487): such streams no longer
    /// count against `http2_max_concurrent_streams` but still wait in memory. h2's own
    /// default, 20, closed connections of well-behaved clients under load: a hedging
    /// client cancels its losers (gRFC A6), often before a busy server has taken them,
    /// and every call on the connection failed (docs/perf.md, section 13).
    pub http2_max_pending_accept_reset_streams: NonZeroU32,
    /// Connections open at once (default 768, at least 1; keep it under the process's
    /// open-file limit, `ulimit -n`). One beyond it is closed as soon as it is accepted,
    /// so its client tries another replica.
    pub max_connections: NonZeroU32,
    /// Streaming calls (ListOrders, WatchOrder, health Watch) open at once in this
    /// process (default 1024, at least 1); one beyond it is answered UNAVAILABLE.
    pub max_open_streams: NonZeroU32,
    /// A connection with no call open for this long is closed, e.g. `"5m"` (the
    /// default; more than 0s): a silent socket, an HTTP/2 connection that sends only
    /// its preface or PINGs, an HTTP/1.1 request whose headers never end. (HTTP/1.1
    /// headers must also arrive within hyper's fixed 30 s header-read timeout.)
    #[serde(with = "positive_duration")]
    pub idle_timeout: Duration,
    /// How long a streaming response may wait for its client to read the next message
    /// before the stream is ended with RESOURCE_EXHAUSTED and its place, handler and
    /// buffered messages are freed, e.g. `"30s"` (the default; more than 0s). A stream
    /// with nothing to send (a quiet WatchOrder) is not waiting and never times out.
    #[serde(with = "positive_duration")]
    pub stream_stall_timeout: Duration,
    /// Browser origins allowed to call this port over Connect or gRPC-Web (CORS), each
    /// `scheme://host[:port]`, e.g. `["https://app.example.com"]`; empty (the default)
    /// sends no CORS headers, so browsers on other origins are refused.
    #[serde(default, with = "origins")]
    pub cors_allowed_origins: Vec<http::HeaderValue>,
    /// TLS on this port, with client certificates (mTLS): `server.tls.cert_file`,
    /// `server.tls.key_file`, `server.tls.client_ca_file`, `server.tls.require_client_cert`
    /// (see [`ServerTls`]); unset (the default): plaintext. The files are read at load
    /// and again when they change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
}

/// `server.cors_allowed_origins`: origins checked at load (`http://` or `https://`,
/// host, optional port, nothing after), kept as ready header values.
mod origins {
    use http::HeaderValue;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(origins: &[HeaderValue], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(origins.iter().map(|origin| origin.to_str().unwrap_or_default()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<HeaderValue>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .into_iter()
            .map(|origin| {
                let parsed = url::Url::parse(&origin).ok().filter(|url| {
                    matches!(url.scheme(), "http" | "https")
                        && url.host().is_some()
                        && url.path() == "/"
                        && !origin.ends_with('/')
                        && url.query().is_none()
                        && url.username().is_empty()
                });
                parsed.and_then(|_| HeaderValue::try_from(origin.as_str()).ok()).ok_or_else(|| {
                    let shown: String = origin.chars().take(40).collect();
                    D::Error::custom(format!("{shown:?} is not an origin like https://app.example.com"))
                })
            })
            .collect()
    }
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
            http2_max_concurrent_streams: NonZeroU32::new(256).expect("256 is not zero"),
            http2_max_pending_accept_reset_streams: NonZeroU32::new(256).expect("256 is not zero"),
            max_connections: NonZeroU32::new(768).expect("768 is not zero"),
            max_open_streams: NonZeroU32::new(1024).expect("1024 is not zero"),
            idle_timeout: Duration::from_secs(5 * 60),
            stream_stall_timeout: Duration::from_secs(30),
            cors_allowed_origins: Vec::new(),
            tls: None,
        }
    }

    /// The socket address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// The service's own database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `database.url`: `postgres://user:pass@host:port/db` in production, or
    /// `sqlite://path.db?mode=rwc` for the embedded default. Its password is never logged.
    pub url: DatabaseUrl,
    /// Upper bound of pooled connections (`database.max_connections`, at least 1).
    pub max_connections: NonZeroU32,
    /// How long a query waits for a pooled connection before it fails, e.g. `"2s"`
    /// (`database.acquire_timeout`, more than 0s).
    #[serde(with = "positive_duration")]
    pub acquire_timeout: Duration,
    /// How often the health probe checks the database, e.g. `"500ms"` (the default;
    /// `database.health_check_interval`, more than 0s). A call whose connection fails,
    /// or that has waited `health_check_timeout` for one, makes it check at once too. With the timeout below it bounds how late an outage
    /// is noticed: `health_check_interval + health_check_timeout`.
    #[serde(with = "positive_duration")]
    pub health_check_interval: Duration,
    /// How long one health check (a ping on the probe's own connection, and a connect
    /// first when that has failed) may take before the database counts as down, e.g.
    /// `"250ms"` (the default; `database.health_check_timeout`, more than 0s). While it
    /// is down, the service answers NOT_SERVING and its calls that need the database
    /// fail UNAVAILABLE at once. Raise it for a database more than ~50 ms of round
    /// trips away (a TLS connect takes several).
    #[serde(with = "positive_duration")]
    pub health_check_timeout: Duration,
    /// A pooled connection idle for at least this long is pinged (one round trip) before
    /// a query uses it, and replaced if it died; one used more recently is handed out as
    /// it is. `"1s"` by default (pgx's pool does the same), `"0s"` pings before every
    /// query (`database.ping_after_idle`). A connection that dies within this time of its
    /// last use fails the one query that next uses it (UNAVAILABLE, which clients retry).
    #[serde(with = "humantime_serde")]
    pub ping_after_idle: Duration,
    /// A pooled connection opened this long ago is closed when it would next be handed
    /// out, and a new one opened: memory a backend has accumulated is returned, and a
    /// replaced database server or load balancer is reached in the end. `"30m"` by default
    /// (sqlx's `max_lifetime`, pgx's `MaxConnLifetime`; `database.max_lifetime`, more than 0s).
    #[serde(with = "positive_duration")]
    pub max_lifetime: Duration,
    /// A pooled connection not handed out for this long is closed, so a quiet service
    /// holds no database backends; checked every minute, or every `idle_timeout` when
    /// that is shorter. `"10m"` by default (sqlx's `idle_timeout`, pgx's
    /// `MaxConnIdleTime`; `database.idle_timeout`, more than 0s).
    #[serde(with = "positive_duration")]
    pub idle_timeout: Duration,
}

/// `database.max_connections` unless configured.
const DEFAULT_MAX_CONNECTIONS: NonZeroU32 = NonZeroU32::new(10).expect("10 is not zero");

impl DatabaseConfig {
    /// Defaults for a database at `url`: 10 connections, 2s acquire timeout, a health
    /// check every 500ms that may take 250ms (an outage is noticed within 750ms), a ping
    /// before a query on a connection idle for 1s or more, connections replaced after
    /// 30 minutes and closed after 10 minutes idle.
    pub fn at(url: DatabaseUrl) -> Self {
        Self {
            url,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: Duration::from_secs(2),
            health_check_interval: Duration::from_millis(500),
            health_check_timeout: Duration::from_millis(250),
            ping_after_idle: Duration::from_secs(1),
            max_lifetime: Duration::from_secs(30 * 60),
            idle_timeout: Duration::from_secs(10 * 60),
        }
    }
}

/// Log level and format.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directives, e.g. `"info"` or `"info,sqlx=warn"`, checked at
    /// load. `RUST_LOG`, when set, wins over this.
    #[serde(deserialize_with = "log_filter")]
    pub level: String,
    /// `json` (one object per line, the default) or `pretty` for a terminal.
    pub format: LogFormat,
    /// How many log lines may wait for the writer thread (default 8,192; at ~0.5 KiB a
    /// line, ~4 MiB at most). When stdout is slower than the lines come, lines beyond
    /// this are dropped, not waited for, and counted in `log_lines_dropped_total`.
    pub buffered_lines: NonZeroUsize,
}

/// `log.level` at load: directives `tracing_subscriber::EnvFilter` accepts.
fn log_filter<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let directives = String::deserialize(deserializer)?;
    tracing_subscriber::EnvFilter::try_new(&directives).map_err(serde::de::Error::custom)?;
    Ok(directives)
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: LogFormat::Json, buffered_lines: DEFAULT_BUFFERED_LOG_LINES }
    }
}

/// `log.buffered_lines`' default.
pub const DEFAULT_BUFFERED_LOG_LINES: NonZeroUsize = NonZeroUsize::new(8_192).expect("not zero");

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable, multi-line.
    Pretty,
}

/// Tests: `defaults` with the values in `json` laid over them, as a later layer of
/// [`load`] lays its values (the error as text).
///
/// # Errors
/// When the merged values do not deserialize as a `T`.
#[cfg(test)]
pub(crate) fn overlaid<T: Serialize + DeserializeOwned>(defaults: T, json: serde_json::Value) -> Result<T, String> {
    Figment::from(Serialized::defaults(defaults)).merge(Serialized::defaults(json)).extract().map_err(|e| e.to_string())
}

/// Tests: the error `load` returns, as text, in a [`figment::Jail`] (a directory of its
/// own, the environment restored after) with `variable` set to `value`.
///
/// # Panics
/// When `load` succeeds.
#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large; that is its API.
#[allow(clippy::result_large_err)]
pub(crate) fn refusal_with_env<T: fmt::Debug>(
    variable: &str,
    value: &str,
    load: impl FnOnce() -> Result<T, ConfigError>,
) -> String {
    let mut error = String::new();
    figment::Jail::expect_with(|jail| {
        jail.set_env(variable, value);
        error = load().expect_err(variable).to_string();
        Ok(())
    });
    error
}

/// Tests: [`refusal_with_env`] of [`load`] of `T` with prefix `SAMPLE_` and no file.
///
/// # Panics
/// When the load succeeds.
#[cfg(test)]
pub(crate) fn sample_refusal<T>(variable: &str, value: &str) -> String
where
    T: fmt::Debug + Default + Serialize + DeserializeOwned,
{
    refusal_with_env(variable, value, || load::<T>("SAMPLE_", None))
}

/// Tests: asserts [`sample_refusal`] names both `key` and `variable`; returns the error.
///
/// # Panics
/// When the load succeeds or the error does not name them.
#[cfg(test)]
pub(crate) fn assert_sample_refused<T>(variable: &str, value: &str, key: &str) -> String
where
    T: fmt::Debug + Default + Serialize + DeserializeOwned,
{
    let error = sample_refusal::<T>(variable, value);
    assert!(error.contains(key) && error.contains(variable), "{error}");
    error
}

/// Tests: a config of one `server` section (port 7000 by default), as both services' configs have.
#[cfg(test)]
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Sample {
    pub(crate) server: ServerConfig,
}

#[cfg(test)]
impl Default for Sample {
    fn default() -> Self {
        Self { server: ServerConfig::on_port(7000) }
    }
}

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

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
        assert_sample_refused::<Sample>("SAMPLE_SERVER__PORT", "seventy", "server.port");
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

    /// A service config with a database, as the services have.
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct WithDatabase {
        server: ServerConfig,
        database: DatabaseConfig,
    }

    impl Default for WithDatabase {
        fn default() -> Self {
            Self {
                server: ServerConfig::on_port(7000),
                database: DatabaseConfig::at("sqlite://sample.db?mode=rwc".parse().expect("a database URL")),
            }
        }
    }

    /// What Kubernetes injects into every pod for a Service `name` with a port named
    /// `grpc` (kubelet's service-link env vars), here for cluster IP 10.0.0.1.
    fn kubernetes_service_links(name: &str, port: u16) -> Vec<(String, String)> {
        let name = name.to_uppercase().replace('-', "_");
        let url = format!("tcp://10.0.0.1:{port}");
        [
            ("SERVICE_HOST".to_owned(), "10.0.0.1".to_owned()),
            ("SERVICE_PORT".to_owned(), port.to_string()),
            ("SERVICE_PORT_GRPC".to_owned(), port.to_string()),
            ("PORT".to_owned(), url.clone()),
            (format!("PORT_{port}_TCP"), url),
            (format!("PORT_{port}_TCP_PROTO"), "tcp".to_owned()),
            (format!("PORT_{port}_TCP_PORT"), port.to_string()),
            (format!("PORT_{port}_TCP_ADDR"), "10.0.0.1".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (format!("{name}_{key}"), value))
        .collect()
    }

    #[test]
    fn kubernetes_service_link_variables_of_the_own_service_and_a_longer_named_one_are_ignored() {
        figment::Jail::expect_with(|jail| {
            for (key, value) in
                kubernetes_service_links("sample", 50051).into_iter().chain(kubernetes_service_links("sample-db", 5432))
            {
                jail.set_env(key, value);
            }
            jail.set_env("SAMPLE_SERVER__PORT", "7100");
            let sample: WithDatabase = load("SAMPLE_", None).map_err(|e| e.to_string())?;
            assert_eq!(sample.server.port, 7100, "real config still applies");
            Ok(())
        });
    }

    #[test]
    fn a_misspelt_key_still_fails_beside_kubernetes_variables() {
        figment::Jail::expect_with(|jail| {
            for (key, value) in kubernetes_service_links("sample", 50051) {
                jail.set_env(key, value);
            }
            jail.set_env("SAMPLE_SERVR__PORT", "7100");
            let error = load::<WithDatabase>("SAMPLE_", None).expect_err("servr is not a section").to_string();
            assert!(error.contains("servr") && error.contains("SAMPLE_SERVR__PORT"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_variable_named_like_a_service_link_but_without_its_value_is_not_ignored() {
        assert!(is_kubernetes_service_link("SERVER_PORT", "tcp://10.0.0.2:80"), "a Service `sample-server`");
        assert!(!is_kubernetes_service_link("SERVER_PORT", "7100"), "a typo of server__port");
        assert!(!is_kubernetes_service_link("PORT_80_TCP_PORT", "81"));
        assert!(!is_kubernetes_service_link("SERVICE_PORT", "grpc"));
        assert!(!is_kubernetes_service_link("SERVER__PORT", "7100"));
    }

    #[test]
    fn a_url_scheme_picks_the_backend() {
        let backend = |url: &str| url.parse::<DatabaseUrl>().map(|url| url.backend());
        assert_eq!(backend("postgres://u@h/db"), Ok(Backend::Postgres));
        assert_eq!(backend("postgresql://u@h/db"), Ok(Backend::Postgres));
        assert_eq!(backend("sqlite://x.db?mode=rwc"), Ok(Backend::Sqlite));
        assert_eq!(backend("sqlite::memory:"), Ok(Backend::Sqlite));
        assert!(backend("mysql://h/db").is_err());
        assert!(backend("users.db").is_err());
    }

    #[test]
    fn a_database_password_shows_only_to_the_driver() {
        let url: DatabaseUrl = "postgres://app:hunter2@db:5432/users?sslmode=require".parse().expect("a URL");
        assert_eq!(url.to_string(), "postgres://app:***@db:5432/users?sslmode=require");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(url.expose_secret().contains("hunter2"));
        let url: DatabaseUrl = "postgres://app@db/users?password=hunter2".parse().expect("a URL");
        assert!(!url.to_string().contains("hunter2"), "{url}");
    }

    #[test]
    fn a_bad_database_url_names_the_key_and_never_quotes_the_password() {
        let url = "mysql://app:hunter2@db/users";
        let error = assert_sample_refused::<WithDatabase>("SAMPLE_DATABASE__URL", url, "database.url");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn zero_or_unreadable_pool_settings_are_refused_at_load_naming_the_key() {
        for (variable, value, key) in [
            ("SAMPLE_DATABASE__MAX_CONNECTIONS", "0", "database.max_connections"),
            ("SAMPLE_DATABASE__ACQUIRE_TIMEOUT", "0s", "database.acquire_timeout"),
            ("SAMPLE_DATABASE__HEALTH_CHECK_INTERVAL", "0ms", "database.health_check_interval"),
            ("SAMPLE_DATABASE__HEALTH_CHECK_TIMEOUT", "0s", "database.health_check_timeout"),
            ("SAMPLE_DATABASE__MAX_LIFETIME", "0s", "database.max_lifetime"),
            ("SAMPLE_DATABASE__IDLE_TIMEOUT", "0m", "database.idle_timeout"),
            ("SAMPLE_DATABASE__IDLE_TIMEOUT", "ten minutes", "database.idle_timeout"),
        ] {
            assert_sample_refused::<WithDatabase>(variable, value, key);
        }
    }

    #[test]
    fn a_broken_rule_across_keys_names_the_key_and_the_layer_that_set_it() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SAMPLE_SERVER__PORT", "80");
            let check = |sample: &Sample| match sample.server.port {
                port if port < 1024 => Err(InvalidKey { key: "server.port", reason: format!("{port} is privileged") }),
                _ => Ok(()),
            };
            let error = load_checked("SAMPLE_", None, check).expect_err("privileged").to_string();
            assert!(error.contains("server.port") && error.contains("SAMPLE_SERVER__PORT"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_secret_of_digits_from_the_environment_is_read_as_its_text_and_empty_as_none() {
        #[derive(Debug, Default, Serialize, Deserialize)]
        struct WithSecret {
            #[serde(with = "optional_secret")]
            secret: Option<SecretString>,
        }
        figment::Jail::expect_with(|jail| {
            jail.set_env("SAMPLE_SECRET", "12345");
            let loaded: WithSecret = load("SAMPLE_", None).map_err(|e| e.to_string())?;
            assert_eq!(loaded.secret.as_ref().map(ExposeSecret::expose_secret), Some("12345"));
            jail.set_env("SAMPLE_SECRET", "");
            let loaded: WithSecret = load("SAMPLE_", None).map_err(|e| e.to_string())?;
            assert!(loaded.secret.is_none());
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error_not_a_silent_default() {
        let error = load::<Sample>("SAMPLE_", Some(Path::new("/nonexistent/svc.toml"))).expect_err("no file");
        assert!(error.to_string().contains("/nonexistent/svc.toml"));
    }
}
