//! The users binary itself: every bad config value exits 78 with one line naming the key,
//! Kubernetes' service-link variables are ignored, and the `health-check` and `migrate`
//! subcommands.

use std::time::Duration;

use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::spawn_app;

/// Bound on waiting for the app to change its health status: a guard, not a wait.
const PATIENCE: Duration = Duration::from_secs(60);

/// The users binary, run with `USERS_*` variables.
const BINARY: testkit::ServiceBinary = testkit::ServiceBinary { path: env!("CARGO_BIN_EXE_users"), prefix: "USERS_" };

#[tokio::test]
async fn each_bad_config_value_exits_78_naming_the_key_but_no_password() {
    BINARY
        .assert_bad_config_refused(&[
            ("REGISTRATION__REFRESH_INTERVAL", "0s", "registration.refresh_interval"),
            ("TELEMETRY__SAMPLING_RATIO", "1.5", "telemetry.sampling_ratio"),
            ("TELEMETRY__OTLP_ENDPOINT", "jaeger:4317", "telemetry.otlp_endpoint"),
            ("LOG__LEVEL", "info,=[", "log.level"),
            ("LOG__BUFFERED_LINES", "0", "log.buffered_lines"),
            ("SERVER__TLS__CERT_FILE", "/nonexistent/users.pem", "server.tls.cert_file"),
        ])
        .await;
}

#[tokio::test]
async fn the_variables_kubernetes_injects_for_the_users_service_do_not_stop_it() {
    BINARY.assert_kubernetes_service_links_ignored("10.0.0.1", 50051).await;
}

#[tokio::test]
async fn health_check_exits_0_against_a_serving_instance() {
    let app = spawn_app().await;
    let port = app.address.rsplit(':').next().expect("a port");
    let exit = BINARY.health_check("serving", port).await;
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
    testkit::drop_postgres_database(&app.database_url).await;
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
    let exit = BINARY.health_check("not-serving", port).await;
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
    assert!(exit.stderr.contains("NOT_SERVING"), "{}", exit.stderr);
}

#[tokio::test]
async fn health_check_exits_1_when_nothing_listens() {
    BINARY.assert_health_check_fails_when_nothing_listens().await;
}

#[tokio::test]
async fn migrate_creates_the_schema_and_exits_0() {
    BINARY.assert_migrate_creates("users_test", "users").await;
}
