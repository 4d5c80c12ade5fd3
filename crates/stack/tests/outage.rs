//! A PostgreSQL outage with the release binaries (users and orders, each on its own
//! database behind one TCP proxy that the test cuts): health says NOT_SERVING within a
//! second, CreateOrder fails fast with UNAVAILABLE while the outage lasts, and both
//! services serve again within a second of its end, having lost and half-written nothing.

use std::time::{Duration, Instant};

use api::{
    orders::v1::{CreateOrderRequest, GetOrderRequest, order_service_client::OrderServiceClient},
    users::v1::{CreateUserRequest, user_service_client::UserServiceClient},
};
use stack::{Service, orders_env, temp_dir, users_env};
use testkit::{TcpProxy, drop_postgres_database, fresh_postgres_database};
use tonic::{Code, Streaming, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Upper bound for anything to happen at all: a guard against a hung test, not a wait.
const PATIENCE: Duration = Duration::from_secs(20);

/// The health of `service`'s gRPC service `name`, as a stream of changes.
async fn watch(service: &Service, name: &str) -> Streaming<HealthCheckResponse> {
    let channel = Channel::from_shared(service.address.clone()).expect("a URI").connect().await.expect("connects");
    let request = HealthCheckRequest { service: name.to_owned() };
    HealthClient::new(channel).watch(request).await.expect("the watch starts").into_inner()
}

/// The next status `updates` reports, within [`PATIENCE`].
async fn next_status(updates: &mut Streaming<HealthCheckResponse>) -> ServingStatus {
    let update = tokio::time::timeout(PATIENCE, updates.message()).await.expect("a status change in time");
    update.expect("the watch stays open").expect("the stream is open").status()
}

fn order(idempotency_key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        customer_email: "outage@example.com".to_owned(),
        total_cents: 1999,
        currency: "EUR".to_owned(),
        idempotency_key: idempotency_key.to_owned(),
    }
}

#[tokio::test]
async fn a_database_outage_is_not_serving_within_a_second_fails_calls_fast_and_recovers_within_a_second() {
    let dir = temp_dir("outage");
    let mut proxy = TcpProxy::to_test_postgres().await;
    let users_db = fresh_postgres_database("stack_outage_users").await;
    let orders_db = fresh_postgres_database("stack_outage_orders").await;
    let mut env = users_env(&dir.join("unused.db"));
    env.retain(|(key, _)| *key != "USERS_DATABASE__URL");
    env.push(("USERS_DATABASE__URL", proxy.route(&users_db)));
    let mut users = Service::start("users", "users", &env, &dir).await.expect("users starts");
    let mut env = orders_env(&dir.join("unused.db"), &[&users]);
    env.retain(|(key, _)| *key != "ORDERS_DATABASE__URL");
    env.push(("ORDERS_DATABASE__URL", proxy.route(&orders_db)));
    let mut orders = Service::start("orders", "orders", &env, &dir).await.expect("orders starts");

    let mut users_health = watch(&users, "users.v1.UserService").await;
    let mut orders_health = watch(&orders, "orders.v1.OrderService").await;
    assert_eq!(next_status(&mut users_health).await, ServingStatus::Serving);
    assert_eq!(next_status(&mut orders_health).await, ServingStatus::Serving);
    let customer = CreateUserRequest { email: "outage@example.com".to_owned(), name: "Outage".to_owned() };
    UserServiceClient::connect(users.address.clone())
        .await
        .expect("connects")
        .create_user(customer)
        .await
        .expect("created");
    let mut client = OrderServiceClient::connect(orders.address.clone()).await.expect("connects");
    let before = client.create_order(order("before")).await.expect("created").into_inner().order.expect("the order");

    proxy.cut().await;
    let cut = Instant::now();
    let users_after_cut = next_status(&mut users_health).await;
    let users_noticed = cut.elapsed();
    let orders_after_cut = next_status(&mut orders_health).await;
    let orders_noticed = cut.elapsed();

    // While the databases are known to be down, CreateOrder fails at once, before any
    // statement runs, so a client can retry elsewhere within its deadline.
    let mut took = Vec::new();
    for attempt in 0..5 {
        let started = Instant::now();
        let status = client.create_order(order(&format!("during-{attempt}"))).await.expect_err("no database");
        took.push(started.elapsed());
        assert_eq!(status.code(), Code::Unavailable, "attempt {attempt}: {status:?}");
    }
    let slowest = took.iter().copied().max().unwrap_or_default();

    proxy.restore().await;
    let restored = Instant::now();
    let users_after_restore = next_status(&mut users_health).await;
    let orders_after_restore = next_status(&mut orders_health).await;
    let recovered = restored.elapsed();

    eprintln!(
        "NOT_SERVING after {users_noticed:?} (users), {orders_noticed:?} (orders); failing calls took {took:?}; \
         both SERVING again after {recovered:?}"
    );
    assert_eq!((users_after_cut, orders_after_cut), (ServingStatus::NotServing, ServingStatus::NotServing));
    assert!(users_noticed.max(orders_noticed) < Duration::from_secs(1), "NOT_SERVING only after the cut + 1 s");
    assert!(slowest < Duration::from_secs(1), "a failing CreateOrder took {slowest:?}");
    assert_eq!((users_after_restore, orders_after_restore), (ServingStatus::Serving, ServingStatus::Serving));
    assert!(recovered < Duration::from_millis(1500), "SERVING only {recovered:?} after the restore");

    // Nothing lost, nothing half-written: the earlier order is there, the refused ones
    // are not, and retrying one with its key now creates it once.
    let found = client.get_order(GetOrderRequest { id: before.id.clone() }).await.expect("the earlier order");
    assert_eq!(found.into_inner().order.expect("the order").id, before.id);
    let first = client.create_order(order("during-0")).await.expect("created once the database is back");
    let again = client.create_order(order("during-0")).await.expect("the same key replays");
    assert_eq!(first.into_inner().order.map(|o| o.id), again.into_inner().order.map(|o| o.id));

    assert_eq!(orders.stop().await.expect("orders stops"), 0);
    assert_eq!(users.stop().await.expect("users stops"), 0);
    drop_postgres_database(&orders_db).await;
    drop_postgres_database(&users_db).await;
}
