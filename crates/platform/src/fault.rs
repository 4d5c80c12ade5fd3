//! Test-only fault injection: the `testing` config section, which makes a server fail a share of its calls on purpose.
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
};

use futures::future::{Either, Ready, ready};
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
}

/// The section as written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTestingConfig {
    /// Must be true for any knob to be accepted.
    enabled: bool,
    fail_ratio: f64,
}

impl TryFrom<RawTestingConfig> for TestingConfig {
    type Error = String;

    fn try_from(raw: RawTestingConfig) -> Result<Self, Self::Error> {
        if !(0.0..=1.0).contains(&raw.fail_ratio) {
            return Err(format!("`fail_ratio` must be from 0.0 to 1.0, not {}", raw.fail_ratio));
        }
        if raw.fail_ratio > 0.0 && !raw.enabled {
            return Err("`fail_ratio` is a test-only fault knob: it needs `testing.enabled = true`".to_owned());
        }
        Ok(Self { fail_permille: (raw.fail_ratio * 1000.0).round() as u32 })
    }
}

impl From<TestingConfig> for RawTestingConfig {
    fn from(config: TestingConfig) -> Self {
        Self { enabled: config.fail_permille > 0, fail_ratio: f64::from(config.fail_permille) / 1000.0 }
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
        Faults { fail_permille: u64::from(self.fail_permille), calls: Arc::default() }
    }
}

/// Fails `testing.fail_ratio` of the calls through it with UNAVAILABLE (see [`TestingConfig`]).
#[derive(Debug, Clone)]
pub struct Faults {
    fail_permille: u64,
    calls: Arc<AtomicU64>,
}

impl Faults {
    /// `service` (a generated `XServer`) with these faults in front of it.
    pub fn wrap<S>(self, service: S) -> Faulty<S> {
        Faulty { inner: service, faults: self }
    }

    /// The injected failure for the next call, if it is one of the failing share: the
    /// share's running total steps up at call number `n` (from 1).
    fn next_failure(&self) -> Option<Status> {
        if self.fail_permille == 0 {
            return None;
        }
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let fails = n * self.fail_permille / 1000 > (n - 1) * self.fail_permille / 1000;
        fails.then(|| Status::unavailable("failed on purpose (testing.fail_ratio)"))
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
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<http::Response<Body>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self.faults.next_failure() {
            Some(status) => Either::Left(ready(Ok(status.into_http()))),
            None => Either::Right(self.inner.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use figment::{Figment, providers::Serialized};

    use super::*;

    fn load(json: serde_json::Value) -> Result<TestingConfig, String> {
        Figment::from(Serialized::defaults(TestingConfig::default()))
            .merge(Serialized::defaults(json))
            .extract()
            .map_err(|e| e.to_string())
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
        let faults = TestingConfig { fail_permille: 300 }.faults();
        let outcomes: Vec<bool> = (0..1000).map(|_| faults.next_failure().is_some()).collect();
        assert_eq!(outcomes.iter().filter(|failed| **failed).count(), 300);
        assert!(!outcomes.windows(2).any(|pair| pair[0] && pair[1]), "two failures in a row");
    }

    #[test]
    fn with_the_knob_off_every_call_passes() {
        let faults = TestingConfig::default().faults();
        assert!((0..100).all(|_| faults.next_failure().is_none()));
    }
}
