//! How a service reaches one upstream: resolver, balancer, deadlines, retries, ejection.
//!
//! Values are checked while the config loads, so a bad one fails start-up with its key
//! named (figment reports the path) instead of surfacing on the first call.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use http::Uri;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use tonic::Code;

use crate::{auth::CallerToken, support::redact, transport::tls::ClientTls};

/// How a service reaches one of its upstreams. TOML keys are the field names of
/// the flat section (`resolver`, `endpoints`, `consul_service`, `consul_wait`,
/// `dns_name`, `dns_refresh`, `dns_nameserver`, `connect_timeout`, …); for orders' `users` upstream,
/// `ORDERS_USERS__RESOLVER=consul` sets `resolver`. The resolver keys are read into
/// the ready [`ResolverConfig`] at load: a bad one fails `Config::load` naming its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawClientConfig", into = "RawClientConfig")]
pub struct ClientConfig {
    /// Where endpoints come from (keys `resolver` and the keys of that resolver).
    pub resolver: ResolverConfig,
    /// How long to wait for a TCP connection to an endpoint, e.g. `"500ms"`.
    pub connect_timeout: Duration,
    /// `round_robin` (default) or `p2c_peak_ewma` (power of two choices over
    /// peak-EWMA latency times pending calls, tower's `PeakEwma`).
    pub balancer: BalancerKind,
    /// Default deadline of a call, e.g. `"1s"`. The deadline actually sent is the
    /// earliest of this (or `method_timeouts`), the caller's, and what remains of the
    /// call being served.
    pub timeout: Duration,
    /// Per-method deadlines by method name (`GetUserByEmail = "300ms"`), case-insensitive.
    pub method_timeouts: BTreeMap<String, Timeout>,
    /// Retries, with grpc-go's `retryPolicy` semantics and field names.
    pub retry_policy: RetryPolicy,
    /// Hedging per method by method name (`GetUserByEmail = { maxAttempts = 2,
    /// hedgingDelay = "20ms" }`), case-insensitive; a hedged method is not retried.
    pub hedging_policy: BTreeMap<String, HedgingPolicy>,
    /// The cap on retries and hedges across all calls.
    pub retry_budget: RetryBudget,
    /// Per-endpoint circuit breaking.
    pub outlier_detection: OutlierDetection,
    /// This service's own token, sent as `authorization: Bearer <token>` on every call
    /// to the upstream: `token` (a secret, never logged) or `token_file` (re-read when
    /// it changes, e.g. a projected service-account token); at most one of them.
    pub token: Option<CallerToken>,
    /// TLS to every endpoint, with this service's client certificate (mTLS):
    /// `tls.ca_file`, `tls.cert_file`, `tls.key_file`, `tls.server_name` (see
    /// [`ClientTls`]); unset (the default): plaintext, and `https://` endpoints are refused.
    pub tls: Option<ClientTls>,
    /// The values of the resolver keys the chosen resolver does not use, so the config
    /// serialises back to every key it was read from: figment layers file and env
    /// over the serialised defaults, and `ORDERS_USERS__RESOLVER=consul` alone must
    /// still find the default `consul_service`.
    unused: ResolverKeys,
}

/// Where an upstream's endpoints come from, checked at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverConfig {
    /// `resolver = "static"`: the `endpoints` list, each `http://host:port`.
    Static {
        /// `endpoints`: absolute `http://` URIs with a host and a port.
        endpoints: Vec<Uri>,
    },
    /// `resolver = "consul"`: the passing instances of a Consul service, followed with
    /// blocking queries (Consul API, "Blocking Queries").
    Consul {
        /// `consul_service`: the service name, not empty.
        service: String,
        /// `consul_wait`: longest wait of one blocking query, e.g. `"60s"`.
        wait: Duration,
    },
    /// `resolver = "dns"`: the A/AAAA records of a name, re-resolved periodically (a
    /// Kubernetes headless Service); see [`crate::discovery::dns`].
    Dns {
        /// `dns_name`: `host:port`, e.g. `users-headless.default.svc.cluster.local:50051`.
        name: String,
        /// `dns_refresh`: how often to resolve again, e.g. `"5s"`. An answer is cached
        /// for its records' TTL, so a change is seen within `refresh` + TTL.
        refresh: Duration,
        /// `dns_nameserver`: `ip:port` of the one nameserver to ask, e.g.
        /// `"10.96.0.10:53"`; unset (the default), the system's (`/etc/resolv.conf`).
        nameserver: Option<SocketAddr>,
    },
}

