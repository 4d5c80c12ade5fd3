//! Test-only fault injection: the `testing` config section, which makes a server fail or delay a share of its calls on purpose.
//!
//! For system tests of the client's resilience (outlier ejection, retries): never set
//! it in production. It is refused at load unless `testing.enabled = true` says so
//! explicitly, and the server logs a warning at start-up while it is on.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::{BoxFuture, Either};
use serde::{Deserialize, Serialize};
use tonic::{Status, body::Body, server::NamedService};
use tower::Service;

/// The `testing` section: test-only fault knobs, all off by default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "RawTestingConfig", into = "RawTestingConfig")]
pub struct TestingConfig {
    /// `testing.fail_ratio`: share of calls answered UNAVAILABLE, in thousandths
    /// (written as a ratio, 0.0 to 1.0, e.g. `0.3`). The failing calls are spread
    /// evenly (no two in a row below 0.5), so only a share of calls, not a run of
    /// consecutive failures, gives the endpoint away.
    pub fail_permille: u32,
    /// `testing.delay_ratio`: share of calls held for `delay` before they are served,
    /// in thousandths (written as a ratio, 0.0 to 1.0), spread evenly like the failures.
    pub delay_permille: u32,
    /// `testing.delay`: how long a delayed call is held, e.g. `"50ms"` (default 0s).
    pub delay: Duration,
}

/// The section as written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTestingConfig {
    /// Must be true for any knob to be accepted.
    enabled: bool,
    fail_ratio: f64,
    delay_ratio: f64,
    #[serde(with = "humantime_serde")]
    delay: Duration,
}

impl TryFrom<RawTestingConfig> for TestingConfig {
    type Error = String;

    fn try_from(raw: RawTestingConfig) -> Result<Self, Self::Error> {
        if !(0.0..=1.0).contains(&raw.fail_ratio) {
            return Err(format!("`fail_ratio` must be from 0.0 to 1.0, not {}", raw.fail_ratio));
        }
        if !(0.0..=1.0).contains(&raw.delay_ratio) {
            return Err(format!("`delay_ratio` must be from 0.0 to 1.0, not {}", raw.delay_ratio));
        }
        for (key, on) in [("fail_ratio", raw.fail_ratio > 0.0), ("delay_ratio", raw.delay_ratio > 0.0)] {
            if on && !raw.enabled {
                return Err(format!("`{key}` is a test-only fault knob: it needs `testing.enabled = true`"));
            }
        }
        Ok(Self {
            fail_permille: (raw.fail_ratio * 1000.0).round() as u32,
            delay_permille: (raw.delay_ratio * 1000.0).round() as u32,
            delay: raw.delay,
        })
    }
}

impl From<TestingConfig> for RawTestingConfig {
    fn from(config: TestingConfig) -> Self {
        Self {
            enabled: config.fail_permille > 0 || config.delay_permille > 0,
            fail_ratio: f64::from(config.fail_permille) / 1000.0,
            delay_ratio: f64::from(config.delay_permille) / 1000.0,
            delay: config.delay,
        }
    }
}

impl TestingConfig {
    /// What applies these knobs to a service's calls (see [`Faults::wrap`]); with
    /// every knob off it passes every call through.
    pub fn faults(&self) -> Faults {
        if self.fail_permille > 0 {
            tracing::warn!(
                fail_ratio = f64::from(self.fail_permille) / 1000.0,
                "testing.fail_ratio is on: failing calls on purpose"
            );
        }
        if self.delay_permille > 0 {
            tracing::warn!(
                delay_ratio = f64::from(self.delay_permille) / 1000.0,
                delay_ms = self.delay.as_millis() as u64,
                "testing.delay_ratio is on: delaying calls on purpose"
            );
        }
        Faults {
            fail_permille: u64::from(self.fail_permille),
            calls: Arc::default(),
            delay_permille: u64::from(self.delay_permille),
            delay: self.delay,
            delayed: Arc::default(),
        }
    }
}

