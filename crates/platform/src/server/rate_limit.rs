//! Per-method, per-caller rate limits (GCRA, `governor`): a call over its caller's quota is answered RESOURCE_EXHAUSTED with `grpc-retry-pushback-ms`.
//!
//! The caller is the token's subject ([`crate::auth::Caller`]) when there is one, else
//! the peer's IP address. Each limited method has its own keyed limiter; the number of
//! callers remembered per method is capped (`rate_limit.max_callers`): past the cap,
//! callers whose bucket is full again are forgotten (`retain_recent`), and if that is
//! not enough, new callers share one overflow bucket, so a client cycling through
//! addresses cannot grow memory without bound.
//!
//! The answer carries `grpc-retry-pushback-ms`, the milliseconds until the call would
//! be allowed (gRFC A6, "Pushback"); our client waits that long before a retry.
//! Health and reflection are never limited.

use std::{collections::BTreeMap, fmt, net::IpAddr, num::NonZeroU32, str::FromStr, sync::Arc, time::Duration};

use crate::{
    auth::Caller,
    support::gate::{Gate, GateLayer},
};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use http::{HeaderValue, Request, Response};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tonic::{Status, transport::server::TcpConnectInfo};

/// The response header that tells a client when to retry (gRFC A6).
pub const PUSHBACK: &str = "grpc-retry-pushback-ms";

/// The `rate_limit` config section. Off by default (nothing limited).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `rate_limit.default`: the quota of each caller on every method not listed in
    /// `methods`, e.g. `"100/s"` or `"600/m"` (the burst is the count); unset: unlimited.
    pub default: Option<Rate>,
    /// `rate_limit.methods.<Method>`: a quota per method name (case-insensitive),
    /// e.g. `rate_limit.methods.CreateOrder = "5/s"`.
    pub methods: BTreeMap<String, Rate>,
    /// `rate_limit.max_callers`: callers remembered per method (default 10000, at least 1).
    pub max_callers: NonZeroU32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { default: None, methods: BTreeMap::new(), max_callers: NonZeroU32::new(10_000).expect("not zero") }
    }
}

impl RateLimitConfig {
    /// Whether any method is limited.
    pub fn enabled(&self) -> bool {
        self.default.is_some() || !self.methods.is_empty()
    }
}

/// A quota: `count` calls per `per` (one second or one minute), with a burst of `count`.
/// Written `"N/s"` or `"N/m"`, N at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Calls per period (and the burst).
    pub count: NonZeroU32,
    /// The period: one second or one minute.
    pub per: Duration,
}

impl Rate {
    fn quota(self) -> Quota {
        if self.per == Duration::from_secs(60) { Quota::per_minute(self.count) } else { Quota::per_second(self.count) }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shown: String = text.chars().take(32).collect();
        let bad = || format!("{shown:?} is not a rate like \"100/s\" or \"600/m\" (at least 1)");
        let (count, per) = text.trim().split_once('/').ok_or_else(bad)?;
        let count = count.trim().parse::<NonZeroU32>().map_err(|_| bad())?;
        let per = match per.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            _ => return Err(bad()),
        };
        Ok(Self { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, if self.per == Duration::from_secs(60) { "m" } else { "s" })
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Who a call is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Subject(String),
    Peer(IpAddr),
    /// Every new caller once `max_callers` are remembered.
    Overflow,
    Unknown,
}

/// The limiters of one server: one keyed limiter per limited method.
struct Limiters {
    /// By lowercased method name.
    methods: BTreeMap<String, DefaultKeyedRateLimiter<Key>>,
    /// Every other method, keyed by (lowercased method name, caller).
    default: Option<DefaultKeyedRateLimiter<(String, Key)>>,
    max_callers: usize,
    clock: DefaultClock,
}

/// Server layer: see the module docs.
pub type RateLimitLayer = GateLayer<RateLimit>;

impl RateLimitLayer {
    /// Limits as `config` says; a layer that passes every call when nothing is limited.
    pub fn new(config: &RateLimitConfig) -> Self {
        if !config.enabled() {
            return Self::from(RateLimit { limiters: None });
        }
        let methods = config
            .methods
            .iter()
            .map(|(name, rate)| (name.to_ascii_lowercase(), RateLimiter::keyed(rate.quota())))
            .collect();
        let limiters = Limiters {
            methods,
            default: config.default.map(|rate| RateLimiter::keyed(rate.quota())),
            max_callers: usize::try_from(config.max_callers.get()).unwrap_or(usize::MAX),
            clock: DefaultClock::default(),
        };
        Self::from(RateLimit { limiters: Some(Arc::new(limiters)) })
    }
}

/// The check [`RateLimitLayer`] puts in front of a service.
#[derive(Clone)]
pub struct RateLimit {
    limiters: Option<Arc<Limiters>>,
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit").field("enabled", &self.limiters.is_some()).finish()
    }
}

impl<B, R: Default> Gate<B, R> for RateLimit {
    type Pass = ();

