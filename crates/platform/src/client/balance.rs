//! The balancer: keeps one connected channel per resolved endpoint and sends each
//! attempt to one of them (round-robin or p2c over peak-EWMA), skipping ejected ones.
//!
//! - An endpoint takes calls only once its connection is up ("connect before traffic").
//! - An endpoint the resolver drops takes no new calls; its in-flight calls finish on
//!   the channel they hold, and the connection closes after the last one.
//! - Outlier ejection: see [`OutlierDetection`].
//! - A call with no healthy endpoint fails at once with UNAVAILABLE, unless endpoints
//!   are still making their first connection, in which case it waits for one (bounded
//!   by the call's deadline, applied above this layer): calls right after start-up do
//!   not fail (tonic #1147).

use std::{
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http::Uri;
use rand::Rng;
use tokio::{
    sync::{Notify, oneshot},
    time::Instant,
};
use tonic::{
    Code, Status,
    body::Body,
    transport::{Channel, Endpoint},
};
use tower::{
    Service, ServiceExt,
    load::{CompleteOnResponse, Load, PeakEwma},
};

use super::{
    BoxError, ClientMetrics,
    config::{BalancerKind, OutlierDetection},
};
use crate::{backoff::Backoff, discovery::Resolver, redact};

/// The endpoints the attempts of one call went to, shared by its attempts (the retry
/// layer puts one in each attempt's extensions); later attempts prefer other endpoints.
#[derive(Debug, Clone, Default)]
pub(super) struct Tried(Arc<Mutex<Vec<Uri>>>);

impl Tried {
    fn list(&self) -> Vec<Uri> {
        lock(&self.0).clone()
    }

    fn add(&self, uri: Uri) {
        lock(&self.0).push(uri);
    }
}

/// Why the balancer did not send an attempt: not worth retrying, since nothing changes
/// until an ejection expires or the resolver publishes.
#[derive(Debug, thiserror::Error)]
#[error("no healthy endpoint for {target}: {known} known, {ejected} ejected")]
pub struct NoHealthyEndpointError {
    target: String,
    known: usize,
    ejected: usize,
}

impl From<NoHealthyEndpointError> for Status {
    fn from(error: NoHealthyEndpointError) -> Self {
        Status::unavailable(error.to_string())
    }
}

/// Round-robin or p2c balancer over the endpoints a [`Resolver`] publishes.
#[derive(Clone)]
pub(super) struct Balancer {
    shared: Arc<Shared>,
}

struct Shared {
    target: String,
    kind: BalancerKind,
    outlier: OutlierDetection,
    metrics: ClientMetrics,
    endpoints: Mutex<Vec<Arc<EndpointState>>>,
    /// Endpoints making their first connection attempt.
    first_connects: AtomicUsize,
    /// Woken when an endpoint is added or a first connection attempt ends.
    changed: Notify,
    next: AtomicUsize,
    /// Dropped with the last balancer clone, which stops the maintenance task.
    _stop: oneshot::Sender<()>,
}

struct EndpointState {
    uri: Uri,
    /// tower's peak-EWMA load tracker around the channel (its `Service` needs `&mut`).
    channel: Mutex<PeakEwma<ChannelCall>>,
    outlier: Mutex<OutlierState>,
}

#[derive(Default)]
struct OutlierState {
    consecutive_failures: u32,
    /// Ejections since the last success; each doubles the next ejection's length.
    ejections: u32,
    ejected_until: Option<Instant>,
}

/// One call on a tonic channel: readiness is awaited inside the call, so the wrapper
/// itself is always ready (what `PeakEwma` needs to be shared behind a lock).
#[derive(Clone)]
struct ChannelCall(Channel);

impl Service<http::Request<Body>> for ChannelCall {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(self.0.clone().oneshot(request))
    }
}

/// What a pick found.
enum Pick {
    Endpoint(Arc<EndpointState>),
    /// Nothing connected yet, but first connections are under way.
    Wait,
    None(NoHealthyEndpointError),
}

impl Balancer {
    /// Follows `resolver` in a background task that connects new endpoints and drops
    /// removed ones; the task ends with the last clone of the balancer.
    pub(super) fn new(
        target: &str,
        mut resolver: Resolver,
        connect_timeout: Duration,
        kind: BalancerKind,
        outlier: OutlierDetection,
        metrics: ClientMetrics,
    ) -> Self {
        let (stop, stopped) = oneshot::channel();
        let shared = Arc::new(Shared {
            target: target.to_owned(),
            kind,
            outlier,
            metrics,
            endpoints: Mutex::new(Vec::new()),
            first_connects: AtomicUsize::new(0),
            changed: Notify::new(),
            next: AtomicUsize::new(0),
            _stop: stop,
        });
        // Start connecting the initial set now, so a call made right after `new` waits for it.
        let mut connecting = Vec::new();
        let initial = resolver.borrow_and_update().clone();
        reconcile(&shared, &initial, &mut connecting, connect_timeout);
        tokio::spawn(maintain(Arc::downgrade(&shared), resolver, connecting, connect_timeout, stopped));
        Self { shared }
    }

