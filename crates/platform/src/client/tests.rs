//! The resilient channel against in-process users servers that answer, fail or hang.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use api::users::v1::{
    CreateUserRequest, CreateUserResponse, GetUserByEmailRequest, GetUserByEmailResponse, GetUserRequest,
    GetUserResponse,
    user_service_client::UserServiceClient,
    user_service_server::{UserService, UserServiceServer},
};
use http::{HeaderValue, Uri};
use tokio::{net::TcpListener, sync::watch, time::Instant};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

use super::*;
use crate::{deadline, discovery};

/// How a fake users server answers every call.
#[derive(Clone, Copy)]
enum Behaviour {
    Answer,
    Unavailable,
    /// UNAVAILABLE with this `grpc-retry-pushback-ms`.
    Pushback(&'static str),
    Hang,
}

/// A users service that counts calls and remembers the last `grpc-timeout` it got.
#[derive(Clone)]
struct Fake {
    behaviour: Behaviour,
    calls: Arc<AtomicUsize>,
    last_timeout: Arc<Mutex<Option<Duration>>>,
}

impl Fake {
    async fn answer<T: Default>(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Response<T>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let timeout = metadata.get(deadline::GRPC_TIMEOUT).and_then(|value| {
            deadline::parse_timeout(&HeaderValue::from_bytes(value.as_bytes()).expect("header value"))
        });
        *self.last_timeout.lock().expect("lock") = timeout;
        match self.behaviour {
            Behaviour::Answer => Ok(Response::new(T::default())),
            Behaviour::Unavailable => Err(Status::unavailable("failing on purpose")),
            Behaviour::Pushback(ms) => {
                let mut metadata = tonic::metadata::MetadataMap::new();
                metadata.insert("grpc-retry-pushback-ms", ms.parse().expect("ascii"));
                Err(Status::with_metadata(Code::Unavailable, "pushing back", metadata))
            }
            Behaviour::Hang => std::future::pending().await,
        }
    }
}

#[tonic::async_trait]
impl UserService for Fake {
    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<CreateUserResponse>, Status> {
        self.answer(request.metadata()).await
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        self.answer(request.metadata()).await
    }

