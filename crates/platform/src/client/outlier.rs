//! Outlier ejection for the balancer (gRFC A50, see [`OutlierDetection`]): each
//! endpoint's record, consecutive-failure ejection as outcomes come in, and the
//! statistical ejections once per interval (the balancer runs the timer).

use std::sync::{Mutex, MutexGuard, PoisonError};

use http::Uri;
use rand::Rng;
use tokio::time::Instant;

use super::{
    config::OutlierDetection,
    metrics::{ClientMetrics, EjectionReason},
};
use crate::support::redact;

/// One endpoint's record (behind [`EndpointOutlier`]'s lock).
#[derive(Default)]
struct OutlierState {
    consecutive_failures: u32,
    /// Consecutive-failure ejections since the last success; each doubles the next one's length.
    ejections: u32,
    ejected_until: Option<Instant>,
    /// What the current (or last) ejection was for.
    ejected_for: Option<EjectionReason>,
    /// Attempts that succeeded and failed in the current interval (gRFC A50's call counter).
    successes: u64,
    failures: u64,
    /// gRFC A50's ejection multiplier: +1 per statistical ejection, -1 per interval spent in rotation.
    multiplier: u32,
}

impl OutlierState {
    fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| until > now)
    }
}

/// One endpoint's outlier record, shared by its attempts.
#[derive(Default)]
pub(super) struct EndpointOutlier(Mutex<OutlierState>);

impl EndpointOutlier {
    /// Whether the endpoint is ejected at `now`.
    pub(super) fn ejected(&self, now: Instant) -> bool {
        self.lock().ejected(now)
    }

    fn lock(&self) -> MutexGuard<'_, OutlierState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Outlier detection over one upstream's endpoints: its config, and where ejections
/// are counted and logged.
pub(super) struct Outliers {
    target: String,
    config: OutlierDetection,
    metrics: ClientMetrics,
}

impl Outliers {
    /// Detection per `config` for the upstream `target` (its name in logs), ejections
    /// counted into `metrics`.
    pub(super) fn new(target: &str, config: OutlierDetection, metrics: ClientMetrics) -> Self {
        Self { target: target.to_owned(), config, metrics }
    }

    /// The config it runs on.
    pub(super) fn config(&self) -> &OutlierDetection {
        &self.config
    }

    /// Records the outcome of an attempt on the endpoint at `uri` (whose record is
    /// `outlier`); consecutive failures eject it as they happen.
    pub(super) fn record(&self, uri: &Uri, outlier: &EndpointOutlier, failed: bool) {
        let mut state = outlier.lock();
        if failed {
            state.failures += 1;
        } else {
            state.successes += 1;
        }
        if !failed {
            // One success clears the consecutive-failure record, and ends an ejection
            // for consecutive failures; a statistical ejection runs its course (gRFC A50).
            state.consecutive_failures = 0;
            state.ejections = 0;
            if state.ejected_for == Some(EjectionReason::ConsecutiveFailures) {
                state.ejected_until = None;
            }
            return;
        }
        state.consecutive_failures += 1;
        let threshold = self.config.consecutive_failures;
        let now = Instant::now();
        if threshold == 0 || state.consecutive_failures < threshold || state.ejected(now) {
            return;
        }
        let factor = 2u32.saturating_pow(state.ejections.min(16));
        let length = self.config.base_ejection_time.saturating_mul(factor).min(self.config.max_ejection_time);
        state.ejections += 1;
        state.ejected_until = Some(now + length);
        state.ejected_for = Some(EjectionReason::ConsecutiveFailures);
        self.metrics.ejected(EjectionReason::ConsecutiveFailures);
        tracing::warn!(
            upstream = self.target,
            endpoint = %redact::uri(uri),
            reason = EjectionReason::ConsecutiveFailures.label(),
            consecutive_failures = state.consecutive_failures,
            ejected_ms = length.as_millis() as u64,
            "endpoint ejected"
        );
    }

