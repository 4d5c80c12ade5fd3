//! grpc.health.v1 follows the database.

use std::time::Duration;

use api::users::v1::{CreateUserRequest, user_service_client::UserServiceClient};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::{spawn_app, spawn_app_with};

/// Upper bound for a status change to be observed: a guard against a hung test, not a wait.
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_service() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    for service in ["", "users.v1.UserService"] {
        let response = health.check(HealthCheckRequest { service: service.into() }).await.expect("health answers");
        assert_eq!(response.into_inner().status(), ServingStatus::Serving, "service {service:?}");
    }
}

#[tokio::test]
async fn health_turns_not_serving_when_the_database_goes_away() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    let mut updates = health
        .watch(HealthCheckRequest { service: "users.v1.UserService".into() })
        .await
        .expect("watch starts")
        .into_inner();
    let first = updates.message().await.expect("a status").expect("the stream is open");
    assert_eq!(first.status(), ServingStatus::Serving);

    testkit::drop_postgres_database(&app.database_url).await;

    let not_serving = tokio::time::timeout(PATIENCE, async {
        while let Some(update) = updates.message().await.expect("the watch stays open") {
            if update.status() == ServingStatus::NotServing {
                return true;
            }
        }
        false
    })
    .await
    .expect("NOT_SERVING is reported within the patience window");
    assert!(not_serving);
}

#[tokio::test]
async fn health_turns_not_serving_as_soon_as_the_service_is_told_to_stop() {
    let mut app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    let mut updates = health.watch(HealthCheckRequest { service: String::new() }).await.expect("watch").into_inner();
    let first = updates.message().await.expect("a status").expect("the stream is open");
    assert_eq!(first.status(), ServingStatus::Serving);

    app.stop();

    let next = tokio::time::timeout(PATIENCE, updates.message()).await.expect("an update within the patience window");
    assert_eq!(next.expect("a status").expect("sent before the stream is cut").status(), ServingStatus::NotServing);
}

#[tokio::test]
async fn a_stopping_service_cuts_rpcs_still_open_after_the_grace_period() {
    let mut app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    // A health watch never ends by itself: only the grace period can end the drain.
    let mut open = health.watch(HealthCheckRequest { service: String::new() }).await.expect("watch").into_inner();
    open.message().await.expect("a status").expect("the stream is open");

    let stopped = tokio::time::timeout(PATIENCE, app.stop()).await;
    let result = stopped.expect("the server stops within the patience window").expect("the task ran");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_stopping_service_still_answers_new_calls_during_its_drain_period() {
    let mut app = spawn_app_with(|config| config.server.drain_period = Duration::from_secs(60)).await;
    let mut health = HealthClient::new(app.channel().await);
    let mut updates = health.watch(HealthCheckRequest { service: String::new() }).await.expect("watch").into_inner();
    updates.message().await.expect("a status").expect("the stream is open");

    app.stop();
    let next = tokio::time::timeout(PATIENCE, updates.message()).await.expect("an update within the patience window");
    assert_eq!(next.expect("a status").expect("the stream is open").status(), ServingStatus::NotServing);

    // A client that has not noticed yet connects anew and is still served.
    let mut late = UserServiceClient::new(app.channel().await);
    let request = CreateUserRequest { email: "late@example.com".into(), name: "Late".into() };
    late.create_user(request).await.expect("served during the drain period");
    assert!(!app.stop().is_finished(), "the drain period is not over");
}