    async fn get_user_by_email(
        &self,
        request: Request<GetUserByEmailRequest>,
    ) -> Result<Response<GetUserByEmailResponse>, Status> {
        self.answer(request.metadata()).await
    }
}

async fn serve(behaviour: Behaviour) -> (Uri, Fake) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let uri = format!("http://{}", listener.local_addr().expect("addr")).parse().expect("uri");
    let fake = Fake { behaviour, calls: Arc::default(), last_timeout: Arc::default() };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(UserServiceServer::new(fake.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (uri, fake)
}

/// Fast backoff so tests spend no time waiting.
fn config() -> ClientConfig {
    let mut config = ClientConfig::with_endpoints(Vec::new());
    config.retry_policy.initial_backoff = Duration::from_millis(1);
    config.retry_policy.max_backoff = Duration::from_millis(2);
    config.outlier_detection.base_ejection_time = Duration::from_secs(60);
    config
}

fn channel(config: &ClientConfig, resolver: Resolver) -> ResilientChannel {
    ResilientChannel::new("users", config, resolver, api::FILE_DESCRIPTOR_SET).expect("descriptor decodes")
}

async fn get(client: &mut UserServiceClient<ResilientChannel>) -> Result<(), Status> {
    client.get_user_by_email(GetUserByEmailRequest { email: "a@example.com".into() }).await.map(drop)
}

fn calls(fake: &Fake) -> usize {
    fake.calls.load(Ordering::SeqCst)
}

#[tokio::test]
async fn round_robin_alternates_over_the_endpoints() {
    let (a, fake_a) = serve(Behaviour::Answer).await;
    let (b, fake_b) = serve(Behaviour::Answer).await;
    let mut client = UserServiceClient::new(channel(&config(), discovery::fixed(vec![a, b])));
    for _ in 0..10 {
        get(&mut client).await.expect("the call succeeds");
    }
    assert_eq!((calls(&fake_a), calls(&fake_b)), (5, 5));
}

#[tokio::test]
async fn p2c_peak_ewma_uses_both_endpoints() {
    let (a, fake_a) = serve(Behaviour::Answer).await;
    let (b, fake_b) = serve(Behaviour::Answer).await;
    let mut config = config();
    config.balancer = BalancerKind::P2cPeakEwma;
    let mut client = UserServiceClient::new(channel(&config, discovery::fixed(vec![a, b])));
    for _ in 0..40 {
        get(&mut client).await.expect("the call succeeds");
    }
    assert!(calls(&fake_a) > 0 && calls(&fake_b) > 0, "{} / {}", calls(&fake_a), calls(&fake_b));
}

#[tokio::test]
async fn a_new_endpoint_set_takes_effect_once_the_new_endpoint_is_connected() {
    let (a, fake_a) = serve(Behaviour::Answer).await;
    let (b, fake_b) = serve(Behaviour::Answer).await;
    let (publish, resolver) = watch::channel(vec![a]);
    let channel = channel(&config(), resolver);
    let mut client = UserServiceClient::new(channel.clone());
    get(&mut client).await.expect("a answers");
    publish.send(vec![b]).expect("the balancer listens");
    // The balancer follows the resolver in the background: call until b has answered
    // (each call still succeeds, on a until it is dropped), then a gets nothing more.
    let mut calls_left = 1000;
    while calls(&fake_b) == 0 {
        get(&mut client).await.expect("a or b answers");
        calls_left -= 1;
        assert!(calls_left > 0, "b never took a call");
    }
    let calls_to_a = calls(&fake_a);
    for _ in 0..3 {
        get(&mut client).await.expect("b answers");
    }
    assert_eq!((calls(&fake_a), calls(&fake_b)), (calls_to_a, 4));
    assert_eq!(channel.stats().endpoints, 1);
}

#[tokio::test]
async fn no_endpoints_is_unavailable_naming_the_target() {
    let mut client = UserServiceClient::new(channel(&config(), discovery::fixed(vec![])));
    let status = get(&mut client).await.expect_err("nowhere to send it");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("users"), "{}", status.message());
}

#[tokio::test]
async fn an_unreachable_endpoint_never_takes_a_call() {
    let dead: Uri = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        format!("http://{}", listener.local_addr().expect("addr")).parse().expect("uri")
    };
    let (live, fake) = serve(Behaviour::Answer).await;
    let channel = channel(&config(), discovery::fixed(vec![dead, live]));
    let mut client = UserServiceClient::new(channel.clone());
    for _ in 0..6 {
        get(&mut client).await.expect("the live endpoint answers");
    }
    assert_eq!(calls(&fake), 6);
    assert_eq!(channel.stats().attempts, 6, "no attempt went to the dead endpoint");
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_elsewhere_then_ejected() {
    let (bad, fake_bad) = serve(Behaviour::Unavailable).await;
    let (good, fake_good) = serve(Behaviour::Answer).await;
    let channel = channel(&config(), discovery::fixed(vec![bad, good]));
    let mut client = UserServiceClient::new(channel.clone());
    for _ in 0..20 {
        get(&mut client).await.expect("a retry reaches the good endpoint");
    }
    assert_eq!(calls(&fake_good), 20);
    assert_eq!(calls(&fake_bad), 3, "ejected after 3 consecutive failures");
    let stats = channel.stats();
    assert_eq!((stats.ejections, stats.ejected, stats.retries), (1, 1, 3));
}

#[tokio::test]
async fn a_retry_goes_to_an_endpoint_the_call_has_not_tried() {
    let (bad, fake_bad) = serve(Behaviour::Unavailable).await;
    let (good, fake_good) = serve(Behaviour::Answer).await;
    let mut config = config();
    // Random picks and no ejection: only the preference for untried endpoints keeps a
    // retry from landing on the endpoint that just failed.
    config.balancer = BalancerKind::P2cPeakEwma;
    config.outlier_detection.consecutive_failures = 0;
    config.retry_policy.max_attempts = 2;
    let mut client = UserServiceClient::new(channel(&config, discovery::fixed(vec![bad, good])));
    for _ in 0..30 {
        get(&mut client).await.expect("the one retry reaches the good endpoint");
    }
    assert_eq!(calls(&fake_good), 30);
    assert!(calls(&fake_bad) > 0, "p2c sent some first attempts to the bad endpoint");
}

#[tokio::test]
async fn a_negative_server_pushback_stops_retries_and_a_positive_one_allows_them() {
    let mut config = config();
    config.outlier_detection.consecutive_failures = 0;
    let (stop, fake_stop) = serve(Behaviour::Pushback("-1")).await;
    let mut client = UserServiceClient::new(channel(&config, discovery::fixed(vec![stop])));
    get(&mut client).await.expect_err("failing");
    assert_eq!(calls(&fake_stop), 1, "gRFC A6: a negative pushback means do not retry");

    let (wait, fake_wait) = serve(Behaviour::Pushback("1")).await;
    let mut client = UserServiceClient::new(channel(&config, discovery::fixed(vec![wait])));
    get(&mut client).await.expect_err("failing");
    assert_eq!(calls(&fake_wait), 3, "retried after the pushback, up to maxAttempts");
}

#[tokio::test]
async fn with_every_endpoint_ejected_a_call_fails_at_once_without_an_attempt() {
    let (bad, fake_bad) = serve(Behaviour::Unavailable).await;
    let mut config = config();
    config.retry_policy.max_attempts = 1;
    let channel = channel(&config, discovery::fixed(vec![bad]));
    let mut client = UserServiceClient::new(channel.clone());
    for _ in 0..3 {
        assert_eq!(get(&mut client).await.expect_err("failing").code(), Code::Unavailable);
    }
    let status = get(&mut client).await.expect_err("ejected");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("no healthy endpoint"), "{}", status.message());
    assert_eq!(calls(&fake_bad), 3);
}

