//! The server stack from outside: a server at its limit of concurrent calls sheds the next one; callers are
//! authenticated by default and limited per method when configured.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use api::users::v1::{
    CreateUserRequest, CreateUserResponse, GetUserByEmailRequest, GetUserByEmailResponse, GetUserRequest,
    GetUserResponse,
    user_service_client::UserServiceClient,
    user_service_server::{UserService, UserServiceServer},
};
use platform::{
    auth::{AuthConfig, Authenticator},
    config::ServerConfig,
    observability::metrics::Metrics,
    server::GrpcServer,
    server::rate_limit::RateLimitConfig,
};
use secrecy::ExposeSecret;
use testkit::DevIssuer;
use tokio::{sync::Notify, time::Instant};
use tonic::{Code, Request, Response, Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// The deadline of each call: a guard against a hung test, far above any real answer.
const DEADLINE: Duration = Duration::from_secs(20);

/// A users service whose `GetUser` holds its call until the test releases it.
struct Held {
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

#[tonic::async_trait]
impl UserService for Held {
    async fn create_user(&self, _: Request<CreateUserRequest>) -> Result<Response<CreateUserResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_user(&self, _: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(Response::new(GetUserResponse { user: None }))
    }

    async fn get_user_by_email(
        &self,
        _: Request<GetUserByEmailRequest>,
    ) -> Result<Response<GetUserByEmailResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

fn get_user() -> Request<GetUserRequest> {
    let mut request = Request::new(GetUserRequest { id: "0190f3b4-0000-7000-8000-000000000000".into() });
    request.set_timeout(DEADLINE);
    request
}

/// `held` served open on port 0 under `config`, counted in `metrics`: its address, the
/// sender that stops it, and the serving task.
async fn serve_held(
    config: &ServerConfig,
    metrics: &Metrics,
    held: Held,
) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), tonic::transport::Error>>) {
    let server = GrpcServer::bind(config, api::FILE_DESCRIPTOR_SET, metrics)
        .await
        .expect("bind")
        .add_service(UserServiceServer::new(held))
        .authenticate(Authenticator::new(&AuthConfig::none()).expect("nothing to read"));
    let address = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    (address, stop, serving)
}

#[tokio::test]
async fn a_server_at_its_limit_answers_the_next_call_unavailable_at_once_and_still_answers_health() {
    let mut config = ServerConfig::on_port(0);
    config.max_concurrent_requests = NonZeroU32::MIN;
    config.drain_period = Duration::ZERO;
    let metrics = Metrics::new();
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let held = Held { entered: entered.clone(), release: release.clone() };
    let (address, stop, serving) = serve_held(&config, &metrics, held).await;
    let channel = Channel::from_shared(address).expect("a valid address").connect().await.expect("connect");
    let mut client = UserServiceClient::new(channel.clone());

    // Take the one slot and keep it until released.
    let first = tokio::spawn({
        let mut client = client.clone();
        async move { client.get_user(get_user()).await }
    });
    entered.notified().await;

    let sent = Instant::now();
    let refused = client.get_user(get_user()).await.expect_err("no slot is free");
    let waited = sent.elapsed();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(waited < DEADLINE, "answered after {waited:?}, not before the call's deadline");

    let mut health = HealthClient::new(channel);
    let status = health.check(HealthCheckRequest { service: String::new() }).await.expect("health is not shed");
    assert_eq!(status.into_inner().status(), ServingStatus::Serving);

    release.notify_one();
    first.await.expect("joins").expect("the call holding the slot finishes normally");
    let text = metrics.render();
    let shed = r#"grpc_server_handled_total{grpc_code="Unavailable",grpc_method="GetUser",grpc_service="users.v1.UserService",grpc_type="unary",rpc_protocol="grpc"} 1"#;
    assert!(text.lines().any(|line| line == shed), "the shed call is not counted as Unavailable:\n{text}");

    let _ = stop.send(());
    serving.await.expect("joins").expect("serves cleanly");
}

/// A users service answering every call NOT_FOUND, served on port 0 with `auth` and
/// `limits`; returns its address and the sender that stops it.
async fn serve_users(auth: &AuthConfig, limits: &RateLimitConfig) -> (String, tokio::sync::oneshot::Sender<()>) {
    let mut config = ServerConfig::on_port(0);
    config.drain_period = Duration::ZERO;
    let held = Held { entered: Arc::new(Notify::new()), release: Arc::new(Notify::new()) };
    let mut server = GrpcServer::bind(&config, api::FILE_DESCRIPTOR_SET, &Metrics::new())
        .await
        .expect("bind")
        .add_service(UserServiceServer::new(held))
        .rate_limit(limits);
    if auth.jwks_file.is_some() || auth.mode == platform::auth::AuthMode::None {
        server = server.authenticate(Authenticator::new(auth).expect("keys read"));
    }
    let address = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    (address, stop)
}

fn by_email(token: Option<&str>) -> Request<GetUserByEmailRequest> {
    let mut request = Request::new(GetUserByEmailRequest { email: "a@example.com".into() });
    request.set_timeout(DEADLINE);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("a header value"));
    }
    request
}

