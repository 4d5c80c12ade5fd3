//! The client's hedging step: gRFC A6 `hedgingPolicy` for idempotent single-request calls, further attempts after a delay, the first answer wins.

use std::{
    pin::pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::{StreamExt, future::BoxFuture, stream::FuturesUnordered};
use http_body_util::{BodyExt, Full, Limited};
use tonic::{Code, Status, body::Body};
use tower::{
    Layer, Service, ServiceExt,
    layer::layer_fn,
    retry::budget::{Budget, TpsBudget},
};

use super::{
    BoxError, ClientConfig, ClientMetrics,
    balance::{NoHealthyEndpointError, Tried},
    deadline::with_remaining_timeout,
    grpc_status, into_status, status_code,
};
use crate::methods::Methods;

/// Largest request body buffered for hedges (tonic's default message size limit).
const MAX_HEDGE_BUFFER: usize = 4 * 1024 * 1024;

/// Marks an attempt the hedging step sent: the retry step below leaves it alone
/// (gRFC A6: a method is either retried or hedged).
#[derive(Debug, Clone, Copy)]
pub(super) struct Hedged;

/// Hedges calls to methods with a [`HedgingPolicy`](super::config::HedgingPolicy);
/// passes the others through.
#[derive(Clone)]
pub(super) struct Hedge<S> {
    inner: S,
    shared: Arc<Shared>,
}

struct Shared {
    target: String,
    config: ClientConfig,
    budget: Arc<TpsBudget>,
    methods: Methods,
    metrics: ClientMetrics,
}

impl<S> Hedge<S> {
    /// The layer for calls to `target`, with the policies of `config.hedging_policy`;
    /// each hedge is withdrawn from `budget` (the retry budget) and counted in `metrics`.
    pub(super) fn layer(
        target: &str,
        config: &ClientConfig,
        budget: Arc<TpsBudget>,
        methods: Methods,
        metrics: ClientMetrics,
    ) -> impl Layer<S, Service = Self> + Clone {
        let shared = Arc::new(Shared { target: target.to_owned(), config: config.clone(), budget, methods, metrics });
        layer_fn(move |inner| Self { inner, shared: shared.clone() })
    }
}

impl<S> Service<http::Request<Body>> for Hedge<S>
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
        let path = request.uri().path();
        let method_name = path.rsplit('/').next().unwrap_or_default();
        let hedgeable = self.shared.methods.get(path).is_some_and(|method| {
            method.kind.single_request() && (method.idempotent || request.headers().contains_key("idempotency-key"))
        });
        let policy = self.shared.config.hedging_of(method_name).filter(|_| hedgeable).cloned();
        let this = self.clone();
        match policy {
            None => Box::pin(this.inner.oneshot(request)),
            Some(policy) => Box::pin(this.call_hedged(request, policy)),
        }
    }
}

impl<S> Hedge<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    async fn call_hedged(
        self,
        request: http::Request<Body>,
        policy: super::config::HedgingPolicy,
    ) -> Result<http::Response<Body>, BoxError> {
        let shared = &self.shared;
        // Every hedged call earns the budget its share (the retry step below skips hedges).
        shared.budget.deposit();
        let (parts, body) = request.into_parts();
        let body = Limited::new(body, MAX_HEDGE_BUFFER).collect().await.map_err(|error| {
            Status::resource_exhausted(format!("request to {} not buffered for hedging: {error}", shared.target))
        })?;
        let body = body.to_bytes();
        // Shared by the hedges, so each goes to an endpoint the others have not used.
        let tried = Tried::default();
        let send = |inner: S| {
            let mut request = http::Request::new(Body::new(Full::new(body.clone())));
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.version_mut() = parts.version;
            *request.headers_mut() = parts.headers.clone();
            *request.extensions_mut() = parts.extensions.clone();
            request.extensions_mut().insert(tried.clone());
            request.extensions_mut().insert(Hedged);
            async move { inner.oneshot(with_remaining_timeout(request).map_err(BoxError::from)?).await }
        };
        let mut in_flight = FuturesUnordered::new();
        in_flight.push(send(self.inner.clone()));
        let mut sent = 1;
        let mut last: Option<Result<http::Response<Body>, BoxError>> = None;
        loop {
            let may_hedge = sent < policy.max_attempts;
            let mut delay = pin!(tokio::time::sleep(policy.hedging_delay));
            let next = tokio::select! {
                result = in_flight.next(), if !in_flight.is_empty() => Some(result.expect("not empty")),
                () = &mut delay, if may_hedge => None,
                else => break,
            };
            let hedge_now = match next {
                // The delay passed with no answer: hedge.
                None => true,
                Some(result) => {
                    let code = match &result {
                        Ok(response) => grpc_status(response.headers()).unwrap_or(Code::Ok),
                        Err(error) if error.is::<NoHealthyEndpointError>() => Code::Unavailable,
                        Err(error) => status_code(error),
                    };
                    // Dropping `in_flight` on return cancels the other attempts.
                    if code == Code::Ok || !policy.non_fatal(code) {
                        return result.map_err(into_status).map_err(Into::into);
                    }
                    last = Some(result);
                    if !may_hedge && in_flight.is_empty() {
                        break;
                    }
                    // gRFC A6: a non-fatal status sends the next hedge at once.
                    may_hedge
                }
            };
            if hedge_now {
                if !shared.budget.withdraw() {
                    shared.metrics.budget_exhausted.inc();
                    tracing::debug!(upstream = shared.target, "retry budget exhausted: not hedging");
                    // No more hedges: wait for what is in flight.
                    sent = policy.max_attempts;
                    if in_flight.is_empty() {
                        break;
                    }
                    continue;
                }
                sent += 1;
                shared.metrics.hedges.inc();
                in_flight.push(send(self.inner.clone()));
            }
        }
        last.expect("an attempt ended").map_err(into_status).map_err(Into::into)
    }
}