    /// One run of gRFC A50's interval timer: takes each endpoint's counts for the
    /// interval that ended, runs success-rate then failure-percentage ejection on them,
    /// and moves the multiplier of endpoints in rotation back down.
    pub(super) fn sweep(&self, endpoints: &[(&Uri, &EndpointOutlier)]) {
        let now = Instant::now();
        // (endpoint, successes, failures) of the interval that just ended.
        let counts: Vec<(&(&Uri, &EndpointOutlier), u64, u64)> = endpoints
            .iter()
            .map(|endpoint| {
                let mut state = endpoint.1.lock();
                let counts = (state.successes, state.failures);
                (state.successes, state.failures) = (0, 0);
                (endpoint, counts.0, counts.1)
            })
            .collect();
        let mut ejected = endpoints.iter().filter(|(_, outlier)| outlier.ejected(now)).count();
        let total = endpoints.len();
        let outlier = &self.config;
        // grpc-go: stop once ejected / total * 100 >= maxEjectionPercent.
        let room = |ejected: usize| (ejected as u64) * 100 < u64::from(outlier.max_ejection_percent) * total as u64;

        if let Some(config) = &outlier.success_rate_ejection {
            let judged: Vec<(&(&Uri, &EndpointOutlier), f64)> = counts
                .iter()
                .filter(|(_, ok, failed)| ok + failed >= u64::from(config.request_volume) && ok + failed > 0)
                .map(|(endpoint, ok, failed)| (*endpoint, *ok as f64 / (ok + failed) as f64))
                .collect();
            if judged.len() >= config.minimum_hosts.max(1) as usize {
                let n = judged.len() as f64;
                let mean = judged.iter().map(|(_, rate)| rate).sum::<f64>() / n;
                let variance = judged.iter().map(|(_, rate)| (rate - mean).powi(2)).sum::<f64>() / n;
                let required = mean - variance.sqrt() * f64::from(config.stdev_factor) / 1000.0;
                for (endpoint, rate) in judged {
                    if !room(ejected) {
                        break;
                    }
                    if rate < required && enforced(config.enforcement_percentage) {
                        let detail = format!("success rate {rate:.3} below {required:.3}");
                        if self.eject(*endpoint, now, EjectionReason::SuccessRate, &detail) {
                            ejected += 1;
                        }
                    }
                }
            }
        }

        if let Some(config) = &outlier.failure_percentage_ejection {
            let judged: Vec<(&(&Uri, &EndpointOutlier), u64)> = counts
                .iter()
                .filter(|(_, ok, failed)| ok + failed >= u64::from(config.request_volume) && ok + failed > 0)
                .map(|(endpoint, ok, failed)| (*endpoint, failed * 100 / (ok + failed)))
                .collect();
            if judged.len() >= config.minimum_hosts.max(1) as usize {
                for (endpoint, percent) in judged {
                    if !room(ejected) {
                        break;
                    }
                    if percent > u64::from(config.threshold) && enforced(config.enforcement_percentage) {
                        let detail = format!("{percent}% of attempts failed, above {}%", config.threshold);
                        if self.eject(*endpoint, now, EjectionReason::FailurePercentage, &detail) {
                            ejected += 1;
                        }
                    }
                }
            }
        }

        // Endpoints in rotation (not those just ejected) move their multiplier back down.
        for (_, outlier) in endpoints {
            let mut state = outlier.lock();
            if !state.ejected(now) {
                state.multiplier = state.multiplier.saturating_sub(1);
            }
        }
    }

    /// Ejects `endpoint` for a statistical `reason` unless it is ejected already;
    /// whether it did.
    fn eject(
        &self,
        (uri, outlier): (&Uri, &EndpointOutlier),
        now: Instant,
        reason: EjectionReason,
        detail: &str,
    ) -> bool {
        let mut state = outlier.lock();
        if state.ejected(now) {
            return false;
        }
        state.multiplier = state.multiplier.saturating_add(1);
        let longest = self.config.base_ejection_time.max(self.config.max_ejection_time);
        let length = self.config.base_ejection_time.saturating_mul(state.multiplier).min(longest);
        state.ejected_until = Some(now + length);
        state.ejected_for = Some(reason);
        self.metrics.ejected(reason);
        tracing::warn!(
            upstream = self.target,
            endpoint = %redact::uri(uri),
            reason = reason.label(),
            detail,
            ejected_ms = length.as_millis() as u64,
            "endpoint ejected"
        );
        true
    }
}

/// Whether a candidate is ejected, given gRFC A50's `enforcementPercentage`.
fn enforced(percentage: u32) -> bool {
    percentage >= 100 || rand::rng().random_range(0..100) < percentage
}