    /// (connected endpoints, of which ejected now).
    pub(super) fn endpoint_counts(&self) -> (usize, usize) {
        let now = Instant::now();
        let endpoints = lock(&self.shared.endpoints);
        let ejected = endpoints.iter().filter(|endpoint| !endpoint.available(now)).count();
        (endpoints.len(), ejected)
    }
}

impl Shared {
    fn pick(&self, tried: &[Uri]) -> Pick {
        let now = Instant::now();
        let endpoints = lock(&self.endpoints);
        let healthy: Vec<&Arc<EndpointState>> = endpoints.iter().filter(|endpoint| endpoint.available(now)).collect();
        if healthy.is_empty() {
            if endpoints.is_empty() && self.first_connects.load(Ordering::SeqCst) > 0 {
                return Pick::Wait;
            }
            return Pick::None(NoHealthyEndpointError {
                target: self.target.clone(),
                known: endpoints.len(),
                ejected: endpoints.len(),
            });
        }
        let untried: Vec<&Arc<EndpointState>> =
            healthy.iter().copied().filter(|endpoint| !tried.contains(&endpoint.uri)).collect();
        let candidates = if untried.is_empty() { healthy } else { untried };
        let chosen = match self.kind {
            BalancerKind::RoundRobin => candidates[self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()],
            BalancerKind::P2cPeakEwma if candidates.len() == 1 => candidates[0],
            BalancerKind::P2cPeakEwma => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..candidates.len());
                let b = (a + rng.random_range(1..candidates.len())) % candidates.len();
                let load = |endpoint: &EndpointState| lock(&endpoint.channel).load();
                if load(candidates[a]) <= load(candidates[b]) { candidates[a] } else { candidates[b] }
            }
        };
        Pick::Endpoint(chosen.clone())
    }

    /// Records the outcome of an attempt on `endpoint` for outlier ejection.
    fn record(&self, endpoint: &EndpointState, failed: bool) {
        let mut state = lock(&endpoint.outlier);
        if !failed {
            *state = OutlierState::default();
            return;
        }
        state.consecutive_failures += 1;
        let threshold = self.outlier.consecutive_failures;
        let now = Instant::now();
        let already_ejected = state.ejected_until.is_some_and(|until| until > now);
        if threshold == 0 || state.consecutive_failures < threshold || already_ejected {
            return;
        }
        let factor = 2u32.saturating_pow(state.ejections.min(16));
        let length = self.outlier.base_ejection_time.saturating_mul(factor).min(self.outlier.max_ejection_time);
        state.ejections += 1;
        state.ejected_until = Some(now + length);
        self.metrics.ejections.inc();
        tracing::warn!(
            upstream = self.target,
            endpoint = %redact::uri(&endpoint.uri),
            consecutive_failures = state.consecutive_failures,
            ejected_ms = length.as_millis() as u64,
            "endpoint ejected"
        );
    }
}

impl EndpointState {
    fn available(&self, now: Instant) -> bool {
        lock(&self.outlier).ejected_until.is_none_or(|until| until <= now)
    }
}

/// Whether an attempt's outcome counts against its endpoint: UNAVAILABLE (which is
/// also what a transport failure becomes) does; application errors (NOT_FOUND,
/// INVALID_ARGUMENT, …) and the deadline passing do not.
fn is_endpoint_failure(result: &Result<http::Response<Body>, Status>) -> bool {
    let code = match result {
        Err(status) => status.code(),
        Ok(response) => match response.headers().get("grpc-status") {
            Some(value) => Code::from_bytes(value.as_bytes()),
            None => Code::Ok,
        },
    };
    code == Code::Unavailable
}

/// A transport error as a status: tonic's own timer firing at the deadline
/// (`TimeoutExpired` in the error's source chain) is CANCELLED, as tonic reports it;
/// any other failure to get an answer from the endpoint (refused, reset, closed
/// mid-call, even when h2 calls the reset a cancel) is UNAVAILABLE, naming the endpoint.
fn transport_status(target: &str, uri: &Uri, error: tonic::transport::Error) -> Status {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return Status::cancelled(format!("{target} at {}: {error}", redact::uri(uri)));
        }
        source = error.source();
    }
    let error: BoxError = Box::new(error);
    Status::unavailable(format!("{target} at {}: {}", redact::uri(uri), Status::from_error(error).message()))
}