#[tokio::test]
async fn retries_stay_within_the_budget_when_every_call_fails() {
    let (bad, fake_bad) = serve(Behaviour::Unavailable).await;
    let mut config = config();
    config.outlier_detection.consecutive_failures = 0;
    config.retry_policy.max_attempts = 5;
    config.retry_budget = RetryBudget { ratio: 0.2, min_per_second: 1, ttl: Duration::from_secs(1) };
    let channel = channel(&config, discovery::fixed(vec![bad]));
    let mut client = UserServiceClient::new(channel.clone());
    let started = Instant::now();
    let calls_made = 50;
    for _ in 0..calls_made {
        assert_eq!(get(&mut client).await.expect_err("always failing").code(), Code::Unavailable);
    }
    let elapsed_windows = started.elapsed().as_secs() + 1;
    let retries = calls(&fake_bad) - calls_made;
    // TpsBudget: ratio × calls in the window, plus min_per_second × ttl per window elapsed.
    let allowed = (0.2 * calls_made as f64) as usize + elapsed_windows as usize + 1;
    assert!(retries <= allowed, "{retries} retries, budget {allowed}");
    assert!(channel.stats().budget_exhausted > 0, "without a budget there would be {} retries", 4 * calls_made);
}

#[tokio::test]
async fn a_method_without_declared_idempotency_is_not_retried_unless_it_carries_an_idempotency_key() {
    let (bad, fake_bad) = serve(Behaviour::Unavailable).await;
    let mut config = config();
    config.outlier_detection.consecutive_failures = 0;
    let mut client = UserServiceClient::new(channel(&config, discovery::fixed(vec![bad])));
    let create = || CreateUserRequest { email: "a@example.com".into(), name: "A".into() };
    client.create_user(create()).await.expect_err("failing");
    assert_eq!(calls(&fake_bad), 1, "CreateUser is not idempotent");
    let mut keyed = Request::new(create());
    keyed.metadata_mut().insert("idempotency-key", "k-1".parse().expect("ascii"));
    client.create_user(keyed).await.expect_err("failing");
    assert_eq!(calls(&fake_bad), 1 + 3, "with a key it is retried up to maxAttempts");
}