/// Every resolver key, as written in config.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResolverKeys {
    endpoints: Vec<Uri>,
    consul_service: String,
    consul_wait: Duration,
    dns_name: String,
    dns_refresh: Duration,
    dns_nameserver: Option<SocketAddr>,
}

impl ClientConfig {
    /// A static-list config with the given endpoints and the defaults documented on
    /// each field's type; switched to `resolver = "consul"`, it needs a `consul_service`.
    pub fn with_endpoints(endpoints: Vec<Uri>) -> Self {
        Self::for_upstream("", endpoints)
    }

    /// As [`ClientConfig::with_endpoints`], with `consul_service` defaulting to
    /// `upstream` (e.g. `users`) should the resolver be switched to Consul.
    pub fn for_upstream(upstream: &str, endpoints: Vec<Uri>) -> Self {
        Self {
            resolver: ResolverConfig::Static { endpoints },
            connect_timeout: Duration::from_millis(500),
            balancer: BalancerKind::RoundRobin,
            timeout: Duration::from_secs(1),
            method_timeouts: BTreeMap::new(),
            retry_policy: RetryPolicy::default(),
            hedging_policy: BTreeMap::new(),
            retry_budget: RetryBudget::default(),
            outlier_detection: OutlierDetection::default(),
            token: None,
            tls: None,
            unused: ResolverKeys {
                endpoints: Vec::new(),
                consul_service: upstream.to_owned(),
                consul_wait: Duration::from_secs(60),
                dns_name: String::new(),
                dns_refresh: Duration::from_secs(5),
                dns_nameserver: None,
            },
        }
    }

    /// The default deadline of `method` (the last segment of a gRPC path).
    pub fn timeout_of(&self, method: &str) -> Duration {
        self.method_timeouts
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(method))
            .map_or(self.timeout, |(_, timeout)| timeout.0)
    }

    /// The hedging policy of `method` (the last segment of a gRPC path), if any.
    pub fn hedging_of(&self, method: &str) -> Option<&HedgingPolicy> {
        self.hedging_policy.iter().find(|(name, _)| name.eq_ignore_ascii_case(method)).map(|(_, policy)| policy)
    }
}

/// The config section as written: flat keys, checked one by one while deserialising,
/// then across keys in `TryFrom`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientConfig {
    resolver: ResolverKind,
    endpoints: Vec<HttpEndpoint>,
    consul_service: String,
    #[serde(with = "humantime_serde")]
    consul_wait: Duration,
    dns_name: String,
    #[serde(with = "humantime_serde")]
    dns_refresh: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dns_nameserver: Option<SocketAddr>,
    #[serde(with = "humantime_serde")]
    connect_timeout: Duration,
    balancer: BalancerKind,
    #[serde(with = "humantime_serde")]
    timeout: Duration,
    method_timeouts: BTreeMap<String, Timeout>,
    // Not serialised into the figment defaults: the camelCase names arrive lowercased
    // from env vars, and a default `maxAttempts` beside an env `maxattempts` would be a
    // duplicate field. Missing fields take `RetryPolicy::default()` instead.
    #[serde(default, skip_serializing)]
    retry_policy: RetryPolicy,
    #[serde(default, skip_serializing)]
    hedging_policy: BTreeMap<String, HedgingPolicy>,
    retry_budget: RetryBudget,
    outlier_detection: OutlierDetection,
    #[serde(default, with = "crate::config::optional_secret", skip_serializing_if = "Option::is_none")]
    token: Option<secrecy::SecretString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls: Option<ClientTls>,
}

/// The `resolver` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ResolverKind {
    Static,
    Consul,
    Dns,
}

impl TryFrom<RawClientConfig> for ClientConfig {
    type Error = String;

