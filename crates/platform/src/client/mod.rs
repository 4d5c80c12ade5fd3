//! Client side of service-to-service calls: a channel that follows a resolver,
//! balances over connected endpoints, ejects failing ones, retries within a budget,
//! and gives every call a deadline that holds across hops.
//!
//! Use it as the channel of any generated client:
//! `UserServiceClient::new(ResilientChannel::new("users", &config, resolver, api::FILE_DESCRIPTOR_SET)?)`.

mod balance;
pub mod config;
pub mod methods;

use std::{
    error::Error as StdError,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Uri};
use http_body_util::{BodyExt, Full, Limited};
use rand::Rng;
use tokio::time::Instant;
use tonic::{Code, Status, body::Body};
use tower::{
    Service, ServiceBuilder, ServiceExt,
    retry::budget::{Budget, TpsBudget},
};

pub use self::config::{BalancerKind, ClientConfig, OutlierDetection, RetryBudget, RetryPolicy, StatusCodeName};
use self::{
    balance::{Balancer, NoHealthyEndpoint, Tried},
    methods::MethodTable,
};
use crate::{
    consul::Consul,
    deadline,
    discovery::{self, Resolver, ResolverKind},
};

/// The error type of [`ResilientChannel`]: always a boxed [`Status`], which tonic's
/// generated clients hand back as is.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// How close to its deadline a CANCELLED answer counts as the upstream giving up at
/// the deadline (the two timers start a network transit apart).
const DEADLINE_SLACK: Duration = Duration::from_millis(20);

/// Largest request body buffered for retries (tonic's default message size limit).
const MAX_RETRY_BUFFER: usize = 4 * 1024 * 1024;

/// Running totals of one channel, for logs and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Attempts sent to an endpoint (first tries and retries).
    pub attempts: AtomicU64,
    /// Retries sent.
    pub retries: AtomicU64,
    /// Retries wanted but refused by the retry budget.
    pub budget_exhausted: AtomicU64,
    /// Endpoint ejections by outlier detection.
    pub ejections: AtomicU64,
}

/// A snapshot of a channel's counters and endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientStats {
    /// See [`Counters::attempts`].
    pub attempts: u64,
    /// See [`Counters::retries`].
    pub retries: u64,
    /// See [`Counters::budget_exhausted`].
    pub budget_exhausted: u64,
    /// See [`Counters::ejections`].
    pub ejections: u64,
    /// Connected endpoints.
    pub endpoints: usize,
    /// Connected endpoints ejected right now.
    pub ejected: usize,
}

/// Builds the resolver `config` asks for. `key` is the config section of this client
/// (e.g. `users`), used in error messages.
///
/// # Errors
/// A one-line message naming the key: a malformed static endpoint, a missing
/// `consul_service` or `dns_name`, or `consul` asked for without a Consul client.
pub fn resolver(key: &str, config: &ClientConfig, consul: Option<&Consul>) -> Result<Resolver, String> {
    match config.resolver {
        ResolverKind::Static => {
            let uris = config
                .endpoints
                .iter()
                .map(|endpoint| match endpoint.parse::<Uri>() {
                    Ok(uri) if uri.scheme().is_some() && uri.authority().is_some() => Ok(uri),
                    _ => Err(format!(
                        "invalid config key `{key}.endpoints`: {endpoint:?} is not an http://host:port address"
                    )),
                })
                .collect::<Result<_, _>>()?;
            Ok(discovery::fixed(uris))
        }
        ResolverKind::Consul => {
            if config.consul_service.is_empty() {
                return Err(format!(
                    "invalid config key `{key}.consul_service`: required when {key}.resolver = consul"
                ));
            }
            let consul = consul.ok_or_else(|| format!("{key}.resolver = consul needs the `consul` config section"))?;
            Ok(discovery::consul(consul.clone(), config.consul_service.clone(), config.consul_wait))
        }
        ResolverKind::Dns => {
            if !config.dns_name.contains(':') {
                return Err(format!("invalid config key `{key}.dns_name`: {:?} is not host:port", config.dns_name));
            }
            Ok(discovery::dns(config.dns_name.clone(), config.dns_refresh))
        }
    }
}