#[tokio::test]
async fn the_deadline_sent_is_the_earliest_of_config_caller_and_the_call_being_served() {
    let (uri, fake) = serve(Behaviour::Answer).await;
    let mut config = config();
    config.timeout = Duration::from_secs(5);
    let mut client = UserServiceClient::new(channel(&config, discovery::fixed(vec![uri])));
    let sent = |fake: &Fake| fake.last_timeout.lock().expect("lock").expect("a grpc-timeout was sent");

    get(&mut client).await.expect("answers");
    assert!(sent(&fake) > Duration::from_secs(4), "config default: {:?}", sent(&fake));

    let mut request = Request::new(GetUserByEmailRequest { email: "a@example.com".into() });
    request.set_timeout(Duration::from_millis(700));
    client.get_user_by_email(request).await.expect("answers");
    assert!(sent(&fake) <= Duration::from_millis(700), "caller's: {:?}", sent(&fake));

    let incoming = Instant::now() + Duration::from_millis(300);
    deadline::scope(Some(incoming), get(&mut client)).await.expect("answers");
    assert!(sent(&fake) <= Duration::from_millis(300), "what remains of the served call: {:?}", sent(&fake));
}

#[tokio::test]
async fn a_call_past_its_deadline_is_deadline_exceeded() {
    let (uri, _fake) = serve(Behaviour::Hang).await;
    let mut config = config();
    config.timeout = Duration::from_millis(50);
    let mut client = UserServiceClient::new(channel(&config, discovery::fixed(vec![uri])));
    let status = get(&mut client).await.expect_err("never answers");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

/// A users server on a runtime of its own: `kill` drops its tasks and sockets at once,
/// as `kill -9` does to a process.
struct Killable {
    uri: Uri,
    fake: Fake,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Killable {
    fn serve(behaviour: Behaviour) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let uri = format!("http://{}", listener.local_addr().expect("addr")).parse().expect("uri");
        let fake = Fake { behaviour, calls: Arc::default(), last_timeout: Arc::default() };
        let service = UserServiceServer::new(fake.clone());
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
        });
        Self { uri, fake, runtime: Some(runtime) }
    }

    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's task would panic; shutting down does not.
        self.kill();
    }
}

#[tokio::test]
async fn a_call_in_flight_on_an_endpoint_that_dies_is_retried_on_another() {
    let mut dying = Killable::serve(Behaviour::Hang);
    let (good, fake_good) = serve(Behaviour::Answer).await;
    let mut config = config();
    config.timeout = Duration::from_secs(10);
    let channel = channel(&config, discovery::fixed(vec![dying.uri.clone(), good]));
    // Round-robin: of two calls in flight, one is on the dying endpoint.
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let mut client = UserServiceClient::new(channel.clone());
            tokio::spawn(async move { get(&mut client).await })
        })
        .collect();
    let mut answered = 0;
    while calls(&dying.fake) == 0 {
        tokio::task::yield_now().await;
    }
    dying.kill();
    for call in in_flight {
        call.await.expect("the call task ends").expect("retried on the good endpoint");
        answered += 1;
    }
    assert_eq!(answered, 2);
    assert_eq!(calls(&fake_good), 2, "the one from the dying endpoint was retried here");
    // Calls sent right after the death, before the channel has noticed, are retried too.
    let mut client = UserServiceClient::new(channel.clone());
    for _ in 0..6 {
        get(&mut client).await.expect("retried on the good endpoint");
    }
}