    fn try_from(raw: RawClientConfig) -> Result<Self, Self::Error> {
        let mut endpoints: Vec<Uri> = raw.endpoints.into_iter().map(|endpoint| endpoint.0).collect();
        let resolver = match raw.resolver {
            ResolverKind::Static => {
                check_schemes(&endpoints, raw.tls.is_some())?;
                ResolverConfig::Static { endpoints: std::mem::take(&mut endpoints) }
            }
            ResolverKind::Consul if raw.consul_service.trim().is_empty() => {
                return Err("`consul_service` must name a service when `resolver = \"consul\"`".to_owned());
            }
            ResolverKind::Consul => {
                ResolverConfig::Consul { service: raw.consul_service.clone(), wait: raw.consul_wait }
            }
            ResolverKind::Dns => {
                let valid = raw
                    .dns_name
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0));
                if !valid {
                    return Err(format!(
                        "`dns_name` must be host:port when `resolver = \"dns\"`, not {:?}",
                        quote(&raw.dns_name)
                    ));
                }
                ResolverConfig::Dns {
                    name: raw.dns_name.clone(),
                    refresh: raw.dns_refresh,
                    nameserver: raw.dns_nameserver,
                }
            }
        };
        let token = match (raw.token, raw.token_file) {
            (Some(_), Some(_)) => return Err("set `token` or `token_file`, not both".to_owned()),
            (Some(token), None) => Some(CallerToken::fixed(&token).map_err(|e| format!("`token`: {e}"))?),
            (None, Some(path)) => Some(CallerToken::file(path)),
            (None, None) => None,
        };
        Ok(Self {
            resolver,
            connect_timeout: raw.connect_timeout,
            balancer: raw.balancer,
            timeout: raw.timeout,
            method_timeouts: raw.method_timeouts,
            retry_policy: raw.retry_policy,
            hedging_policy: raw.hedging_policy,
            retry_budget: raw.retry_budget,
            outlier_detection: raw.outlier_detection,
            token,
            tls: raw.tls,
            unused: ResolverKeys {
                endpoints,
                consul_service: raw.consul_service,
                consul_wait: raw.consul_wait,
                dns_name: raw.dns_name,
                dns_refresh: raw.dns_refresh,
                dns_nameserver: raw.dns_nameserver,
            },
        })
    }
}

impl From<ClientConfig> for RawClientConfig {
    fn from(config: ClientConfig) -> Self {
        let mut keys = config.unused;
        let resolver = match config.resolver {
            ResolverConfig::Static { endpoints } => {
                keys.endpoints = endpoints;
                ResolverKind::Static
            }
            ResolverConfig::Consul { service, wait } => {
                (keys.consul_service, keys.consul_wait) = (service, wait);
                ResolverKind::Consul
            }
            ResolverConfig::Dns { name, refresh, nameserver } => {
                (keys.dns_name, keys.dns_refresh, keys.dns_nameserver) = (name, refresh, nameserver);
                ResolverKind::Dns
            }
        };
        Self {
            resolver,
            endpoints: keys.endpoints.into_iter().map(HttpEndpoint).collect(),
            consul_service: keys.consul_service,
            consul_wait: keys.consul_wait,
            dns_name: keys.dns_name,
            dns_refresh: keys.dns_refresh,
            dns_nameserver: keys.dns_nameserver,
            connect_timeout: config.connect_timeout,
            balancer: config.balancer,
            timeout: config.timeout,
            method_timeouts: config.method_timeouts,
            retry_policy: config.retry_policy,
            hedging_policy: config.hedging_policy,
            retry_budget: config.retry_budget,
            outlier_detection: config.outlier_detection,
            // A fixed token is written back redacted: a serialized config never holds it.
            token: config
                .token
                .as_ref()
                .filter(|token| token.path().is_none())
                .map(|_| secrecy::SecretString::from("[redacted]")),
            token_file: config.token.as_ref().and_then(|token| token.path().map(PathBuf::from)),
            tls: config.tls,
        }
    }
}

/// Static endpoints are all `https://` with a `tls` section and all `http://` without:
/// issue 11, defect 3 (tonic would dial `https://` in plaintext), and an `http://`
/// endpoint beside `tls` would read as plaintext while it is dialled with TLS.
fn check_schemes(endpoints: &[Uri], tls: bool) -> Result<(), String> {
    let wanted = if tls { "https" } else { "http" };
    match endpoints.iter().find(|endpoint| endpoint.scheme_str() != Some(wanted)) {
        None => Ok(()),
        Some(endpoint) if tls => Err(format!(
            "`endpoints`: {:?} is plaintext but `tls` is set; write https://",
            quote(&redact::uri(endpoint).to_string())
        )),
        Some(endpoint) => Err(format!(
            "`endpoints`: {:?} needs the `tls` section (tls.ca_file, tls.cert_file, tls.key_file) to speak TLS",
            quote(&redact::uri(endpoint).to_string())
        )),
    }
}

/// At most a short prefix of a config value, for error messages.
fn quote(value: &str) -> String {
    value.chars().take(64).collect()
}

/// One `endpoints` entry: an absolute `http://host:port` or `https://host:port` URI.
struct HttpEndpoint(Uri);

impl Serialize for HttpEndpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HttpEndpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_endpoint(&text).map(Self).map_err(D::Error::custom)
    }
}

/// Parses one endpoint; the error quotes it with any `user:password@` redacted.
fn parse_endpoint(text: &str) -> Result<Uri, String> {
    let shown = || quote(&redact::address(text).to_string());
    let uri: Uri = text.parse().map_err(|_| format!("{:?} is not an http://host:port address", shown()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("{:?} is not an http://host:port address", shown()));
    }
    match uri.authority() {
        Some(authority) if !authority.host().is_empty() && authority.port_u16().is_some_and(|port| port > 0) => {}
        _ => return Err(format!("{:?} needs a host and a port, as in http://host:port", shown())),
    }
    Ok(uri)
}

