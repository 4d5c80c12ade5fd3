//! The client's attempts step: gRFC A6 retries (or, per method, hedging) of idempotent single-request calls, within one retry budget, each attempt back through the balancer.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::time::Instant;
use tonic::{Code, body::Body};
use tower::{
    Layer, Service, ServiceExt,
    layer::layer_fn,
    retry::budget::{Budget, TpsBudget},
};

use super::{
    balance::Tried,
    config::ClientConfig,
    deadline::{CallDeadline, with_remaining_timeout},
    hedge,
    metrics::ClientMetrics,
    outcome::{BoxError, NoHealthyEndpointError, grpc_status, into_status, status_code},
    replay::{Shared, buffer, rebuild},
};
use crate::{
    support::backoff::{Backoff, Jitter},
    support::methods::Methods,
};

/// Makes each call's attempts: hedged per the method's
/// [`HedgingPolicy`](super::config::HedgingPolicy) when it has one (see `hedge`),
/// else retried per the [`RetryPolicy`](super::config::RetryPolicy) (gRFC A6: a method
/// is either retried or hedged); both within one retry budget. Only calls whose method
/// the descriptors declare single-request and idempotent (or that carry an
/// `idempotency-key` header) get more than one attempt.
#[derive(Clone)]
pub(super) struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Retry<S> {
    /// The layer for calls to `target` (its name in errors and logs), with the retry
    /// and hedging policies of `config`; one budget is shared by every call through it;
    /// retries, hedges and refusals count into `metrics`.
    pub(super) fn layer(
        target: &str,
        config: &ClientConfig,
        budget: TpsBudget,
        methods: Methods,
        metrics: ClientMetrics,
    ) -> impl Layer<S, Service = Self> + Clone {
        let budget = Arc::new(budget);
        let shared = Arc::new(Shared { target: target.to_owned(), config: config.clone(), budget, methods, metrics });
        layer_fn(move |inner| Self { inner, shared: shared.clone() })
    }
}

impl<S> Service<http::Request<Body>> for Retry<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // Every call earns the budget its share of retries or hedges.
        self.shared.budget.deposit();
        let path = request.uri().path();
        let repeatable = self.shared.methods.get(path).is_some_and(|method| {
            method.kind.single_request() && (method.idempotent || request.headers().contains_key("idempotency-key"))
        });
        let method_name = path.rsplit('/').next().unwrap_or_default();
        let hedging = self.shared.config.hedging_of(method_name).filter(|_| repeatable).cloned();
        let this = self.clone();
        if let Some(policy) = hedging {
            return Box::pin(hedge::call_hedged(this.inner, this.shared, request, policy));
        }
        if !repeatable || this.shared.config.retry_policy.max_attempts <= 1 {
            return Box::pin(async move {
                let request = with_remaining_timeout(request)?;
                this.inner.oneshot(request).await.map_err(into_status).map_err(Into::into)
            });
        }
        Box::pin(this.call_with_retries(request))
    }
}

impl<S> Retry<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    async fn call_with_retries(self, request: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        let shared = &self.shared;
        let (parts, body) = request.into_parts();
        let body = buffer(body, &shared.target, "retries").await?;
        let deadline = parts.extensions.get::<CallDeadline>().map(|deadline| deadline.0);
        let tried = Tried::default();
        // gRFC A6: before retry n wait random [0, min(initial × multiplier^(n-1), max)].
        let policy = &shared.config.retry_policy;
        let mut backoff =
            Backoff::exponential(policy.initial_backoff, policy.max_backoff, policy.backoff_multiplier, Jitter::Full);
        let mut attempt = 1;
        loop {
            let mut request = rebuild(&parts, body.clone());
            request.extensions_mut().insert(tried.clone());
            let request = with_remaining_timeout(request)?;
            let result = self.inner.clone().oneshot(request).await;
            let (code, pushback) = match &result {
                // Response headers without grpc-status: the call is committed (gRFC A6).
                Ok(response) => match grpc_status(response.headers()) {
                    None => return result,
                    Some(code) => (code, pushback(response.headers())),
                },
                Err(error) if error.is::<NoHealthyEndpointError>() => {
                    return result.map_err(into_status).map_err(Into::into);
                }
                Err(error) => (status_code(error), Pushback::None),
            };
            if code == Code::Ok || !policy.retries(code) || attempt >= policy.max_attempts {
                return result.map_err(into_status).map_err(Into::into);
            }
            // The backoff grows with every attempt, pushed back or not.
            let backoff_delay = backoff.next_delay();
            let delay = match pushback {
                Pushback::Stop => return result.map_err(into_status).map_err(Into::into),
                Pushback::After(delay) => delay,
                Pushback::None => backoff_delay,
            };
            if deadline.is_some_and(|deadline| Instant::now() + delay >= deadline) {
                return result.map_err(into_status).map_err(Into::into);
            }
            if !shared.budget.withdraw() {
                shared.metrics.budget_exhausted.inc();
                tracing::debug!(upstream = shared.target, "retry budget exhausted");
                return result.map_err(into_status).map_err(Into::into);
            }
            shared.metrics.retries.inc();
            tracing::debug!(upstream = shared.target, attempt, grpc.code = ?code, delay_ms = delay.as_millis() as u64, "retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// What a server's `grpc-retry-pushback-ms` says (gRFC A6, "Pushback").
enum Pushback {
    /// No header: use the policy's backoff.
    None,
    /// Retry after exactly this long.
    After(Duration),
    /// Negative or malformed: do not retry.
    Stop,
}

fn pushback(headers: &http::HeaderMap) -> Pushback {
    match headers.get("grpc-retry-pushback-ms") {
        None => Pushback::None,
        Some(value) => match value.to_str().ok().and_then(|value| value.parse::<u64>().ok()) {
            Some(ms) => Pushback::After(Duration::from_millis(ms)),
            None => Pushback::Stop,
        },
    }
}
