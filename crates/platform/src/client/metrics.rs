//! The resilient client's own counters, incremented as it goes and registered by [`ClientMetrics::register`]
//! (the balancer exports its endpoint gauges itself).
//!
//! Names, help and the `upstream` label are fixed: the tests and the Grafana dashboard
//! read them.

use prometheus::{IntCounter, IntCounterVec, Opts};

use crate::observability::metrics::Metrics;

/// The counters of one upstream's channel, each labelled `upstream`. Cloning is
/// cheap; clones count into the same counters.
#[derive(Clone)]
pub struct ClientMetrics {
    /// `grpc_client_attempts_total`: attempts sent to an endpoint, first tries and retries.
    pub(super) attempts: IntCounter,
    /// `grpc_client_retries_total`: retries sent.
    pub(super) retries: IntCounter,
    /// `grpc_client_retry_budget_exhausted_total`: retries or hedges wanted but refused by the budget.
    pub(super) budget_exhausted: IntCounter,
    /// `grpc_client_hedges_total`: hedged attempts sent (beyond each call's first).
    pub(super) hedges: IntCounter,
    /// `grpc_client_ejections_total{reason}`: endpoints ejected by outlier detection,
    /// by [`EjectionReason`].
    pub(super) ejections: IntCounterVec,
}

/// Why outlier detection ejected an endpoint: the `reason` label of
/// `grpc_client_ejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EjectionReason {
    /// `consecutive_failures` failures in a row.
    ConsecutiveFailures,
    /// gRFC A50 success-rate ejection.
    SuccessRate,
    /// gRFC A50 failure-percentage ejection.
    FailurePercentage,
}

impl EjectionReason {
    const ALL: [Self; 3] = [Self::ConsecutiveFailures, Self::SuccessRate, Self::FailurePercentage];

    /// The label value.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::ConsecutiveFailures => "consecutive_failures",
            Self::SuccessRate => "success_rate",
            Self::FailurePercentage => "failure_percentage",
        }
    }
}

impl ClientMetrics {
    /// Unregistered counters for `upstream` (they count from the start; see [`Self::register`]).
    pub(super) fn new(upstream: &str) -> Self {
        let counter = |name: &str, help: &str| {
            // A fixed, valid name and one label whose value prometheus escapes: cannot fail.
            IntCounter::with_opts(Opts::new(name, help).const_label("upstream", upstream)).expect("a valid counter")
        };
        Self {
            attempts: counter(
                "grpc_client_attempts_total",
                "Attempts the resilient client sent to an endpoint, first tries and retries.",
            ),
            retries: counter("grpc_client_retries_total", "Retries the resilient client sent."),
            budget_exhausted: counter(
                "grpc_client_retry_budget_exhausted_total",
                "Retries or hedges wanted but refused by the retry budget.",
            ),
            hedges: counter("grpc_client_hedges_total", "Hedged attempts the resilient client sent."),
            ejections: {
                let opts =
                    Opts::new("grpc_client_ejections_total", "Endpoints ejected by outlier detection, by reason.")
                        .const_label("upstream", upstream);
                let ejections = IntCounterVec::new(opts, &["reason"]).expect("a valid counter");
                // Every reason shows from the start, at 0, so rates need no series to appear first.
                for reason in EjectionReason::ALL {
                    ejections.with_label_values(&[reason.label()]);
                }
                ejections
            },
        }
    }

    /// Counts one ejection for `reason`.
    pub(super) fn ejected(&self, reason: EjectionReason) {
        self.ejections.with_label_values(&[reason.label()]).inc();
    }

    /// Ejections so far, all reasons.
    pub(super) fn ejections_total(&self) -> u64 {
        EjectionReason::ALL.iter().map(|reason| self.ejections.with_label_values(&[reason.label()]).get()).sum()
    }

    /// Registers the counters (`grpc_client_ejections_total` with a `reason` label:
    /// `consecutive_failures`, `success_rate`, `failure_percentage`); the balancer
    /// registers its endpoint gauges itself (`Balancer::register_gauges`).
    ///
    /// # Errors
    /// When this upstream's families are already registered in `metrics`.
    pub(super) fn register(&self, metrics: &Metrics) -> prometheus::Result<()> {
        for counter in [&self.attempts, &self.retries, &self.budget_exhausted, &self.hedges] {
            metrics.register(counter.clone())?;
        }
        metrics.register(self.ejections.clone())?;
        Ok(())
    }
}