/// A duration in config, written like `"300ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeout(#[serde(with = "humantime_serde")] pub Duration);

/// How a call picks among the ready endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancerKind {
    /// Each endpoint in turn.
    RoundRobin,
    /// The less loaded of two random endpoints (peak-EWMA latency × pending calls).
    P2cPeakEwma,
}

/// When to retry a call, with grpc-go's `retryPolicy` field names and semantics
/// (gRFC A6): at most `maxAttempts` attempts in all; before retry `n` wait a random
/// time in `[0, min(initialBackoff × backoffMultiplier^(n-1), maxBackoff)]`; retry only
/// on `retryableStatusCodes`. A server's `grpc-retry-pushback-ms` overrides the wait
/// (a negative or malformed one stops retrying). Only unary calls to methods declared
/// `idempotency_level = NO_SIDE_EFFECTS` or `IDEMPOTENT`, or carrying an
/// `idempotency-key` header, are retried, and never past the call's deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts including the first, 1 (no retries) to 5 (grpc-go caps larger values at 5).
    #[serde(rename = "maxAttempts", alias = "maxattempts", deserialize_with = "max_attempts")]
    pub max_attempts: u32,
    /// Backoff before the first retry, e.g. `"50ms"`.
    #[serde(rename = "initialBackoff", alias = "initialbackoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Largest backoff, e.g. `"1s"`.
    #[serde(rename = "maxBackoff", alias = "maxbackoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Growth of the backoff per retry, > 0.
    #[serde(rename = "backoffMultiplier", alias = "backoffmultiplier", deserialize_with = "positive")]
    pub backoff_multiplier: f64,
    /// Status codes that are retried, by gRPC name, e.g. `["UNAVAILABLE"]`.
    #[serde(rename = "retryableStatusCodes", alias = "retryablestatuscodes")]
    pub retryable_status_codes: Vec<StatusCodeName>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(500),
            backoff_multiplier: 2.0,
            retryable_status_codes: vec![StatusCodeName(Code::Unavailable)],
        }
    }
}

impl RetryPolicy {
    /// Whether a call that ended with `code` may be retried.
    pub fn retries(&self, code: Code) -> bool {
        self.retryable_status_codes.iter().any(|name| name.0 == code)
    }
}

/// Hedging of one method, with gRFC A6's `hedgingPolicy` field names and semantics:
/// the first attempt goes out at once, another every `hedgingDelay` while none has
/// answered, up to `maxAttempts` in all, each to an endpoint the call has not tried;
/// the first answer wins and the others are cancelled. A status in
/// `nonFatalStatusCodes` sends the next hedge at once; any other status ends the call.
/// Only single-request calls to idempotent methods (as for retries) are hedged, and
/// every hedge is withdrawn from the retry budget, so hedges cannot double the load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgingPolicy {
    /// Attempts including the first, 2 to 5 (grpc caps larger values at 5; default 2).
    #[serde(rename = "maxAttempts", alias = "maxattempts", deserialize_with = "hedge_attempts")]
    pub max_attempts: u32,
    /// Wait before each further hedge, e.g. `"20ms"` (default 0s: all at once).
    #[serde(rename = "hedgingDelay", alias = "hedgingdelay", with = "humantime_serde")]
    pub hedging_delay: Duration,
    /// Statuses after which the next hedge is sent at once instead of ending the call,
    /// e.g. `["UNAVAILABLE"]` (default: none).
    #[serde(rename = "nonFatalStatusCodes", alias = "nonfatalstatuscodes")]
    pub non_fatal_status_codes: Vec<StatusCodeName>,
}

impl Default for HedgingPolicy {
    fn default() -> Self {
        Self { max_attempts: 2, hedging_delay: Duration::ZERO, non_fatal_status_codes: Vec::new() }
    }
}

impl HedgingPolicy {
    /// Whether `code` lets the call go on with the next hedge.
    pub fn non_fatal(&self, code: Code) -> bool {
        self.non_fatal_status_codes.iter().any(|name| name.0 == code)
    }
}

fn hedge_attempts<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    match u32::deserialize(deserializer)? {
        0 | 1 => Err(D::Error::custom("maxAttempts of a hedging policy must be at least 2")),
        n => Ok(n.min(5)),
    }
}

fn max_attempts<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    match u32::deserialize(deserializer)? {
        0 => Err(D::Error::custom("maxAttempts must be at least 1")),
        n => Ok(n.min(5)),
    }
}

