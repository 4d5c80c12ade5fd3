//! How a service reaches one upstream: resolver, balancer, deadlines, retries, ejection.
//!
//! Values are checked while the config loads, so a bad one fails start-up with its key
//! named (figment reports the path) instead of surfacing on the first call.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use tonic::Code;

use crate::discovery::ResolverKind;

/// How a service reaches one of its upstreams. TOML keys are the field names; for
/// orders' `users` upstream, `ORDERS_USERS__RESOLVER=consul` sets `resolver`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Where endpoints come from: `static` (default), `consul` or `dns`.
    pub resolver: ResolverKind,
    /// `static`: upstream addresses as `http://host:port`.
    pub endpoints: Vec<String>,
    /// `consul`: the service name to follow (its passing instances).
    pub consul_service: String,
    /// `consul`: longest wait of one blocking query, e.g. `"60s"`.
    #[serde(with = "humantime_serde")]
    pub consul_wait: Duration,
    /// `dns`: `host:port` to resolve, e.g. a Kubernetes headless Service
    /// `users-headless.default.svc.cluster.local:50051`.
    pub dns_name: String,
    /// `dns`: how often to resolve again, e.g. `"5s"`.
    #[serde(with = "humantime_serde")]
    pub dns_refresh: Duration,
    /// How long to wait for a TCP connection to an endpoint, e.g. `"500ms"`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// `round_robin` (default) or `p2c_peak_ewma` (power of two choices over
    /// peak-EWMA latency times pending calls, tower's `PeakEwma`).
    pub balancer: BalancerKind,
    /// Default deadline of a call, e.g. `"1s"`. The deadline actually sent is the
    /// earliest of this (or `method_timeouts`), the caller's, and what remains of the
    /// call being served.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Per-method deadlines by method name (`GetUserByEmail = "300ms"`), case-insensitive.
    pub method_timeouts: BTreeMap<String, Timeout>,
    /// Retries, with grpc-go's `retryPolicy` semantics and field names.
    // Not serialised into the figment defaults: the camelCase names arrive lowercased
    // from env vars, and a default `maxAttempts` beside an env `maxattempts` would be a
    // duplicate field. Missing fields take `RetryPolicy::default()` instead.
    #[serde(default, skip_serializing)]
    pub retry_policy: RetryPolicy,
    /// The cap on retries across all calls.
    pub retry_budget: RetryBudget,
    /// Per-endpoint circuit breaking.
    pub outlier_detection: OutlierDetection,
}

impl ClientConfig {
    /// A static-list config with the given endpoints and the defaults documented on
    /// each field's type.
    pub fn with_endpoints(endpoints: Vec<String>) -> Self {
        Self {
            resolver: ResolverKind::Static,
            endpoints,
            consul_service: String::new(),
            consul_wait: Duration::from_secs(60),
            dns_name: String::new(),
            dns_refresh: Duration::from_secs(5),
            connect_timeout: Duration::from_millis(500),
            balancer: BalancerKind::RoundRobin,
            timeout: Duration::from_secs(1),
            method_timeouts: BTreeMap::new(),
            retry_policy: RetryPolicy::default(),
            retry_budget: RetryBudget::default(),
            outlier_detection: OutlierDetection::default(),
        }
    }

    /// The default deadline of `method` (the last segment of a gRPC path).
    pub fn timeout_of(&self, method: &str) -> Duration {
        self.method_timeouts
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(method))
            .map_or(self.timeout, |(_, timeout)| timeout.0)
    }
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

/// Outlier ejection: an endpoint that fails `consecutive_failures` calls in a row
/// (transport errors or UNAVAILABLE) is taken out of rotation for `base_ejection_time`,
/// doubled at each ejection in a row up to `max_ejection_time`; after that it gets
/// calls again, and one success clears its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Failures in a row that eject (default 3; 0 disables ejection).
    pub consecutive_failures: u32,
    /// First ejection's length (default 1s).
    #[serde(with = "humantime_serde")]
    pub base_ejection_time: Duration,
    /// Longest ejection (default 30s).
    #[serde(with = "humantime_serde")]
    pub max_ejection_time: Duration,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_failures: 3,
            base_ejection_time: Duration::from_secs(1),
            max_ejection_time: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use figment::{Figment, providers::Serialized};

    use super::*;

    fn policy_from(json: serde_json::Value) -> Result<RetryPolicy, String> {
        Figment::from(Serialized::defaults(RetryPolicy::default()))
            .merge(Serialized::defaults(json))
            .extract()
            .map_err(|e| e.to_string())
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
}
