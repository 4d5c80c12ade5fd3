//! The users binary itself: every bad config value exits 78 with one line naming the key,
//! Kubernetes' service-link variables are ignored, and the `health-check` and `migrate`
//! subcommands.

use std::time::Duration;

use platform::test_support;
use sqlx::{Connection, PgConnection};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::spawn_app;

/// Bound on waiting for the app to change its health status: a guard, not a wait.
const PATIENCE: Duration = Duration::from_secs(60);

/// The users binary, run with `USERS_*` variables.
const BINARY: test_support::ServiceBinary =
    test_support::ServiceBinary { path: env!("CARGO_BIN_EXE_users"), prefix: "USERS_" };

#[tokio::test]
async fn an_unknown_key_exits_78_naming_it() {
    BINARY.assert_refused("unknown", "USERS_SERVR__PORT", "7000", "servr").await;
}

#[tokio::test]
async fn a_consul_address_without_a_scheme_exits_78_naming_the_key() {
    BINARY.assert_refused("consul", "USERS_CONSUL__ADDRESS", "127.0.0.1:8500", "consul.address").await;
}

#[tokio::test]
async fn a_database_url_of_another_database_exits_78_naming_the_key_but_not_the_password() {
    let stderr =
        BINARY.assert_refused("scheme", "USERS_DATABASE__URL", "mysql://app:hunter2@db/users", "database.url").await;
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test]
async fn zero_max_connections_exits_78_naming_the_key() {
    BINARY.assert_refused("connections", "USERS_DATABASE__MAX_CONNECTIONS", "0", "database.max_connections").await;
}

#[tokio::test]
async fn a_zero_acquire_timeout_exits_78_naming_the_key() {
    BINARY.assert_refused("acquire", "USERS_DATABASE__ACQUIRE_TIMEOUT", "0s", "database.acquire_timeout").await;
}

#[tokio::test]
async fn a_zero_registration_refresh_interval_exits_78_naming_the_key() {
    BINARY
        .assert_refused("refresh", "USERS_REGISTRATION__REFRESH_INTERVAL", "0s", "registration.refresh_interval")
        .await;
}

#[tokio::test]
async fn a_sampling_ratio_above_one_exits_78_naming_the_key() {
    BINARY.assert_refused("ratio", "USERS_TELEMETRY__SAMPLING_RATIO", "1.5", "telemetry.sampling_ratio").await;
}

#[tokio::test]
async fn an_otlp_endpoint_without_a_scheme_exits_78_naming_the_key() {
    BINARY.assert_refused("otlp", "USERS_TELEMETRY__OTLP_ENDPOINT", "jaeger:4317", "telemetry.otlp_endpoint").await;
}

#[tokio::test]
async fn an_unparsable_log_level_exits_78_naming_the_key() {
    BINARY.assert_refused("log", "USERS_LOG__LEVEL", "info,=[", "log.level").await;
}

#[tokio::test]
async fn the_variables_kubernetes_injects_for_the_users_service_do_not_stop_it() {
    // Exactly what kubelet sets in every pod of a namespace with a Service `users`
    // (cluster IP 10.0.0.1, port `grpc` 50051).
    let links = [
        ("USERS_SERVICE_HOST", "10.0.0.1"),
        ("USERS_SERVICE_PORT", "50051"),
        ("USERS_SERVICE_PORT_GRPC", "50051"),
        ("USERS_PORT", "tcp://10.0.0.1:50051"),
        ("USERS_PORT_50051_TCP", "tcp://10.0.0.1:50051"),
        ("USERS_PORT_50051_TCP_PROTO", "tcp"),
        ("USERS_PORT_50051_TCP_PORT", "50051"),
        ("USERS_PORT_50051_TCP_ADDR", "10.0.0.1"),
    ];
    let exit = BINARY.run(&["migrate"], &BINARY.scratch("kubernetes"), &links).await;
    assert_eq!(exit.code, Some(0), "{}", exit.stderr);
}

#[tokio::test]
async fn health_check_exits_0_against_a_serving_instance() {
    let app = spawn_app().await;
    let port = app.address.rsplit(':').next().expect("a port");
    let exit = BINARY.run(&["health-check"], &BINARY.scratch("serving"), &[("USERS_SERVER__PORT", port)]).await;
    assert_eq!(exit.code, Some(0), "{}", exit.stderr);
}

#[tokio::test]
async fn health_check_exits_1_when_the_instance_is_not_serving() {
    let app = spawn_app().await;
    let mut updates = HealthClient::new(app.channel().await)
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .expect("watch starts")
        .into_inner();
    test_support::drop_postgres_database(&app.database_url).await;
    tokio::time::timeout(PATIENCE, async {
        while let Some(update) = updates.message().await.expect("the watch stays open") {
            if update.status() == ServingStatus::NotServing {
                return;
            }
        }
    })
    .await
    .expect("health turns NOT_SERVING");
    let port = app.address.rsplit(':').next().expect("a port");
    let exit = BINARY.run(&["health-check"], &BINARY.scratch("not-serving"), &[("USERS_SERVER__PORT", port)]).await;
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
    assert!(exit.stderr.contains("NOT_SERVING"), "{}", exit.stderr);
}

#[tokio::test]
async fn health_check_exits_1_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("an address").port();
    let exit =
        BINARY.run(&["health-check"], &BINARY.scratch("nothing"), &[("USERS_SERVER__PORT", &port.to_string())]).await;
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
}

#[tokio::test]
async fn migrate_creates_the_schema_and_exits_0() {
    let url = test_support::fresh_postgres_database("users_test").await;
    let exit = BINARY.run(&["migrate"], &BINARY.scratch("migrate"), &[("USERS_DATABASE__URL", &url)]).await;
    assert_eq!(exit.code, Some(0), "{}", exit.stderr);
    let mut connection = PgConnection::connect(&url).await.expect("connect to the migrated database");
    let users: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut connection).await.expect("the users table");
    assert_eq!(users, 0);
}

#[tokio::test]
async fn a_missing_tls_certificate_file_exits_78_naming_the_key() {
    BINARY
        .assert_refused("tls", "USERS_SERVER__TLS__CERT_FILE", "/nonexistent/users.pem", "server.tls.cert_file")
        .await;
}