/// A gRPC channel over the endpoints of one upstream, with deadlines, retries and
/// outlier ejection (see the module docs and [`ClientConfig`]). Cloning is cheap;
/// clones share endpoints, budget and counters.
#[derive(Clone)]
pub struct ResilientChannel {
    service: DeadlineService<RetryService<Balancer>>,
    balancer: Balancer,
    counters: Arc<Counters>,
}

impl ResilientChannel {
    /// A channel to `target` (its name in logs and errors, e.g. `users`) over the
    /// endpoints `resolver` publishes. `descriptor_set` is the upstream's encoded
    /// `FileDescriptorSet`: it says which methods are idempotent and unary.
    ///
    /// # Errors
    /// When `descriptor_set` does not decode.
    pub fn new(
        target: &str,
        config: &ClientConfig,
        resolver: Resolver,
        descriptor_set: &[u8],
    ) -> Result<Self, prost::DecodeError> {
        let counters = Arc::new(Counters::default());
        let methods = MethodTable::from_descriptor_set(descriptor_set)?;
        let balancer = Balancer::new(
            target,
            resolver,
            config.connect_timeout,
            config.balancer,
            config.outlier_detection.clone(),
            counters.clone(),
        );
        let budget = &config.retry_budget;
        let service = ServiceBuilder::new()
            // The call's deadline first, so it bounds everything below: retries,
            // backoff, waiting for a first connection.
            .layer_fn(|inner| DeadlineService { inner, config: Arc::new(config.clone()) })
            // Retries next: each attempt goes back through the balancer, which can
            // then pick another endpoint.
            .layer_fn(|inner| RetryService {
                inner,
                target: Arc::from(target),
                policy: Arc::new(config.retry_policy.clone()),
                budget: Arc::new(TpsBudget::new(budget.window(), budget.min_per_second, budget.ratio)),
                methods: Arc::new(methods.clone()),
                counters: counters.clone(),
            })
            // One attempt on one endpoint.
            .service(balancer.clone());
        Ok(Self { service, balancer, counters })
    }

    /// The counters and endpoint counts right now.
    pub fn stats(&self) -> ClientStats {
        let (endpoints, ejected) = self.balancer.endpoint_counts();
        ClientStats {
            attempts: self.counters.attempts.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
            budget_exhausted: self.counters.budget_exhausted.load(Ordering::Relaxed),
            ejections: self.counters.ejections.load(Ordering::Relaxed),
            endpoints,
            ejected,
        }
    }
}

impl Service<http::Request<Body>> for ResilientChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.service.call(request)
    }
}

/// The deadline of the whole call, attempts and backoff included.
#[derive(Debug, Clone, Copy)]
struct CallDeadline(Instant);

/// Gives each call a deadline: the earliest of the method's configured timeout, the
/// caller's own `grpc-timeout`, and what remains of the call being served (so a
/// deadline holds across hops, tonic #2316); enforces it here too, so a hung
/// connection cannot hold the caller past it.
#[derive(Clone)]
struct DeadlineService<S> {
    inner: S,
    config: Arc<ClientConfig>,
}

impl<S> Service<http::Request<Body>> for DeadlineService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default();
        let mut deadline = Instant::now() + self.config.timeout_of(method);
        // The incoming deadline is read here, synchronously, inside the served call's scope.
        for other in [deadline::from_headers(request.headers()), deadline::incoming()].into_iter().flatten() {
            deadline = deadline.min(other);
        }
        request.extensions_mut().insert(CallDeadline(deadline));
        let call = self.inner.call(request);
        Box::pin(async move {
            let exceeded = || Status::deadline_exceeded("deadline exceeded before the upstream answered").into();
            match tokio::time::timeout_at(deadline, call).await {
                // tonic's own timers (the server's, and the channel's, both set from
                // our grpc-timeout) end a call at its deadline with CANCELLED; the
                // caller should see what happened: the deadline passed.
                Ok(result) if outcome(&result) == Code::Cancelled && Instant::now() + DEADLINE_SLACK >= deadline => {
                    Err(exceeded())
                }
                Ok(result) => result,
                Err(_) => Err(exceeded()),
            }
        })
    }
}

/// Retries failed attempts per the [`RetryPolicy`], within the [`RetryBudget`].
#[derive(Clone)]
struct RetryService<S> {
    inner: S,
    target: Arc<str>,
    policy: Arc<RetryPolicy>,
    budget: Arc<TpsBudget>,
    methods: Arc<MethodTable>,
    counters: Arc<Counters>,
}