/// Whether call number `n` (from 1) falls in an evenly spread share of `permille`:
/// the share's running total steps up at it.
fn in_share(counter: &AtomicU64, permille: u64) -> bool {
    if permille == 0 {
        return false;
    }
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    n * permille / 1000 > (n - 1) * permille / 1000
}

/// Fails `testing.fail_ratio` of the calls through it with UNAVAILABLE, and holds
/// `testing.delay_ratio` of them for `testing.delay` (see [`TestingConfig`]).
#[derive(Debug, Clone)]
pub struct Faults {
    fail_permille: u64,
    calls: Arc<AtomicU64>,
    delay_permille: u64,
    delay: Duration,
    delayed: Arc<AtomicU64>,
}

impl Faults {
    /// `service` (a generated `XServer`) with these faults in front of it.
    pub fn wrap<S>(self, service: S) -> Faulty<S> {
        Faulty { inner: service, faults: self }
    }

    /// The injected failure for the next call, if it is one of the failing share.
    fn next_failure(&self) -> Option<Status> {
        in_share(&self.calls, self.fail_permille).then(|| Status::unavailable("failed on purpose (testing.fail_ratio)"))
    }

    /// The injected delay for the next call, if it is one of the delayed share.
    fn next_delay(&self) -> Option<Duration> {
        in_share(&self.delayed, self.delay_permille).then_some(self.delay)
    }
}

/// A gRPC service behind [`Faults`]; its name is the inner service's.
#[derive(Debug, Clone)]
pub struct Faulty<S> {
    inner: S,
    faults: Faults,
}

impl<S: NamedService> NamedService for Faulty<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Faulty<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<http::Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (delay, failure) = (self.faults.next_delay(), self.faults.next_failure());
        // A call no fault touches (every call, outside tests) is the inner call as it is.
        if delay.is_none() && failure.is_none() {
            return Either::Left(self.inner.call(request));
        }
        let answer = match failure {
            Some(status) => Err(status),
            None => Ok(self.inner.call(request)),
        };
        Either::Right(Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            match answer {
                Err(status) => Ok(status.into_http()),
                Ok(call) => call.await,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::overlaid;

    fn load(json: serde_json::Value) -> Result<TestingConfig, String> {
        overlaid(TestingConfig::default(), json)
    }

    #[test]
    fn a_fail_ratio_without_testing_enabled_is_refused_naming_the_key() {
        let error = load(serde_json::json!({"fail_ratio": 0.3})).expect_err("not enabled");
        assert!(error.contains("fail_ratio") && error.contains("testing.enabled"), "{error}");
        assert!(load(serde_json::json!({"enabled": true, "fail_ratio": 1.5})).is_err());
        let config = load(serde_json::json!({"enabled": true, "fail_ratio": 0.3})).expect("valid");
        assert_eq!(config.fail_permille, 300);
    }

    #[test]
    fn the_failing_share_is_exact_and_never_two_in_a_row_at_thirty_percent() {
        let faults = TestingConfig { fail_permille: 300, ..Default::default() }.faults();
        let outcomes: Vec<bool> = (0..1000).map(|_| faults.next_failure().is_some()).collect();
        assert_eq!(outcomes.iter().filter(|failed| **failed).count(), 300);
        assert!(!outcomes.windows(2).any(|pair| pair[0] && pair[1]), "two failures in a row");
    }

    #[test]
    fn a_delay_ratio_needs_testing_enabled_and_delays_its_share() {
        let error = load(serde_json::json!({"delay_ratio": 0.5, "delay": "50ms"})).expect_err("not enabled");
        assert!(error.contains("delay_ratio") && error.contains("testing.enabled"), "{error}");
        let config = load(serde_json::json!({"enabled": true, "delay_ratio": 0.5, "delay": "50ms"})).expect("valid");
        let faults = config.faults();
        let delays: Vec<Option<Duration>> = (0..4).map(|_| faults.next_delay()).collect();
        let held = Some(Duration::from_millis(50));
        assert_eq!(delays, vec![None, held, None, held]);
    }

    #[test]
    fn with_the_knob_off_every_call_passes() {
        let faults = TestingConfig::default().faults();
        assert!((0..100).all(|_| faults.next_failure().is_none()));
    }
}