#[tokio::test]
async fn a_server_told_nothing_about_auth_refuses_business_calls_and_still_answers_health() {
    let (address, _stop) = serve_users(&AuthConfig::default(), &RateLimitConfig::default()).await;
    let channel = Channel::from_shared(address).expect("a valid address").connect().await.expect("connect");
    let refused = UserServiceClient::new(channel.clone()).get_user_by_email(by_email(None)).await.expect_err("refused");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("not configured"), "{refused:?}");
    let status = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.expect("open");
    assert_eq!(status.into_inner().status(), ServingStatus::Serving);
}

#[tokio::test]
async fn a_caller_over_its_quota_is_answered_resource_exhausted_with_a_pushback_and_others_are_not() {
    let issuer = DevIssuer::generate("https://issuer.test");
    let jwks = std::env::temp_dir().join(format!("server-test-jwks-{}.json", std::process::id()));
    issuer.write_jwks(&jwks).expect("written");
    let auth = AuthConfig::jwt(&jwks, "https://issuer.test", "users");
    let mut limits = RateLimitConfig::default();
    limits.methods.insert("GetUserByEmail".to_owned(), "2/m".parse().expect("a rate"));
    let (address, _stop) = serve_users(&auth, &limits).await;
    let channel = Channel::from_shared(address).expect("a valid address").connect().await.expect("connect");
    let mut client = UserServiceClient::new(channel);
    let alice = issuer.token("alice", "users", &[], Duration::from_secs(60));
    let bob = issuer.token("bob", "users", &[], Duration::from_secs(60));

    for _ in 0..2 {
        let status = client.get_user_by_email(by_email(Some(alice.expose_secret()))).await.expect_err("NOT_FOUND");
        assert_eq!(status.code(), Code::Unimplemented, "within the quota the handler answers: {status:?}");
    }
    let limited = client.get_user_by_email(by_email(Some(alice.expose_secret()))).await.expect_err("over");
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    let pushback = limited.metadata().get("grpc-retry-pushback-ms").expect("a pushback").to_str().expect("ascii");
    assert!(pushback.parse::<u64>().is_ok_and(|ms| ms > 0 && ms <= 30_000), "{pushback}");
    let other = client.get_user_by_email(by_email(Some(bob.expose_secret()))).await.expect_err("handler answers");
    assert_eq!(other.code(), Code::Unimplemented, "bob has his own quota: {other:?}");
    let _ = std::fs::remove_file(jwks);
}

#[tokio::test]
async fn a_call_its_client_cancels_before_sending_the_request_is_counted_cancelled_not_internal() {
    use http_body_util::StreamBody;
    use tower::{Service, ServiceExt};

    let metrics = Metrics::new();
    let held = Held { entered: Arc::new(Notify::new()), release: Arc::new(Notify::new()) };
    let mut config = ServerConfig::on_port(0);
    config.drain_period = Duration::ZERO;
    let (address, stop, serving) = serve_held(&config, &metrics, held).await;
    let mut channel = Channel::from_shared(address.clone()).expect("a valid address").connect().await.expect("connect");

    // Headers go out; the request message never does (as with a hedge's loser that is
    // cancelled at once).
    let (_body_sender, body) = tokio::sync::mpsc::channel::<Result<http_body::Frame<bytes::Bytes>, Status>>(1);
    let body = tonic::body::Body::new(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(body)));
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("{address}/users.v1.UserService/GetUser"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .expect("a request");
    let call = channel.ready().await.expect("ready").call(request);
    let call = tokio::spawn(call);
    let started = r#"grpc_server_started_total{grpc_method="GetUser",grpc_service="users.v1.UserService",grpc_type="unary",rpc_protocol="grpc"} 1"#;
    tokio::time::timeout(DEADLINE, async {
        while !metrics.render().lines().any(|line| line == started) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the server sees the call start");
    call.abort();

    let handled = |text: &str| {
        text.lines()
            .find(|line| line.starts_with("grpc_server_handled_total{") && line.contains(r#"grpc_method="GetUser""#))
            .map(str::to_owned)
    };
    let line = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(line) = handled(&metrics.render()) {
                return line;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the call ends");
    // go-grpc-middleware's label spells the code `Canceled`.
    assert!(line.contains(r#"grpc_code="Canceled""#), "{line}");

    let _ = stop.send(());
    serving.await.expect("joins").expect("serves cleanly");
}