#[tokio::test]
async fn the_resilient_clients_counters_and_endpoints_are_exported_per_upstream() {
    let config = ClientConfig::with_endpoints(Vec::new());
    let metrics = Metrics::new();
    channel_with_metrics(&config, &metrics);
    let text = metrics.render();
    for line in [
        "# TYPE grpc_client_retries_total counter",
        "grpc_client_retries_total{upstream=\"users\"} 0",
        "# TYPE grpc_client_endpoints gauge",
        "grpc_client_ejected_endpoints{upstream=\"users\"} 0",
        "grpc_client_retry_budget_exhausted_total{upstream=\"users\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
}

fn channel_with_metrics(config: &ClientConfig, metrics: &Metrics) -> Channel {
    super::channel("users", config, None, metrics, api::FILE_DESCRIPTOR_SET).expect("builds")
}

#[tokio::test]
async fn counters_move_as_calls_are_made_and_a_second_registration_of_one_upstream_is_refused() {
    let (bad, _fake_bad) = serve(Behaviour::Unavailable).await;
    let (good, _fake_good) = serve(Behaviour::Answer).await;
    let mut config = config();
    config.resolver = ResolverConfig::Static { endpoints: vec![bad, good] };
    let metrics = Metrics::new();
    let mut client = UserServiceClient::new(channel_with_metrics(&config, &metrics));
    for _ in 0..4 {
        client.get_user_by_email(GetUserByEmailRequest { email: "a@example.com".into() }).await.expect("retried");
    }
    let text = metrics.render();
    let value = |family: &str| -> u64 {
        let prefix = format!("{family}{{upstream=\"users\"}} ");
        let line = text.lines().find(|line| line.starts_with(&prefix)).unwrap_or_else(|| panic!("{family} in {text}"));
        line[prefix.len()..].parse().expect("an integer")
    };
    let retries = value("grpc_client_retries_total");
    assert!(retries > 0, "the bad endpoint's failures were retried:\n{text}");
    assert_eq!(value("grpc_client_attempts_total"), 4 + retries, "one first try per call plus the retries");
    assert_eq!(value("grpc_client_endpoints"), 2);
    assert!(matches!(
        super::channel("users", &config, None, &metrics, api::FILE_DESCRIPTOR_SET),
        Err(ChannelError::Metrics { .. })
    ));
}

#[tokio::test]
async fn work_a_handler_spawns_with_deadline_spawn_still_sends_the_served_calls_deadline() {
    use tower::Layer;
    let (uri, fake) = serve(Behaviour::Answer).await;
    let mut config = config();
    config.timeout = Duration::from_secs(5);
    let client = UserServiceClient::new(channel(&config, discovery::fixed(vec![uri])));
    // The grpc-timeout users saw from each spawned call.
    let seen = Arc::new(Mutex::new(Vec::new()));
    // A served call with a 300 ms deadline whose handler calls users from a spawned
    // task: first with `deadline::spawn`, then with a bare `tokio::spawn`.
    let handler = {
        let seen = seen.clone();
        tower::service_fn(move |_: http::Request<()>| {
            let (client, fake, seen) = (client.clone(), fake.clone(), seen.clone());
            async move {
                let last = || fake.last_timeout.lock().expect("lock").expect("a grpc-timeout");
                let mut kept = client.clone();
                deadline::spawn(async move { get(&mut kept).await }).await.expect("joins").expect("answers");
                seen.lock().expect("lock").push(last());
                let mut lost = client.clone();
                tokio::spawn(async move { get(&mut lost).await }).await.expect("joins").expect("answers");
                seen.lock().expect("lock").push(last());
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }
        })
    };
    let mut request = http::Request::new(());
    request.headers_mut().insert(deadline::GRPC_TIMEOUT, HeaderValue::from_static("300m"));
    deadline::PropagateLayer.layer(handler).call(request).await.expect("answered");
    let seen = seen.lock().expect("lock").clone();
    assert!(seen[0] <= Duration::from_millis(300), "deadline::spawn keeps the served deadline: {:?}", seen[0]);
    assert!(seen[1] > Duration::from_secs(1), "a bare tokio::spawn loses it (config default 5s): {:?}", seen[1]);
}

#[tokio::test]
async fn a_password_in_an_endpoint_never_reaches_the_logs() {
    let (logs, _guard) = crate::support::redact::captured::logs();
    let (uri, fake) = serve(Behaviour::Answer).await;
    let with_password: Uri =
        format!("http://admin:s3cret@{}", uri.authority().expect("host and port")).parse().expect("uri");
    let dead: Uri = "http://admin:s3cret@127.0.0.1:1".parse().expect("uri");
    let mut client = UserServiceClient::new(channel(&config(), discovery::fixed(vec![with_password, dead])));
    get(&mut client).await.expect("the live endpoint answers");
    assert_eq!(calls(&fake), 1);
    let text = logs.text();
    assert!(text.contains("endpoint connected"), "{text}");
    assert!(!text.contains("s3cret") && !text.contains("admin"), "{text}");
}

/// A config hedging GetUserByEmail: a second attempt after `delay`.
fn hedging(delay: Duration) -> ClientConfig {
    let mut config = config();
    config.balancer = BalancerKind::RoundRobin;
    config.timeout = Duration::from_secs(2);
    let policy = HedgingPolicy { max_attempts: 2, hedging_delay: delay, non_fatal_status_codes: Vec::new() };
    config.hedging_policy.insert("GetUserByEmail".into(), policy);
    config
}

#[tokio::test]
async fn with_one_endpoint_hanging_the_hedge_to_the_other_answers_every_call() {
    let (slow, fake_slow) = serve(Behaviour::Hang).await;
    let (fast, fake_fast) = serve(Behaviour::Answer).await;
    let channel = channel(&hedging(Duration::from_millis(20)), discovery::fixed(vec![slow, fast]));
    let mut client = UserServiceClient::new(channel.clone());
    let started = Instant::now();
    for _ in 0..6 {
        get(&mut client).await.expect("the fast endpoint answers, first or as the hedge");
    }
    assert!(started.elapsed() < Duration::from_secs(2), "no call waited for its deadline: {:?}", started.elapsed());
    assert_eq!(calls(&fake_fast), 6);
    assert!(calls(&fake_slow) >= 1, "round robin sent some first attempts to the hanging endpoint");
    let stats = channel.stats();
    assert_eq!(stats.retries, 0, "a hedged method is not retried");
    assert_eq!(u64::try_from(calls(&fake_slow)).expect("small"), channel.metrics.hedges.get());
}

#[tokio::test]
async fn hedges_stay_within_the_retry_budget() {
    let (slow, fake_slow) = serve(Behaviour::Hang).await;
    let mut config = hedging(Duration::from_millis(5));
    config.timeout = Duration::from_millis(100);
    // No budget at all: the hedge is wanted and refused every time.
    config.retry_budget = RetryBudget { ratio: 0.0, min_per_second: 0, ttl: Duration::from_secs(1) };
    let (fast, fake_fast) = serve(Behaviour::Answer).await;
    let channel = channel(&config, discovery::fixed(vec![slow, fast]));
    let mut client = UserServiceClient::new(channel.clone());
    let mut failed = 0;
    for _ in 0..4 {
        failed += usize::from(get(&mut client).await.is_err());
    }
    assert_eq!(channel.metrics.hedges.get(), 0);
    assert_eq!(failed, calls(&fake_slow), "a first attempt on the hanging endpoint ran into its deadline");
    assert_eq!(calls(&fake_fast) + calls(&fake_slow), 4, "one attempt per call");
    assert!(channel.stats().budget_exhausted >= 1);
}
