//! `spawn_stack`: users and orders on free ports over fresh databases, with typed clients.

use std::time::Duration;

use api::{
    orders::v1::{CreateOrderRequest, Order, order_service_client::OrderServiceClient},
    users::v1::{CreateUserRequest, user_service_client::UserServiceClient},
};
use platform::{
    auth::AuthConfig,
    client::ClientConfig,
    config::DatabaseConfig,
    transport::tls::{ClientTls, ServerTls},
};
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// Services started for one test; they stop when this is dropped.
pub struct TestStack {
    pub orders: OrderServiceClient<Channel>,
    pub users: UserServiceClient<Channel>,
    pub users_address: String,
    pub orders_address: String,
    pub orders_database_url: String,
    _stops: Vec<oneshot::Sender<()>>,
}

impl TestStack {
    /// Creates a user with `email`.
    pub async fn create_user(&mut self, email: &str) {
        let request = CreateUserRequest { email: email.to_owned(), name: "Test Customer".to_owned() };
        self.users.create_user(request).await.expect("the user is created");
    }

    /// Places an order without an idempotency key.
    pub async fn create_order(&mut self, email: &str, total_cents: i64) -> Order {
        self.orders
            .create_order(order_request(email, total_cents, ""))
            .await
            .expect("the order is created")
            .into_inner()
            .order
            .expect("an order")
    }

    /// Starts another orders replica on the same database and users service.
    pub async fn another_orders_replica(&mut self) -> OrderServiceClient<Channel> {
        let (address, stop) = start_orders(&self.orders_database_url, vec![self.users_address.clone()], None).await;
        self._stops.push(stop);
        OrderServiceClient::connect(address).await.expect("connect to orders")
    }
}

/// A CreateOrder request in USD.
pub fn order_request(email: &str, total_cents: i64, key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        customer_email: email.to_owned(),
        total_cents,
        currency: "USD".to_owned(),
        idempotency_key: key.to_owned(),
    }
}

/// One users and one orders service.
pub async fn spawn_stack() -> TestStack {
    spawn(None, None).await
}

/// One users service requiring client certificates (`server`) and one orders service
/// calling it over mTLS as `client` says; the test's own users client as `test_client` says.
pub async fn spawn_stack_over_mtls(server: ServerTls, client: ClientTls, test_client: ClientTls) -> TestStack {
    platform::observability::logs::init_for_tests();
    let (users_address, users_stop) = start_users_with(Some(server)).await;
    let users_address = users_address.replace("http://", "https://");
    let orders_database_url = testkit::fresh_postgres_database("orders_test").await;
    let (orders_address, orders_stop) =
        start_orders_with(&orders_database_url, vec![users_address.clone()], None, Some(client)).await;
    TestStack {
        orders: OrderServiceClient::connect(orders_address.clone()).await.expect("connect to orders"),
        users: UserServiceClient::new(test_client.channel(&users_address).await.expect("connect to users over mTLS")),
        users_address,
        orders_address,
        orders_database_url,
        _stops: vec![users_stop, orders_stop],
    }
}

/// An orders service whose users endpoint is `users_endpoint`, with deadline `timeout`.
pub async fn spawn_orders_with_users_at(users_endpoint: String, timeout: Duration) -> TestStack {
    spawn(Some(users_endpoint), Some(timeout)).await
}

/// A users service, and an orders service calling it (or `users_endpoint`, if given).
async fn spawn(users_endpoint: Option<String>, timeout: Option<Duration>) -> TestStack {
    platform::observability::logs::init_for_tests();
    let (users_address, users_stop) = start_users().await;
    let orders_database_url = testkit::fresh_postgres_database("orders_test").await;
    let endpoint = users_endpoint.unwrap_or_else(|| users_address.clone());
    let (orders_address, orders_stop) = start_orders(&orders_database_url, vec![endpoint], timeout).await;
    TestStack {
        orders: OrderServiceClient::connect(orders_address.clone()).await.expect("connect to orders"),
        users: UserServiceClient::connect(users_address.clone()).await.expect("connect to users"),
        users_address,
        orders_address,
        orders_database_url,
        _stops: vec![users_stop, orders_stop],
    }
}

async fn start_users() -> (String, oneshot::Sender<()>) {
    start_users_with(None).await
}

async fn start_users_with(tls: Option<ServerTls>) -> (String, oneshot::Sender<()>) {
    let mut config = users::Config::default();
    config.server.tls = tls;
    config.server.port = 0;
    config.admin.port = 0;
    let database_url = testkit::fresh_postgres_database("users_test").await;
    config.database = DatabaseConfig::at(database_url.parse().expect("a database URL"));
    config.server.drain_period = Duration::ZERO;
    config.auth = AuthConfig::none();
    let app = users::App::build(config).await.expect("users builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    (address, run(|stop| app.run_until(stop)))
}

async fn start_orders(
    database_url: &str,
    users_endpoints: Vec<String>,
    timeout: Option<Duration>,
) -> (String, oneshot::Sender<()>) {
    start_orders_with(database_url, users_endpoints, timeout, None).await
}

async fn start_orders_with(
    database_url: &str,
    users_endpoints: Vec<String>,
    timeout: Option<Duration>,
    tls: Option<ClientTls>,
) -> (String, oneshot::Sender<()>) {
    let mut config = orders::Config::default();
    config.server.port = 0;
    config.admin.port = 0;
    config.database = DatabaseConfig::at(database_url.parse().expect("a database URL"));
    config.users = ClientConfig::with_endpoints(
        users_endpoints.iter().map(|endpoint| endpoint.parse().expect("an http://host:port endpoint")).collect(),
    );
    config.users.timeout = timeout.unwrap_or(Duration::from_secs(5));
    config.users.tls = tls;
    config.paging.token_secret = Some("test-secret".into());
    config.server.drain_period = Duration::ZERO;
    // Open, so each test calls without a token.
    config.auth = AuthConfig::none();
    let app = orders::App::build(config).await.expect("orders builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    (address, run(|stop| app.run_until(stop)))
}

/// Spawns `serve` with a stop future; dropping the returned sender stops it.
fn run<F, Fut>(serve: F) -> oneshot::Sender<()>
where
    F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(Box::pin(async move {
        let _ = stopped.await;
    })));
    stop
}

/// Sends one gRPC call over plain HTTP/2 with `grpc-timeout: {grpc_timeout}` and
/// returns the `grpc-status` the server answered. tonic's own client would enforce the
/// timeout itself (and report CANCELLED) before the server's answer could arrive.
pub async fn raw_grpc_status(
    address: &str,
    path: &str,
    message: &impl prost::Message,
    grpc_timeout: &str,
) -> tonic::Code {
    use http_body_util::{BodyExt, Full};
    let encoded = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(encoded.len()).expect("a small message").to_be_bytes());
    frame.extend_from_slice(&encoded);
    let request = http::Request::post(format!("{address}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", grpc_timeout)
        .body(Full::new(bytes::Bytes::from(frame)))
        .expect("a valid request");
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http();
    let response = client.request(request).await.expect("the server answers over HTTP/2");
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("the body arrives");
    let trailers = body.trailers().cloned().unwrap_or_default();
    let status = trailers.get("grpc-status").or_else(|| headers.get("grpc-status")).expect("a grpc-status");
    tonic::Code::from_bytes(status.as_bytes())
}

/// The address of an endpoint that accepts connections and never answers (a hung
/// users replica); it lives as long as the test's runtime.
pub async fn silent_endpoint() -> String {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", silent.local_addr().expect("address"));
    tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            connections.push(socket);
        }
    });
    address
}
