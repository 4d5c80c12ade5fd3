//! The orders binary itself: every bad config value exits 78 with one line naming the key,
//! Kubernetes' service-link variables are ignored, and the `health-check` and `migrate`
//! subcommands.

use crate::helpers::spawn_stack;

/// The orders binary, run with `ORDERS_*` variables.
const BINARY: testkit::ServiceBinary = testkit::ServiceBinary { path: env!("CARGO_BIN_EXE_orders"), prefix: "ORDERS_" };

#[tokio::test]
async fn each_bad_config_value_exits_78_naming_the_key_but_no_password() {
    BINARY
        .assert_bad_config_refused(&[
            ("USERS__DNS_NAMESERVER", "10.96.0.10", "users.dns_nameserver"),
            ("PAGING__MAX_PAGE_SIZE", "0", "paging.max_page_size"),
        ])
        .await;
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
async fn the_variables_kubernetes_injects_for_the_orders_service_do_not_stop_it() {
    BINARY.assert_kubernetes_service_links_ignored("10.0.0.2", 50052).await;
}

#[tokio::test]
async fn health_check_exits_0_against_a_serving_instance() {
    let stack = spawn_stack().await;
    let port = stack.orders_address.rsplit(':').next().expect("a port");
    let exit = BINARY.health_check("serving", port).await;
    assert_eq!(exit.code, Some(0), "{}", exit.stderr);
}

#[tokio::test]
async fn health_check_exits_1_when_nothing_listens() {
    BINARY.assert_health_check_fails_when_nothing_listens().await;
}

#[tokio::test]
async fn migrate_creates_the_schema_and_exits_0() {
    BINARY.assert_migrate_creates("orders_test", "orders").await;
}

#[tokio::test]
async fn an_https_users_endpoint_without_a_tls_section_exits_78_naming_the_key() {
    let stderr = BINARY.assert_refused("https", "ORDERS_USERS__ENDPOINTS", "[\"https://users:50051\"]", "users").await;
    assert!(stderr.contains("tls"), "{stderr}");
}
