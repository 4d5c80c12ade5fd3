//! Statistical outlier ejection (gRFC A50) with the release binaries: a users replica
//! that fails a share of its calls is ejected by orders' client, and CreateOrder keeps
//! failing no call thanks to retries.

use std::time::Duration;

use api::users::v1::{CreateUserRequest, user_service_client::UserServiceClient};
use stack::{Service, load::OrderLoad, orders_env, sample, scrape, temp_dir, users_env};

/// Bound on any awaited state change: a guard against a hung test, not a wait.
const PATIENCE: Duration = Duration::from_secs(60);

const CUSTOMER: &str = "outliers@example.com";

/// orders' `grpc_client_ejections_total{upstream="users", reason}` right now.
async fn ejections(orders: &Service, reason: &str) -> f64 {
    let body = scrape(orders).await.expect("orders' metrics");
    sample(&body, "grpc_client_ejections_total", &[("upstream", "users"), ("reason", reason)])
}

#[tokio::test]
async fn a_users_replica_failing_thirty_percent_of_calls_is_ejected_and_create_order_fails_no_call() {
    let dir = temp_dir("outliers");
    let database = dir.join("users.db");
    let healthy = Service::start("users", "users-a", &users_env(&database), &dir).await.expect("users-a starts");
    // The test-only fault knob: 30 % of calls UNAVAILABLE, never two in a row, so
    // consecutive-failure ejection (3 in a row) never fires on its own.
    let mut faulty_env = users_env(&database);
    faulty_env.push(("USERS_TESTING__ENABLED", "true".to_owned()));
    faulty_env.push(("USERS_TESTING__FAIL_RATIO", "0.3".to_owned()));
    let faulty = Service::start("users", "users-b", &faulty_env, &dir).await.expect("users-b starts");

    let mut env = orders_env(&dir.join("orders.db"), &[&healthy, &faulty]);
    env.extend([
        ("ORDERS_USERS__OUTLIER_DETECTION__INTERVAL", "1s".to_owned()),
        ("ORDERS_USERS__OUTLIER_DETECTION__BASE_EJECTION_TIME", "60s".to_owned()),
        ("ORDERS_USERS__OUTLIER_DETECTION__MAXEJECTIONPERCENT", "50".to_owned()),
        ("ORDERS_USERS__OUTLIER_DETECTION__FAILUREPERCENTAGEEJECTION__THRESHOLD", "20".to_owned()),
        ("ORDERS_USERS__OUTLIER_DETECTION__FAILUREPERCENTAGEEJECTION__MINIMUMHOSTS", "2".to_owned()),
        ("ORDERS_USERS__OUTLIER_DETECTION__FAILUREPERCENTAGEEJECTION__REQUESTVOLUME", "20".to_owned()),
    ]);
    let orders = Service::start("orders", "orders", &env, &dir).await.expect("orders starts");
    let mut users = UserServiceClient::connect(healthy.address.clone()).await.expect("connect to users-a");
    let request = CreateUserRequest { email: CUSTOMER.to_owned(), name: "Outliers".to_owned() };
    users.create_user(request).await.expect("the customer is created");

    // Steady CreateOrder load from four clients until stopped.
    let load = OrderLoad::start(&orders, CUSTOMER, 4).await.expect("connect to orders");

    // Look again after every 20 successful calls until orders reports the ejection.
    tokio::time::timeout(PATIENCE, async {
        while ejections(&orders, "failure_percentage").await < 1.0 {
            load.wait_for_more(20, PATIENCE).await.expect("the load makes progress");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("users-b was never ejected; failures: {:?}", load.failures()));
    // Enough calls after the ejection that, had users-b stayed in, it would have taken ~half.
    load.wait_for_more(600, PATIENCE).await.expect("600 more calls succeed in time");
    let (_, failures) = load.stop().await.expect("the load stops");

    assert!(failures.is_empty(), "{} CreateOrder calls failed: {failures:?}", failures.len());
    assert_eq!(ejections(&orders, "consecutive_failures").await, 0.0, "never three failures in a row");
    let body = scrape(&orders).await.expect("orders' metrics");
    assert_eq!(sample(&body, "grpc_client_ejected_endpoints", &[("upstream", "users")]), 1.0, "{body}");

    // Stopping a replica waits for its last log line, so the counts are complete.
    let mut counts = Vec::new();
    for mut replica in [healthy, faulty] {
        assert_eq!(replica.stop().await.expect("users stops"), 0);
        counts.push(replica.rpcs_finished("GetUserByEmail").expect("log readable"));
    }
    let (healthy_calls, faulty_calls) = (counts[0], counts[1]);
    assert!(
        healthy_calls >= faulty_calls + 500,
        "after the ejection users-a took the calls: users-a {healthy_calls}, users-b {faulty_calls}"
    );
}