fn positive<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    match f64::deserialize(deserializer)? {
        value if value > 0.0 && value.is_finite() => Ok(value),
        value => Err(D::Error::custom(format!("must be a positive number, not {value}"))),
    }
}

/// A gRPC status code written by its name, `UNAVAILABLE` (gRPC doc/statuscodes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCodeName(pub Code);

const CODE_NAMES: [(&str, Code); 17] = [
    ("OK", Code::Ok),
    ("CANCELLED", Code::Cancelled),
    ("UNKNOWN", Code::Unknown),
    ("INVALID_ARGUMENT", Code::InvalidArgument),
    ("DEADLINE_EXCEEDED", Code::DeadlineExceeded),
    ("NOT_FOUND", Code::NotFound),
    ("ALREADY_EXISTS", Code::AlreadyExists),
    ("PERMISSION_DENIED", Code::PermissionDenied),
    ("RESOURCE_EXHAUSTED", Code::ResourceExhausted),
    ("FAILED_PRECONDITION", Code::FailedPrecondition),
    ("ABORTED", Code::Aborted),
    ("OUT_OF_RANGE", Code::OutOfRange),
    ("UNIMPLEMENTED", Code::Unimplemented),
    ("INTERNAL", Code::Internal),
    ("UNAVAILABLE", Code::Unavailable),
    ("DATA_LOSS", Code::DataLoss),
    ("UNAUTHENTICATED", Code::Unauthenticated),
];

impl Serialize for StatusCodeName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let name = CODE_NAMES.iter().find(|(_, code)| *code == self.0).map_or("UNKNOWN", |(name, _)| name);
        serializer.serialize_str(name)
    }
}

impl<'de> Deserialize<'de> for StatusCodeName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        CODE_NAMES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(&name))
            .map(|(_, code)| Self(*code))
            .ok_or_else(|| D::Error::custom(format!("{name:?} is not a gRPC status code name such as UNAVAILABLE")))
    }
}

/// The retry budget (Finagle's and linkerd's): retries may add at most `ratio` of the
/// calls made over the last `ttl`, plus `min_per_second` so a quiet client can retry
/// at all. Backed by tower's `TpsBudget`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries per call, 0.0 to 1000.0 (default 0.2: one retry per five calls).
    #[serde(deserialize_with = "ratio")]
    pub ratio: f32,
    /// Retries always allowed per second (default 10).
    pub min_per_second: u32,
    /// The window calls are counted over, 1s to 60s (default 10s).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self { ratio: 0.2, min_per_second: 10, ttl: Duration::from_secs(10) }
    }
}

fn ratio<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f32, D::Error> {
    match f32::deserialize(deserializer)? {
        value if (0.0..=1000.0).contains(&value) => Ok(value),
        value => Err(D::Error::custom(format!("must be between 0 and 1000, not {value}"))),
    }
}

