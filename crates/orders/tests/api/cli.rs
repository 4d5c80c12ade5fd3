//! The orders binary itself: every bad config value exits 78 with one line naming the key,
//! Kubernetes' service-link variables are ignored, and the `health-check` and `migrate`
//! subcommands.

use platform::test_support;
use sqlx::{Connection, PgConnection};

use crate::helpers::spawn_stack;

/// The orders binary, run with `ORDERS_*` variables.
const BINARY: test_support::ServiceBinary =
    test_support::ServiceBinary { path: env!("CARGO_BIN_EXE_orders"), prefix: "ORDERS_" };

#[tokio::test]
async fn an_unknown_key_exits_78_naming_it() {
    BINARY.assert_refused("unknown", "ORDERS_SERVR__PORT", "7000", "servr").await;
}

#[tokio::test]
async fn a_consul_address_without_a_scheme_exits_78_naming_the_key() {
    BINARY.assert_refused("consul", "ORDERS_CONSUL__ADDRESS", "127.0.0.1:8500", "consul.address").await;
}

#[tokio::test]
async fn a_dns_nameserver_without_a_port_exits_78_naming_the_key() {
    BINARY.assert_refused("nameserver", "ORDERS_USERS__DNS_NAMESERVER", "10.96.0.10", "users.dns_nameserver").await;
}

#[tokio::test]
async fn a_database_url_of_another_database_exits_78_naming_the_key_but_not_the_password() {
    let stderr =
        BINARY.assert_refused("scheme", "ORDERS_DATABASE__URL", "mysql://app:hunter2@db/orders", "database.url").await;
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test]
async fn zero_max_connections_exits_78_naming_the_key() {
    BINARY.assert_refused("connections", "ORDERS_DATABASE__MAX_CONNECTIONS", "0", "database.max_connections").await;
}

#[tokio::test]
async fn a_zero_acquire_timeout_exits_78_naming_the_key() {
    BINARY.assert_refused("acquire", "ORDERS_DATABASE__ACQUIRE_TIMEOUT", "0s", "database.acquire_timeout").await;
}

#[tokio::test]
async fn a_default_page_size_above_the_maximum_exits_78_naming_the_key() {
    let exit = BINARY
        .run(
            &[],
            &BINARY.scratch("paging"),
            &[("ORDERS_PAGING__MAX_PAGE_SIZE", "100"), ("ORDERS_PAGING__DEFAULT_PAGE_SIZE", "500")],
        )
        .await;
    assert_eq!(exit.code, Some(78), "{}", exit.stderr);
    assert_eq!(exit.stderr.trim().lines().count(), 1, "one line: {}", exit.stderr);
    let named =
        exit.stderr.contains("paging.default_page_size") && exit.stderr.contains("ORDERS_PAGING__DEFAULT_PAGE_SIZE");
    assert!(named, "{}", exit.stderr);
}

#[tokio::test]
async fn a_zero_max_page_size_exits_78_naming_the_key() {
    BINARY.assert_refused("max-page", "ORDERS_PAGING__MAX_PAGE_SIZE", "0", "paging.max_page_size").await;
}

#[tokio::test]
async fn the_variables_kubernetes_injects_for_the_orders_service_do_not_stop_it() {
    // Exactly what kubelet sets in every pod of a namespace with a Service `orders`
    // (cluster IP 10.0.0.2, port `grpc` 50052).
    let links = [
        ("ORDERS_SERVICE_HOST", "10.0.0.2"),
        ("ORDERS_SERVICE_PORT", "50052"),
        ("ORDERS_SERVICE_PORT_GRPC", "50052"),
        ("ORDERS_PORT", "tcp://10.0.0.2:50052"),
        ("ORDERS_PORT_50052_TCP", "tcp://10.0.0.2:50052"),
        ("ORDERS_PORT_50052_TCP_PROTO", "tcp"),
        ("ORDERS_PORT_50052_TCP_PORT", "50052"),
        ("ORDERS_PORT_50052_TCP_ADDR", "10.0.0.2"),
    ];
    let exit = BINARY.run(&["migrate"], &BINARY.scratch("kubernetes"), &links).await;
    assert_eq!(exit.code, Some(0), "{}", exit.stderr);
}

#[tokio::test]
async fn health_check_exits_0_against_a_serving_instance() {
    let stack = spawn_stack().await;
    let port = stack.orders_address.rsplit(':').next().expect("a port");
    let exit = BINARY.run(&["health-check"], &BINARY.scratch("serving"), &[("ORDERS_SERVER__PORT", port)]).await;
    assert_eq!(exit.code, Some(0), "{}", exit.stderr);
}

#[tokio::test]
async fn health_check_exits_1_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("an address").port();
    let exit =
        BINARY.run(&["health-check"], &BINARY.scratch("nothing"), &[("ORDERS_SERVER__PORT", &port.to_string())]).await;
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
}

#[tokio::test]
async fn migrate_creates_the_schema_and_exits_0() {
    let url = test_support::fresh_postgres_database("orders_test").await;
    let exit = BINARY.run(&["migrate"], &BINARY.scratch("migrate"), &[("ORDERS_DATABASE__URL", &url)]).await;
    assert_eq!(exit.code, Some(0), "{}", exit.stderr);
    let mut connection = PgConnection::connect(&url).await.expect("connect to the migrated database");
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&mut connection).await.expect("the orders table");
    assert_eq!(orders, 0);
}

#[tokio::test]
async fn an_https_users_endpoint_without_a_tls_section_exits_78_naming_the_key() {
    let stderr = BINARY.assert_refused("https", "ORDERS_USERS__ENDPOINTS", "[\"https://users:50051\"]", "users").await;
    assert!(stderr.contains("tls"), "{stderr}");
}
