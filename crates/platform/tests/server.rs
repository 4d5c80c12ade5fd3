//! The server stack from outside: a server at its limit of concurrent calls sheds the next one.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use api::users::v1::{
    CreateUserRequest, CreateUserResponse, GetUserByEmailRequest, GetUserByEmailResponse, GetUserRequest,
    GetUserResponse,
    user_service_client::UserServiceClient,
    user_service_server::{UserService, UserServiceServer},
};
use platform::{config::ServerConfig, metrics::Metrics, server::GrpcServer};
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

#[tokio::test]
async fn a_server_at_its_limit_answers_the_next_call_unavailable_at_once_and_still_answers_health() {
    let mut config = ServerConfig::on_port(0);
    config.max_concurrent_requests = NonZeroU32::MIN;
    config.drain_period = Duration::ZERO;
    let metrics = Metrics::new();
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let held = Held { entered: entered.clone(), release: release.clone() };
    let server = GrpcServer::bind(&config, api::FILE_DESCRIPTOR_SET, &metrics)
        .await
        .expect("bind")
        .add_service(UserServiceServer::new(held));
    let address = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
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
    let shed = r#"grpc_server_handled_total{grpc_code="Unavailable",grpc_method="GetUser",grpc_service="users.v1.UserService",grpc_type="unary"} 1"#;
    assert!(text.lines().any(|line| line == shed), "the shed call is not counted as Unavailable:\n{text}");

    let _ = stop.send(());
    serving.await.expect("joins").expect("serves cleanly");
}