impl RetryBudget {
    /// The budget's window, clamped to what `TpsBudget` accepts (1 s to 60 s).
    pub fn window(&self) -> Duration {
        self.ttl.clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// Outlier ejection, per endpoint, in two ways that add up:
///
/// - **Consecutive failures** (ours, always checked): an endpoint that fails
///   `consecutive_failures` attempts in a row is taken out of rotation for
///   `base_ejection_time`, doubled at each ejection in a row up to `max_ejection_time`;
///   after that it gets calls again, and one success clears its record.
/// - **Statistical ejection** (gRFC A50, grpc-go's `outlier_detection` field names):
///   every `interval` the outcomes of the attempts each endpoint answered in that
///   interval are compared. `successRateEjection` ejects an endpoint whose success rate
///   is below `mean - stdev × stdevFactor / 1000` of the endpoints' rates;
///   `failurePercentageEjection` ejects one whose failure percentage is above
///   `threshold`. Each counts only endpoints with at least `requestVolume` attempts in
///   the interval, runs only when at least `minimumHosts` such endpoints exist, and
///   ejects a candidate with probability `enforcementPercentage` %. Neither ejects
///   once `maxEjectionPercent` % of the endpoints are ejected. An ejection lasts
///   `base_ejection_time × n` (n grows by one per such ejection and shrinks by one per
///   interval the endpoint stays in, A50's multiplier), at most
///   `max(base_ejection_time, max_ejection_time)`. Both are off unless configured.
///
/// A failure is what `consecutive_failures` counts: UNAVAILABLE, which a transport
/// failure also becomes; application errors (NOT_FOUND, …) and deadlines are not the
/// endpoint's fault. grpc-go's `baseEjectionTime`/`maxEjectionTime` are our
/// `base_ejection_time`/`max_ejection_time` (kept for existing configs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Failures in a row that eject (default 3; 0 disables this kind of ejection).
    pub consecutive_failures: u32,
    /// First ejection's length (default 1s).
    #[serde(with = "humantime_serde")]
    pub base_ejection_time: Duration,
    /// Longest ejection (default 30s).
    #[serde(with = "humantime_serde")]
    pub max_ejection_time: Duration,
    /// How often the statistical ejections run, 10ms to 1h (default 10s, gRFC A50's).
    #[serde(
        serialize_with = "humantime_serde::serialize",
        deserialize_with = "interval",
        default = "default_interval"
    )]
    pub interval: Duration,
    /// Most endpoints the statistical ejections take out at once, in percent of the
    /// endpoints, 0 to 100 (default 10, gRFC A50's; at least one is always allowed).
    // Not serialised into the figment defaults (see `retry_policy`): env vars arrive
    // lowercased, and both spellings would be a duplicate field.
    #[serde(
        rename = "maxEjectionPercent",
        alias = "maxejectionpercent",
        default = "default_max_ejection_percent",
        skip_serializing,
        deserialize_with = "percent"
    )]
    pub max_ejection_percent: u32,
    /// Success-rate ejection; off when absent.
    #[serde(rename = "successRateEjection", alias = "successrateejection", default, skip_serializing)]
    pub success_rate_ejection: Option<SuccessRateEjection>,
    /// Failure-percentage ejection; off when absent.
    #[serde(rename = "failurePercentageEjection", alias = "failurepercentageejection", default, skip_serializing)]
    pub failure_percentage_ejection: Option<FailurePercentageEjection>,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_failures: 3,
            base_ejection_time: Duration::from_secs(1),
            max_ejection_time: Duration::from_secs(30),
            interval: default_interval(),
            max_ejection_percent: default_max_ejection_percent(),
            success_rate_ejection: None,
            failure_percentage_ejection: None,
        }
    }
}

impl OutlierDetection {
    /// Whether either statistical ejection is configured.
    pub fn statistical(&self) -> bool {
        self.success_rate_ejection.is_some() || self.failure_percentage_ejection.is_some()
    }
}

/// gRFC A50 `successRateEjection`: eject endpoints whose success rate is below
/// `mean - stdev × stdevFactor / 1000` of the rates of the endpoints with enough calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SuccessRateEjection {
    /// The stdev multiplier in thousandths (default 1900: 1.9 standard deviations).
    #[serde(rename = "stdevFactor", alias = "stdevfactor")]
    pub stdev_factor: u32,
    /// Chance, in percent 0 to 100, that a candidate is ejected (default 100).
    #[serde(rename = "enforcementPercentage", alias = "enforcementpercentage", deserialize_with = "percent")]
    pub enforcement_percentage: u32,
    /// Endpoints with enough calls needed to run at all (default 5).
    #[serde(rename = "minimumHosts", alias = "minimumhosts")]
    pub minimum_hosts: u32,
    /// Attempts in the interval an endpoint needs to be judged (default 100).
    #[serde(rename = "requestVolume", alias = "requestvolume")]
    pub request_volume: u32,
}

impl Default for SuccessRateEjection {
    fn default() -> Self {
        Self { stdev_factor: 1900, enforcement_percentage: 100, minimum_hosts: 5, request_volume: 100 }
    }
}

/// gRFC A50 `failurePercentageEjection`: eject endpoints whose failure percentage in
/// the interval is above `threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailurePercentageEjection {
    /// Failure percentage, 0 to 100, above which an endpoint is ejected (default 85).
    #[serde(deserialize_with = "percent")]
    pub threshold: u32,
    /// Chance, in percent 0 to 100, that a candidate is ejected (default 100).
    #[serde(rename = "enforcementPercentage", alias = "enforcementpercentage", deserialize_with = "percent")]
    pub enforcement_percentage: u32,
    /// Endpoints with enough calls needed to run at all (default 5).
    #[serde(rename = "minimumHosts", alias = "minimumhosts")]
    pub minimum_hosts: u32,
    /// Attempts in the interval an endpoint needs to be judged (default 50).
    #[serde(rename = "requestVolume", alias = "requestvolume")]
    pub request_volume: u32,
}