    fn admit(&self, request: &mut Request<B>) -> Result<(), Response<R>> {
        if let Some(limiters) = &self.limiters
            && let Some(wait) = limiters.check(request)
        {
            let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            let mut response: Response<R> =
                Status::resource_exhausted("rate limit exceeded for this caller and method; retry later").into_http();
            response.headers_mut().insert(PUSHBACK, HeaderValue::from(millis));
            return Err(response);
        }
        Ok(())
    }
}

impl Limiters {
    /// `None` when the call may go ahead, else how long until it would.
    fn check<B>(&self, request: &Request<B>) -> Option<Duration> {
        let path = request.uri().path();
        if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
            return None;
        }
        let method = path.rsplit('/').next().unwrap_or_default().to_ascii_lowercase();
        let key = match (request.extensions().get::<Caller>(), request.extensions().get::<TcpConnectInfo>()) {
            (Some(caller), _) => Key::Subject(caller.subject.clone()),
            (None, Some(info)) => info.remote_addr().map_or(Key::Unknown, |addr| Key::Peer(addr.ip())),
            (None, None) => Key::Unknown,
        };
        let outcome = if let Some(limiter) = self.methods.get(&method) {
            let key = bounded(limiter, key, Key::Overflow, self.max_callers);
            limiter.check_key(&key)
        } else if let Some(limiter) = &self.default {
            let key = bounded(limiter, (method.clone(), key), (method, Key::Overflow), self.max_callers);
            limiter.check_key(&key)
        } else {
            return None;
        };
        outcome.err().map(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// `key`, or `overflow` when the limiter already remembers `max` callers and `key` is
/// not one of them even after forgetting the callers whose buckets are full again.
fn bounded<K>(limiter: &DefaultKeyedRateLimiter<K>, key: K, overflow: K, max: usize) -> K
where
    K: Clone + Eq + std::hash::Hash,
{
    if limiter.len() < max {
        return key;
    }
    limiter.retain_recent();
    if limiter.len() < max { key } else { overflow }
}

#[cfg(test)]
mod tests {
    use tower::{Layer, Service};

    use super::*;

    fn request(path: &str, subject: Option<&str>) -> Request<()> {
        let mut request = Request::builder().uri(path).body(()).expect("request");
        if let Some(subject) = subject {
            request.extensions_mut().insert(Caller { subject: subject.to_owned() });
        }
        request
    }

    fn limited(config: &str) -> RateLimitConfig {
        let mut limits = RateLimitConfig::default();
        limits.methods.insert("CreateOrder".to_owned(), config.parse().expect("a rate"));
        limits
    }

    #[tokio::test]
    async fn a_call_over_the_quota_is_resource_exhausted_with_a_pushback() {
        let ok = tower::service_fn(|_: Request<()>| async { Ok::<_, std::convert::Infallible>(Response::new(())) });
        let mut service = RateLimitLayer::new(&limited("2/m")).layer(ok);
        for _ in 0..2 {
            let response = service
                .call(request("/orders.v1.OrderService/CreateOrder", Some("alice")))
                .await
                .expect("the layer answers");
            assert!(response.headers().get("grpc-status").is_none(), "within the burst");
        }
        let refused = service
            .call(request("/orders.v1.OrderService/CreateOrder", Some("alice")))
            .await
            .expect("the layer answers");
        let status = Status::from_header_map(refused.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let pushback: u64 = refused.headers()[PUSHBACK].to_str().expect("ASCII").parse().expect("milliseconds");
        assert!((1..=30_000).contains(&pushback), "one call per 30s: {pushback} ms");

        let other =
            service.call(request("/orders.v1.OrderService/CreateOrder", Some("bob"))).await.expect("the layer answers");
        assert!(other.headers().get("grpc-status").is_none(), "another caller has its own quota");
        let unlisted =
            service.call(request("/orders.v1.OrderService/GetOrder", Some("alice"))).await.expect("the layer answers");
        assert!(unlisted.headers().get("grpc-status").is_none(), "an unlisted method is not limited");
        let health = service.call(request("/grpc.health.v1.Health/Check", None)).await.expect("the layer answers");
        assert!(health.headers().get("grpc-status").is_none());
    }

    #[test]
    fn callers_beyond_the_cap_share_one_bucket_instead_of_growing_the_map() {
        let limiter: DefaultKeyedRateLimiter<Key> = RateLimiter::keyed(Quota::per_minute(NonZeroU32::MIN));
        for n in 0..1000 {
            let key = bounded(&limiter, Key::Subject(format!("caller{n}")), Key::Overflow, 10);
            let _ = limiter.check_key(&key);
        }
        assert!(limiter.len() <= 11, "{} keys remembered", limiter.len());
    }

    #[test]
    fn a_rate_reads_per_second_or_per_minute_and_refuses_anything_else() {
        let rate: Rate = "600/m".parse().expect("a rate");
        assert_eq!((rate.count.get(), rate.per), (600, Duration::from_secs(60)));
        assert_eq!("5/s".parse::<Rate>().map(|r| r.to_string()), Ok("5/s".to_owned()));
        for bad in ["0/s", "5", "5/h", "-1/s", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }
}
