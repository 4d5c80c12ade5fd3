//! Deadline propagation: users sees what remains of the deadline orders was called with.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use api::users::v1::{
    CreateUserRequest, CreateUserResponse, GetUserByEmailRequest, GetUserByEmailResponse, GetUserRequest,
    GetUserResponse, User,
    user_service_server::{UserService, UserServiceServer},
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::helpers::{order_request, spawn_orders_with_users_at};

/// The `grpc-timeout` of the last GetUserByEmail, as sent on the wire.
type Seen = Arc<Mutex<Option<Duration>>>;

/// A users service that knows every email and records the deadline it was given.
struct Recording(Seen);

#[tonic::async_trait]
impl UserService for Recording {
    async fn create_user(&self, _: Request<CreateUserRequest>) -> Result<Response<CreateUserResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_user(&self, _: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_user_by_email(
        &self,
        request: Request<GetUserByEmailRequest>,
    ) -> Result<Response<GetUserByEmailResponse>, Status> {
        let timeout = request.metadata().get("grpc-timeout").and_then(|value| {
            platform::deadline::parse_timeout(&http::HeaderValue::from_bytes(value.as_bytes()).ok()?)
        });
        *self.0.lock().expect("lock") = timeout;
        let email = request.into_inner().email;
        Ok(Response::new(GetUserByEmailResponse { user: Some(User { email, ..User::default() }) }))
    }
}

async fn recording_users() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Seen::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(UserServiceServer::new(Recording(seen.clone())))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (address, seen)
}

fn last(seen: &Seen) -> Duration {
    seen.lock().expect("lock").expect("users got a grpc-timeout")
}

#[tokio::test]
async fn users_sees_the_outer_callers_deadline_when_it_is_shorter_than_the_configured_one() {
    let (address, seen) = recording_users().await;
    let configured = Duration::from_secs(5);
    let mut stack = spawn_orders_with_users_at(address, configured).await;

    let mut request = Request::new(order_request("ada@example.com", 100, ""));
    request.set_timeout(Duration::from_millis(800));
    stack.orders.create_order(request).await.expect("created");
    assert!(last(&seen) <= Duration::from_millis(800), "users saw {:?}", last(&seen));
    assert!(last(&seen) > Duration::from_millis(100), "users saw {:?}", last(&seen));

    stack.orders.create_order(order_request("ada@example.com", 100, "")).await.expect("created");
    assert!(last(&seen) > Duration::from_millis(800), "no outer deadline: the configured one, saw {:?}", last(&seen));
    assert!(last(&seen) <= configured);
}