impl Default for FailurePercentageEjection {
    fn default() -> Self {
        Self { threshold: 85, enforcement_percentage: 100, minimum_hosts: 5, request_volume: 50 }
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_max_ejection_percent() -> u32 {
    10
}

fn percent<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    match u32::deserialize(deserializer)? {
        value @ 0..=100 => Ok(value),
        value => Err(D::Error::custom(format!("must be a percentage from 0 to 100, not {value}"))),
    }
}

fn interval<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let value: Duration = humantime_serde::deserialize(deserializer)?;
    if (Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&value) {
        Ok(value)
    } else {
        Err(D::Error::custom(format!("must be from 10ms to 1h, not {value:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::overlaid;

    fn policy_from(json: serde_json::Value) -> Result<RetryPolicy, String> {
        overlaid(RetryPolicy::default(), json)
    }

    #[test]
    fn grpc_go_field_names_are_accepted() {
        let policy = policy_from(serde_json::json!({
            "maxAttempts": 4, "initialBackoff": "10ms", "maxBackoff": "2s",
            "backoffMultiplier": 1.5, "retryableStatusCodes": ["UNAVAILABLE", "resource_exhausted"],
        }))
        .expect("valid");
        assert_eq!(policy.max_attempts, 4);
        assert!(policy.retries(Code::ResourceExhausted) && !policy.retries(Code::Internal));
    }

    #[test]
    fn more_than_five_attempts_are_capped_at_five_like_grpc_go() {
        assert_eq!(policy_from(serde_json::json!({"maxAttempts": 9})).expect("valid").max_attempts, 5);
    }

    #[test]
    fn an_unknown_status_code_name_is_refused_naming_it() {
        let error = policy_from(serde_json::json!({"retryableStatusCodes": ["BUSY"]})).expect_err("not a code");
        assert!(error.contains("BUSY"), "{error}");
    }

    #[test]
    fn zero_attempts_and_a_non_positive_multiplier_are_refused() {
        assert!(policy_from(serde_json::json!({"maxAttempts": 0})).is_err());
        assert!(policy_from(serde_json::json!({"backoffMultiplier": 0.0})).is_err());
    }

    #[test]
    fn method_timeouts_match_the_method_name_case_insensitively() {
        let mut config = ClientConfig::with_endpoints(vec![]);
        config.method_timeouts.insert("getuserbyemail".into(), Timeout(Duration::from_millis(300)));
        assert_eq!(config.timeout_of("GetUserByEmail"), Duration::from_millis(300));
        assert_eq!(config.timeout_of("GetUser"), Duration::from_secs(1));
    }

    /// A `users` section over `ClientConfig::for_upstream("users", …)` defaults, as
    /// `platform::config::load` layers it.
    #[test]
    fn a_token_or_a_token_file_is_read_but_not_both_and_the_token_is_never_written_back() {
        let token = users_from(serde_json::json!({"token": "s3cret-token"})).expect("a token");
        let header = token.token.as_ref().and_then(CallerToken::header).expect("a header");
        assert_eq!(header, "Bearer s3cret-token");
        let written = serde_json::to_string(&token).expect("serialises");
        assert!(!written.contains("s3cret-token") && written.contains("[redacted]"), "{written}");
        let file = users_from(serde_json::json!({"token_file": "/run/secrets/orders.token"})).expect("a file");
        assert_eq!(
            file.token.as_ref().and_then(CallerToken::path),
            Some(std::path::Path::new("/run/secrets/orders.token"))
        );
        let both = users_from(serde_json::json!({"token": "a", "token_file": "/b"})).expect_err("both");
        assert!(both.contains("token_file") && !both.contains("\"a\""), "{both}");
    }

    fn users_from(json: serde_json::Value) -> Result<ClientConfig, String> {
        #[derive(Serialize, Deserialize)]
        struct Section {
            users: ClientConfig,
        }
        let defaults = Section {
            users: ClientConfig::for_upstream("users", vec!["http://127.0.0.1:50051".parse().expect("uri")]),
        };
        overlaid(defaults, serde_json::json!({ "users": json })).map(|section| section.users)
    }

    #[test]
    fn the_defaults_round_trip_and_switching_to_consul_keeps_the_default_service() {
        let config = users_from(serde_json::json!({})).expect("defaults load");
        assert_eq!(config, ClientConfig::for_upstream("users", vec!["http://127.0.0.1:50051".parse().expect("uri")]));
        let consul = users_from(serde_json::json!({"resolver": "consul"})).expect("valid");
        assert_eq!(consul.resolver, ResolverConfig::Consul { service: "users".into(), wait: Duration::from_secs(60) });
    }

    #[test]
    fn static_endpoints_must_be_absolute_http_addresses_and_errors_name_the_key() {
        let error =
            users_from(serde_json::json!({"endpoints": ["http://127.0.0.1:1", "localhost"]})).expect_err("no scheme");
        assert!(error.contains("users.endpoints") && error.contains("localhost"), "{error}");
        let error = users_from(serde_json::json!({"endpoints": ["http://127.0.0.1"]})).expect_err("no port");
        assert!(error.contains("users.endpoints") && error.contains("port"), "{error}");
    }

    #[test]
    fn an_https_endpoint_without_a_tls_section_is_refused_at_load_instead_of_dialled_in_plaintext() {
        let error = users_from(serde_json::json!({"endpoints": ["https://users.internal:50051"]})).expect_err("https");
        assert!(error.contains("users") && error.contains("endpoints"), "{error}");
        assert!(error.contains("needs the `tls` section"), "{error}");
    }

    #[test]
    fn a_password_in_a_bad_endpoint_is_not_echoed_in_the_error() {
        let error = users_from(serde_json::json!({"endpoints": ["https://u:s3cret@users:1"]})).expect_err("https");
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn a_hedging_policy_per_method_takes_grpcs_field_names_and_needs_two_attempts() {
        let config = users_from(serde_json::json!({"hedging_policy": {"GetUserByEmail": {
            "maxAttempts": 3, "hedgingDelay": "20ms", "nonFatalStatusCodes": ["UNAVAILABLE"]}}}))
        .expect("valid");
        let policy = config.hedging_of("getuserbyemail").expect("case-insensitive");
        assert_eq!((policy.max_attempts, policy.hedging_delay), (3, Duration::from_millis(20)));
        assert!(policy.non_fatal(Code::Unavailable) && config.hedging_of("GetUser").is_none());
        let error = users_from(serde_json::json!({"hedging_policy": {"GetUser": {"maxAttempts": 1}}}))
            .expect_err("one attempt is no hedge");
        assert!(error.contains("maxAttempts"), "{error}");
    }

    #[test]
    fn outlier_detection_takes_grpc_gos_field_names_and_refuses_a_bad_percentage_naming_it() {
        let config = users_from(serde_json::json!({"outlier_detection": {
            "interval": "2s", "maxEjectionPercent": 50,
            "failurePercentageEjection": {"threshold": 20, "minimumHosts": 2},
            "successrateejection": {"stdevfactor": 1000}}}))
        .expect("valid");
        let outlier = config.outlier_detection;
        assert_eq!((outlier.interval, outlier.max_ejection_percent), (Duration::from_secs(2), 50));
        let failure = outlier.failure_percentage_ejection.expect("configured");
        assert_eq!((failure.threshold, failure.minimum_hosts, failure.request_volume), (20, 2, 50));
        assert_eq!(outlier.success_rate_ejection.expect("configured").stdev_factor, 1000);
        let error =
            users_from(serde_json::json!({"outlier_detection": {"failurePercentageEjection": {"threshold": 101}}}))
                .expect_err("over 100");
        assert!(error.contains("threshold") && error.contains("101"), "{error}");
    }

    #[test]
    fn the_chosen_resolver_needs_its_own_keys_and_the_error_names_them() {
        let error =
            users_from(serde_json::json!({"resolver": "consul", "consul_service": ""})).expect_err("no service");
        assert!(error.contains("users") && error.contains("consul_service"), "{error}");
        let error =
            users_from(serde_json::json!({"resolver": "dns", "dns_name": "users-headless"})).expect_err("no port");
        assert!(error.contains("users") && error.contains("dns_name"), "{error}");
        let dns = users_from(serde_json::json!({"resolver": "dns", "dns_name": "users:50051"})).expect("valid");
        let expected =
            ResolverConfig::Dns { name: "users:50051".into(), refresh: Duration::from_secs(5), nameserver: None };
        assert_eq!(dns.resolver, expected);
    }

    #[test]
    fn a_dns_nameserver_is_an_ip_and_port_and_a_bad_one_is_refused_naming_the_key() {
        let dns = users_from(serde_json::json!({"resolver": "dns", "dns_name": "users.test.:50051",
            "dns_refresh": "200ms", "dns_nameserver": "127.0.0.1:5353"}))
        .expect("valid");
        let expected = ResolverConfig::Dns {
            name: "users.test.:50051".into(),
            refresh: Duration::from_millis(200),
            nameserver: Some("127.0.0.1:5353".parse().expect("an address")),
        };
        assert_eq!(dns.resolver, expected);
        assert_eq!(users_from(serde_json::to_value(&dns).expect("serialises")).expect("reloads"), dns);
        for bad in ["127.0.0.1", "kube-dns:53", "127.0.0.1:dns"] {
            let error = users_from(serde_json::json!({"dns_nameserver": bad})).expect_err(bad);
            assert!(error.contains("users.dns_nameserver"), "{bad}: {error}");
        }
    }
}
