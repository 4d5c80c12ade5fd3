//! Who may call orders, and orders calling users with its own token (service-to-service).

use std::time::Duration;

use api::{
    orders::v1::{
        DeliverOrderRequest, GetOrderRequest, ListOrdersRequest, ShipOrderRequest, WatchOrderRequest,
        order_service_client::OrderServiceClient,
    },
    users::v1::{CreateUserRequest, user_service_client::UserServiceClient},
};
use platform::{
    auth::{AuthConfig, CallerToken},
    client::ClientConfig,
    config::DatabaseConfig,
};
use secrecy::ExposeSecret;
use testkit::DevIssuer;
use tokio::sync::oneshot;
use tonic::{Code, Request};

use crate::helpers::order_request;

const ISSUER: &str = "https://issuer.test";

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("a header value"));
    request
}

/// Users (GetUserByEmail needs `users.read`) and orders, both taking tokens of
/// `issuer`; orders calls users with `orders_token`. Returns both addresses and
/// the senders that stop them.
async fn spawn_secured(issuer: &DevIssuer, orders_token: Option<&str>) -> (String, String, Vec<oneshot::Sender<()>>) {
    platform::observability::logs::init_for_tests();
    let jwks = std::env::temp_dir().join(format!("orders-api-jwks-{}.json", uuid::Uuid::new_v4().simple()));
    issuer.write_jwks(&jwks).expect("written");

    let mut users = users::Config::default();
    (users.server.port, users.admin.port, users.server.drain_period) = (0, 0, Duration::ZERO);
    let url = testkit::fresh_postgres_database("users_test").await;
    users.database = DatabaseConfig::at(url.parse().expect("a database URL"));
    users.auth = AuthConfig::jwt(&jwks, ISSUER, "users");
    users.auth.scopes.insert("GetUserByEmail".to_owned(), vec!["users.read".to_owned()]);
    let users = users::App::build(users).await.expect("users builds");
    let users_address = format!("http://127.0.0.1:{}", users.port());

    let mut orders = orders::Config::default();
    (orders.server.port, orders.admin.port, orders.server.drain_period) = (0, 0, Duration::ZERO);
    let url = testkit::fresh_postgres_database("orders_test").await;
    orders.database = DatabaseConfig::at(url.parse().expect("a database URL"));
    orders.users = ClientConfig::with_endpoints(vec![users_address.parse().expect("an endpoint")]);
    orders.users.timeout = Duration::from_secs(5);
    orders.users.token = orders_token.map(|token| CallerToken::fixed(&token.into()).expect("a header value"));
    orders.auth = AuthConfig::jwt(&jwks, ISSUER, "orders");
    let orders = orders::App::build(orders).await.expect("orders builds");
    let orders_address = format!("http://127.0.0.1:{}", orders.port());

    let mut stops = Vec::new();
    let (users_stop, users_stopped) = oneshot::channel::<()>();
    tokio::spawn(users.run_until(async move {
        let _ = users_stopped.await;
    }));
    let (orders_stop, orders_stopped) = oneshot::channel::<()>();
    tokio::spawn(orders.run_until(async move {
        let _ = orders_stopped.await;
    }));
    stops.extend([users_stop, orders_stop]);
    (users_address, orders_address, stops)
}

#[tokio::test]
async fn every_business_rpc_of_orders_without_a_token_is_unauthenticated() {
    let issuer = DevIssuer::generate(ISSUER);
    let (_, orders_address, _stops) = spawn_secured(&issuer, None).await;
    let mut orders = OrderServiceClient::connect(orders_address).await.expect("connect");
    let id = || uuid::Uuid::now_v7().to_string();
    let codes = [
        orders.create_order(order_request("a@example.com", 100, "")).await.map(|_| ()),
        orders.get_order(GetOrderRequest { id: id() }).await.map(|_| ()),
        orders.list_orders(ListOrdersRequest::default()).await.map(|_| ()),
        orders.watch_order(WatchOrderRequest { order_id: id() }).await.map(|_| ()),
        orders.ship_order(ShipOrderRequest { id: id() }).await.map(|_| ()),
        orders.deliver_order(DeliverOrderRequest { id: id() }).await.map(|_| ()),
    ]
    .map(|result| result.expect_err("no token").code());
    assert_eq!(codes, [Code::Unauthenticated; 6]);
}

#[tokio::test]
async fn orders_calls_users_with_its_own_token_and_users_refuses_orders_without_one() {
    let issuer = DevIssuer::generate(ISSUER);
    let client_token = issuer.token("demo-client", "orders", &[], Duration::from_secs(60));
    let writer = issuer.token("demo-client", "users", &[], Duration::from_secs(60));
    let orders_identity = issuer.token("orders", "users", &["users.read"], Duration::from_secs(60));

    // Orders (holding `orders_token` towards users, or none) places an order for a
    // customer created in users with `writer`'s token.
    let place_order = async |orders_token: Option<&str>| {
        let (users_address, orders_address, _stops) = spawn_secured(&issuer, orders_token).await;
        let mut users = UserServiceClient::connect(users_address).await.expect("connect");
        let create = CreateUserRequest { email: "c@example.com".into(), name: "C".into() };
        users.create_user(with_token(create, writer.expose_secret())).await.expect("created");
        let mut orders = OrderServiceClient::connect(orders_address).await.expect("connect");
        orders.create_order(with_token(order_request("c@example.com", 100, ""), client_token.expose_secret())).await
    };
    let placed = place_order(Some(orders_identity.expose_secret()))
        .await
        .expect("orders looked the customer up with its own token");
    assert!(placed.into_inner().order.is_some());

    // The same, with orders holding no token: users refuses orders' lookup.
    let refused = place_order(None).await.expect_err("users refuses an anonymous lookup");
    assert_ne!(refused.code(), Code::Ok, "{refused:?}");
}