impl Service<http::Request<Body>> for Balancer {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per endpoint and awaited inside the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let tried = request.extensions().get::<Tried>().cloned().unwrap_or_default();
            let avoid = tried.list();
            let endpoint = loop {
                // Register for wake-ups before looking, so an endpoint added in between is not missed.
                let changed = shared.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                match shared.pick(&avoid) {
                    Pick::Endpoint(endpoint) => break endpoint,
                    Pick::Wait => changed.await,
                    Pick::None(error) => return Err(error.into()),
                }
            };
            tried.add(endpoint.uri.clone());
            shared.metrics.attempts.inc();
            let attempt = lock(&endpoint.channel).call(request);
            let result = attempt.await.map_err(|error| transport_status(&shared.target, &endpoint.uri, error));
            shared.record(&endpoint, is_endpoint_failure(&result));
            result.map_err(Into::into)
        })
    }
}

type Connecting = Vec<(Uri, tokio::task::JoinHandle<()>)>;

/// Follows the resolver until the balancer is dropped.
async fn maintain(
    shared: Weak<Shared>,
    mut resolver: Resolver,
    mut connecting: Connecting,
    connect_timeout: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            changed = resolver.changed() => if changed.is_err() {
                // The resolver is done (a static list): keep the last set.
                let _ = (&mut stopped).await;
                break;
            },
            _ = &mut stopped => break,
        }
        let wanted = resolver.borrow_and_update().clone();
        let Some(shared) = shared.upgrade() else { break };
        reconcile(&shared, &wanted, &mut connecting, connect_timeout);
    }
    for (_, task) in connecting {
        task.abort();
    }
}

/// Makes the pool follow `wanted`: drops endpoints no longer listed (their in-flight
/// calls keep their channel), starts connecting new ones, each in its own task.
fn reconcile(shared: &Arc<Shared>, wanted: &[Uri], connecting: &mut Connecting, connect_timeout: Duration) {
    lock(&shared.endpoints).retain(|endpoint| wanted.contains(&endpoint.uri));
    connecting.retain(|(uri, task)| {
        let keep = wanted.contains(uri) && !task.is_finished();
        if !keep {
            task.abort();
        }
        keep
    });
    let connected: Vec<Uri> = lock(&shared.endpoints).iter().map(|endpoint| endpoint.uri.clone()).collect();
    for uri in wanted {
        if connected.contains(uri) || connecting.iter().any(|(known, _)| known == uri) {
            continue;
        }
        let first_attempt = FirstAttempt::new(shared);
        let task = tokio::spawn(connect(Arc::downgrade(shared), uri.clone(), connect_timeout, first_attempt));
        connecting.push((uri.clone(), task));
    }
    // Waiting calls look again: some endpoints may be gone.
    shared.changed.notify_waiters();
}

/// Counts an endpoint as making its first connection until dropped: after that attempt,
/// or when its task is aborted.
struct FirstAttempt(Weak<Shared>);

impl FirstAttempt {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.first_connects.fetch_add(1, Ordering::SeqCst);
        Self(Arc::downgrade(shared))
    }
}

impl Drop for FirstAttempt {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.first_connects.fetch_sub(1, Ordering::SeqCst);
            shared.changed.notify_waiters();
        }
    }
}

/// Connects to `uri`, retrying with backoff, and adds it to the pool once connected.
async fn connect(shared: Weak<Shared>, uri: Uri, connect_timeout: Duration, first_attempt: FirstAttempt) {
    let mut first_attempt = Some(first_attempt);
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        // TCP_NODELAY explicitly: without it small HTTP/2 frames wait for Nagle's
        // algorithm and the peer's delayed ACK (~40 ms per call).
        let endpoint = Endpoint::from(uri.clone()).connect_timeout(connect_timeout).tcp_nodelay(true);
        let result = endpoint.connect().await;
        let Some(shared) = shared.upgrade() else { return };
        match result {
            Ok(channel) => {
                let channel = PeakEwma::new(
                    ChannelCall(channel),
                    Duration::from_millis(10),
                    Duration::from_secs(10).as_nanos() as f64,
                    CompleteOnResponse::default(),
                );
                let state =
                    EndpointState { uri: uri.clone(), channel: Mutex::new(channel), outlier: Default::default() };
                lock(&shared.endpoints).push(Arc::new(state));
                tracing::info!(upstream = shared.target, endpoint = %redact::uri(&uri), "endpoint connected");
                drop(first_attempt);
                shared.changed.notify_waiters();
                return;
            }
            Err(error) => {
                // Calls waiting for this first attempt may now fail fast.
                drop(first_attempt.take());
                let delay = backoff.next_delay();
                tracing::debug!(upstream = shared.target, endpoint = %redact::uri(&uri), %error, retry_in_ms = delay.as_millis() as u64, "connect failed");
                drop(shared);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
