//! The balancer: keeps one connected channel per resolved endpoint and sends each
//! attempt to one of them (round-robin or p2c over peak-EWMA), skipping ejected ones.
//!
//! - An endpoint takes calls only once its connection is up ("connect before traffic").
//! - An endpoint the resolver drops takes no new calls; its in-flight calls finish on
//!   the channel they hold, and the connection closes after the last one.
//! - Outlier ejection: see [`OutlierDetection`]. Consecutive failures eject as they
//!   happen; the statistical ejections of gRFC A50 run every `interval` in a task of
//!   their own, which ends with the last clone of the balancer.
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

use prometheus::{
    IntGauge, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use super::{
    config::{BalancerKind, OutlierDetection},
    metrics::ClientMetrics,
    outcome::{BoxError, NoHealthyEndpointError},
    outlier::{EndpointOutlier, Outliers},
};
use crate::{
    discovery::Resolver, observability::metrics::Metrics, support::backoff::Backoff, support::redact,
    transport::tls::ClientTls,
};

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

/// Round-robin or p2c balancer over the endpoints a [`Resolver`] publishes.
#[derive(Clone)]
pub(super) struct Balancer {
    shared: Arc<Shared>,
}

struct Shared {
    target: String,
    /// `<upstream>.tls`: every endpoint is dialled with TLS when set.
    tls: Option<ClientTls>,
    kind: BalancerKind,
    outliers: Outliers,
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
    outlier: EndpointOutlier,
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
        tls: Option<ClientTls>,
    ) -> Self {
        let (stop, stopped) = oneshot::channel();
        let shared = Arc::new(Shared {
            target: target.to_owned(),
            tls,
            kind,
            outliers: Outliers::new(target, outlier, metrics.clone()),
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
        if shared.outliers.config().statistical() {
            tokio::spawn(sweep_every_interval(Arc::downgrade(&shared)));
        }
        Self { shared }
    }

    /// (connected endpoints, of which ejected now).
    pub(super) fn endpoint_counts(&self) -> (usize, usize) {
        let now = Instant::now();
        let endpoints = lock(&self.shared.endpoints);
        let ejected = endpoints.iter().filter(|endpoint| !endpoint.available(now)).count();
        (endpoints.len(), ejected)
    }

    /// Registers the gauges `grpc_client_endpoints` and `grpc_client_ejected_endpoints`
    /// of `upstream`, read from this balancer at scrape time (an ejection ends by the
    /// clock, not by an event a gauge could follow).
    ///
    /// # Errors
    /// When this upstream's gauges are already registered in `metrics`.
    pub(super) fn register_gauges(&self, metrics: &Metrics, upstream: &str) -> prometheus::Result<()> {
        metrics.register(EndpointGauges::new(upstream, self.clone())?)?;
        Ok(())
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
        self.outliers.record(&endpoint.uri, &endpoint.outlier, failed);
    }

    /// One run of gRFC A50's interval timer over the endpoints connected now (see [`Outliers::sweep`]).
    fn sweep(&self) {
        let endpoints: Vec<Arc<EndpointState>> = lock(&self.endpoints).clone();
        let records: Vec<(&Uri, &EndpointOutlier)> =
            endpoints.iter().map(|endpoint| (&endpoint.uri, &endpoint.outlier)).collect();
        self.outliers.sweep(&records);
    }
}

/// Runs [`Shared::sweep`] every `interval` until the balancer is dropped.
async fn sweep_every_interval(shared: Weak<Shared>) {
    let Some(period) = shared.upgrade().map(|shared| shared.outliers.config().interval) else { return };
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        shared.sweep();
    }
}

impl EndpointState {
    fn available(&self, now: Instant) -> bool {
        !self.outlier.ejected(now)
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

/// Connected and ejected endpoints of one upstream, read at each scrape.
#[derive(Clone)]
struct EndpointGauges {
    balancer: Balancer,
    endpoints: IntGauge,
    ejected: IntGauge,
}

impl EndpointGauges {
    fn new(upstream: &str, balancer: Balancer) -> prometheus::Result<Self> {
        let gauge =
            |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help).const_label("upstream", upstream));
        Ok(Self {
            balancer,
            endpoints: gauge("grpc_client_endpoints", "Connected endpoints of the upstream.")?,
            ejected: gauge("grpc_client_ejected_endpoints", "Connected endpoints of the upstream ejected right now.")?,
        })
    }
}

impl Collector for EndpointGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.endpoints.desc().into_iter().chain(self.ejected.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (endpoints, ejected) = self.balancer.endpoint_counts();
        self.endpoints.set(i64::try_from(endpoints).unwrap_or(i64::MAX));
        self.ejected.set(i64::try_from(ejected).unwrap_or(i64::MAX));
        self.endpoints.collect().into_iter().chain(self.ejected.collect()).collect()
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
        let tls = shared.upgrade().and_then(|shared| shared.tls.clone());
        let result = match tls {
            // TLS with the certificates the files hold at each (re)connect; the channel
            // reconnects through the same connector, so rotated files are picked up.
            Some(tls) => endpoint.connect_with_connector(tls.connector()).await,
            None => endpoint.connect().await,
        };
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

#[cfg(test)]
mod tests {
    //! gRFC A50's statistical ejection on a paused clock, over endpoints that are never dialled.

    use super::*;
    use crate::client::{
        config::{FailurePercentageEjection, SuccessRateEjection},
        metrics::EjectionReason,
    };

    /// A balancer's shared state over `n` lazily connected endpoints (nothing is dialled).
    fn shared(outlier: OutlierDetection, n: usize) -> Arc<Shared> {
        let endpoints = (0..n)
            .map(|i| {
                let uri: Uri = format!("http://127.0.0.1:{}", 1000 + i).parse().expect("uri");
                let channel = Endpoint::from(uri.clone()).connect_lazy();
                let channel = PeakEwma::new(ChannelCall(channel), Duration::from_millis(10), 1e10, Default::default());
                Arc::new(EndpointState { uri, channel: Mutex::new(channel), outlier: Default::default() })
            })
            .collect();
        let metrics = ClientMetrics::new("users");
        Arc::new(Shared {
            target: "users".to_owned(),
            tls: None,
            kind: BalancerKind::RoundRobin,
            outliers: Outliers::new("users", outlier, metrics.clone()),
            metrics,
            endpoints: Mutex::new(endpoints),
            first_connects: AtomicUsize::new(0),
            changed: Notify::new(),
            next: AtomicUsize::new(0),
            _stop: oneshot::channel().0,
        })
    }

    fn endpoint(shared: &Shared, i: usize) -> Arc<EndpointState> {
        lock(&shared.endpoints)[i].clone()
    }

    /// `calls` attempts on endpoint `i`, `percent_failing` % of them failing, spread
    /// out so that no two failures come in a row (consecutive-failure ejection never fires).
    fn record(shared: &Shared, i: usize, calls: u64, percent_failing: u64) {
        let endpoint = endpoint(shared, i);
        let mut failed_so_far = 0;
        for call in 1..=calls {
            let failed = call * percent_failing / 100 > failed_so_far;
            failed_so_far += u64::from(failed);
            shared.record(&endpoint, failed);
        }
    }

    fn ejected(shared: &Shared) -> Vec<usize> {
        let now = Instant::now();
        let endpoints = lock(&shared.endpoints);
        (0..endpoints.len()).filter(|i| !endpoints[*i].available(now)).collect()
    }

    fn ejections(shared: &Shared, reason: EjectionReason) -> u64 {
        shared.metrics.ejections.with_label_values(&[reason.label()]).get()
    }

    fn failure_percentage(threshold: u32, minimum_hosts: u32) -> OutlierDetection {
        OutlierDetection {
            failure_percentage_ejection: Some(FailurePercentageEjection {
                threshold,
                minimum_hosts,
                request_volume: 50,
                ..Default::default()
            }),
            max_ejection_percent: 50,
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_failing_a_third_of_its_calls_is_ejected_by_failure_percentage_and_returns_after_the_base_time()
    {
        let shared = shared(failure_percentage(20, 2), 3);
        record(&shared, 0, 100, 30);
        record(&shared, 1, 100, 0);
        record(&shared, 2, 100, 5);
        assert!(ejected(&shared).is_empty(), "30 % spread out never makes three failures in a row");

        shared.sweep();
        assert_eq!(ejected(&shared), vec![0]);
        assert_eq!(ejections(&shared, EjectionReason::FailurePercentage), 1);
        assert_eq!(ejections(&shared, EjectionReason::ConsecutiveFailures), 0);

        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(ejected(&shared), vec![0], "still out before base_ejection_time (1s)");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(ejected(&shared).is_empty(), "back after base_ejection_time");
    }

    #[tokio::test(start_paused = true)]
    async fn success_rate_ejection_takes_out_the_endpoint_below_mean_minus_stdev_factor_stdevs() {
        let outlier = OutlierDetection {
            success_rate_ejection: Some(SuccessRateEjection { request_volume: 100, ..Default::default() }),
            max_ejection_percent: 50,
            ..Default::default()
        };
        let shared = shared(outlier, 5);
        // Rates 0.70, 1, 1, 1, 1: mean 0.94, stdev 0.12, required 0.94 - 1.9 × 0.12 = 0.712.
        record(&shared, 0, 100, 30);
        for i in 1..5 {
            record(&shared, i, 100, 0);
        }
        shared.sweep();
        assert_eq!(ejected(&shared), vec![0]);
        assert_eq!(ejections(&shared, EjectionReason::SuccessRate), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn too_few_hosts_or_too_few_calls_eject_nothing() {
        let shared = shared(failure_percentage(20, 3), 3);
        record(&shared, 0, 100, 40);
        record(&shared, 1, 100, 0);
        record(&shared, 2, 49, 0);
        shared.sweep();
        assert!(ejected(&shared).is_empty(), "only two endpoints had request_volume (50) calls; minimum_hosts is 3");

        record(&shared, 0, 49, 40);
        record(&shared, 1, 100, 0);
        record(&shared, 2, 100, 0);
        shared.sweep();
        assert!(ejected(&shared).is_empty(), "the failing endpoint had fewer than request_volume calls");
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_caps_how_many_endpoints_are_out_at_once() {
        let mut outlier = failure_percentage(20, 2);
        outlier.max_ejection_percent = 25;
        let shared = shared(outlier, 4);
        record(&shared, 0, 100, 50);
        record(&shared, 1, 100, 50);
        record(&shared, 2, 100, 0);
        record(&shared, 3, 100, 0);
        shared.sweep();
        assert_eq!(ejected(&shared).len(), 1, "1 of 4 is 25 %: the second candidate stays in");
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_ejections_last_longer_and_the_multiplier_decays_while_in_rotation() {
        let shared = shared(failure_percentage(20, 2), 2);
        let round = |percent: u64| {
            record(&shared, 0, 100, percent);
            record(&shared, 1, 100, 0);
            shared.sweep();
        };
        round(50);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(ejected(&shared).is_empty(), "first ejection: 1 × base");
        round(50);
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert_eq!(ejected(&shared), vec![0], "second ejection in a row: 2 × base");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(ejected(&shared).is_empty());

        // Two clean intervals bring the multiplier back to 0: the next ejection is 1 × base again.
        round(0);
        round(0);
        round(50);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(ejected(&shared).is_empty(), "after decay the ejection is 1 × base");
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_does_not_end_a_statistical_ejection_but_ends_a_consecutive_failure_one() {
        let shared = shared(failure_percentage(20, 2), 2);
        record(&shared, 0, 100, 50);
        record(&shared, 1, 100, 0);
        shared.sweep();
        shared.record(&endpoint(&shared, 0), false);
        assert_eq!(ejected(&shared), vec![0], "an in-flight call's success does not undo the ejection");

        for _ in 0..3 {
            shared.record(&endpoint(&shared, 1), true);
        }
        assert_eq!(ejected(&shared), vec![0, 1], "three failures in a row eject whatever the percentage cap");
        shared.record(&endpoint(&shared, 1), false);
        assert_eq!(ejected(&shared), vec![0]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_runs_by_itself_every_interval() {
        let mut outlier = failure_percentage(20, 2);
        outlier.interval = Duration::from_secs(10);
        let shared = shared(outlier, 2);
        tokio::spawn(sweep_every_interval(Arc::downgrade(&shared)));
        record(&shared, 0, 100, 50);
        record(&shared, 1, 100, 0);
        tokio::time::sleep(Duration::from_millis(9_999)).await;
        assert!(ejected(&shared).is_empty(), "no sweep before the first interval ends");
        tokio::time::sleep(Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
        assert_eq!(ejected(&shared), vec![0]);
    }
}