impl<S> Service<http::Request<Body>> for RetryService<S>
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
        // Every call earns the budget its share of retries.
        self.budget.deposit();
        let method = self.methods.get(request.uri().path());
        let retryable = self.policy.max_attempts > 1
            && method.is_some_and(|method| {
                method.single_request && (method.idempotent || request.headers().contains_key("idempotency-key"))
            });
        let this = self.clone();
        if !retryable {
            return Box::pin(async move {
                let request = with_remaining_timeout(request)?;
                this.inner.oneshot(request).await.map_err(into_status).map_err(Into::into)
            });
        }
        Box::pin(this.call_with_retries(request))
    }
}

impl<S> RetryService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    async fn call_with_retries(self, request: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        let (parts, body) = request.into_parts();
        let body = Limited::new(body, MAX_RETRY_BUFFER).collect().await.map_err(|error| {
            Status::resource_exhausted(format!("request to {} not buffered for retries: {error}", self.target))
        })?;
        let body = body.to_bytes();
        let deadline = parts.extensions.get::<CallDeadline>().map(|deadline| deadline.0);
        let tried = Tried::default();
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
                Err(error) if error.is::<NoHealthyEndpoint>() => {
                    return result.map_err(into_status).map_err(Into::into);
                }
                Err(error) => (status_code(error), Pushback::None),
            };
            if code == Code::Ok || !self.policy.retries(code) || attempt >= self.policy.max_attempts {
                return result.map_err(into_status).map_err(Into::into);
            }
            let delay = match pushback {
                Pushback::Stop => return result.map_err(into_status).map_err(Into::into),
                Pushback::After(delay) => delay,
                Pushback::None => self.backoff(attempt),
            };
            if deadline.is_some_and(|deadline| Instant::now() + delay >= deadline) {
                return result.map_err(into_status).map_err(Into::into);
            }
            if !self.budget.withdraw() {
                self.counters.budget_exhausted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(upstream = &*self.target, "retry budget exhausted");
                return result.map_err(into_status).map_err(Into::into);
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(upstream = &*self.target, attempt, grpc.code = ?code, delay_ms = delay.as_millis() as u64, "retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// gRFC A6: before retry `n` (1-based) wait random `[0, min(initial × multiplier^(n-1), max)]`.
    fn backoff(&self, retry: u32) -> Duration {
        let growth = self.policy.backoff_multiplier.powi(retry.saturating_sub(1) as i32);
        let cap = self.policy.initial_backoff.mul_f64(growth.min(1e6)).min(self.policy.max_backoff);
        cap.mul_f64(rand::rng().random::<f64>())
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

/// A copy of the buffered request for one attempt.
fn rebuild(parts: &http::request::Parts, body: Bytes) -> http::Request<Body> {
    let mut request = http::Request::new(Body::new(Full::new(body)));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    request
}

/// Sets `grpc-timeout` to what remains of the call's deadline.
///
/// # Errors
/// DEADLINE_EXCEEDED when nothing remains.
fn with_remaining_timeout(mut request: http::Request<Body>) -> Result<http::Request<Body>, Status> {
    if let Some(CallDeadline(deadline)) = request.extensions().get::<CallDeadline>().copied() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Status::deadline_exceeded("deadline exceeded before the call was sent"));
        }
        request.headers_mut().insert(deadline::GRPC_TIMEOUT, deadline::encode_timeout(remaining));
    }
    Ok(request)
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers.get("grpc-status").map(HeaderValue::as_bytes).map(Code::from_bytes)
}

/// The status code a result stands for: OK for a response still streaming.
fn outcome(result: &Result<http::Response<Body>, BoxError>) -> Code {
    match result {
        Ok(response) => grpc_status(response.headers()).unwrap_or(Code::Ok),
        Err(error) => status_code(error),
    }
}

fn status_code(error: &BoxError) -> Code {
    error.downcast_ref::<Status>().map_or(Code::Unavailable, Status::code)
}

/// Every error leaves this channel as a [`Status`]; transport errors are UNAVAILABLE.
fn into_status(error: BoxError) -> Status {
    match error.downcast::<Status>() {
        Ok(status) => *status,
        Err(error) => match error.downcast::<NoHealthyEndpoint>() {
            Ok(error) => Status::from(*error),
            Err(error) => Status::unavailable(error.to_string()),
        },
    }
}

#[cfg(test)]
mod tests;
