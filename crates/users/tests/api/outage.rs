//! A database outage: health notices within a second, calls fail fast while it lasts,
//! and the service recovers as soon as the database is back; a call whose session the
//! database ends (a server restart) answers UNAVAILABLE, not INTERNAL.

use std::time::{Duration, Instant};

use api::users::v1::{CreateUserRequest, GetUserByEmailRequest, GetUserRequest};
use platform::config::DatabaseConfig;
use sqlx::{Connection, PgConnection};
use testkit::TcpProxy;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::spawn_app_with;

/// Upper bound for anything to happen at all: a guard against a hung test, not a wait.
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_database_outage_is_reported_within_a_second_and_calls_fail_fast_until_it_returns() {
    // The service reaches PostgreSQL through a proxy of its own, with the production
    // defaults of every `database.*` setting.
    let mut proxy = TcpProxy::to_test_postgres().await;
    let mut app = spawn_app_with(|config| {
        let url = proxy.route(config.database.url.expose_secret());
        config.database = DatabaseConfig::at(url.parse().expect("a database URL"));
    })
    .await;
    let mut health = HealthClient::new(app.channel().await);
    let service = HealthCheckRequest { service: "users.v1.UserService".into() };
    let mut updates = health.watch(service).await.expect("watch starts").into_inner();
    let mut next_status = async || {
        let update = tokio::time::timeout(PATIENCE, updates.message()).await.expect("a status change in time");
        update.expect("the watch stays open").expect("the stream is open").status()
    };
    assert_eq!(next_status().await, ServingStatus::Serving);
    let create = |email: &str| CreateUserRequest { email: email.into(), name: "Outage".into() };
    let before = app.client.create_user(create("before@example.com")).await.expect("created").into_inner();
    let before = before.user.expect("the user").id;

    proxy.cut().await;
    let cut = Instant::now();
    let after_cut = next_status().await;
    let noticed = cut.elapsed();

    // While the database is known to be down, a call that needs it fails at once.
    let mut took = Vec::new();
    for attempt in 0..5 {
        let started = Instant::now();
        let status = app.client.create_user(create("during@example.com")).await.expect_err("no database");
        took.push(started.elapsed());
        assert_eq!(status.code(), Code::Unavailable, "attempt {attempt}: {status:?}");
    }
    let slowest = took.iter().copied().max().unwrap_or_default();

    proxy.restore().await;
    let restored = Instant::now();
    let after_restore = next_status().await;
    let recovered = restored.elapsed();

    eprintln!("NOT_SERVING after {noticed:?}; failing calls took {took:?}; SERVING again after {recovered:?}");
    assert_eq!(after_cut, ServingStatus::NotServing);
    assert!(noticed < Duration::from_secs(1), "NOT_SERVING only {noticed:?} after the cut");
    assert!(slowest < Duration::from_secs(1), "a failing call took {slowest:?}");
    assert_eq!(after_restore, ServingStatus::Serving);
    assert!(recovered < Duration::from_millis(1500), "SERVING only {recovered:?} after the restore");

    // Nothing lost, nothing half-written: the earlier user is there, the refused one
    // is not, and creating it now succeeds.
    let found = app.client.get_user(GetUserRequest { id: before.clone() }).await.expect("the earlier user");
    assert_eq!(found.into_inner().user.expect("the user").id, before);
    let missing = app
        .client
        .get_user_by_email(GetUserByEmailRequest { email: "during@example.com".into() })
        .await
        .expect_err("never created");
    assert_eq!(missing.code(), Code::NotFound);
    app.client.create_user(create("during@example.com")).await.expect("created once the database is back");
    app.stop();
}

#[tokio::test]
async fn a_call_that_meets_an_outage_before_the_probe_does_makes_health_report_it_at_once() {
    let mut proxy = TcpProxy::to_test_postgres().await;
    let app = spawn_app_with(|config| {
        let url = proxy.route(config.database.url.expose_secret());
        config.database = DatabaseConfig::at(url.parse().expect("a database URL"));
        // Only the first scheduled check runs during the test: any later one is woken by the call.
        config.database.health_check_interval = Duration::from_secs(3600);
    })
    .await;
    let mut health = HealthClient::new(app.channel().await);
    let service = HealthCheckRequest { service: "users.v1.UserService".into() };
    let mut updates = health.watch(service).await.expect("watch starts").into_inner();
    let first = updates.message().await.expect("a status").expect("the stream is open");
    assert_eq!(first.status(), ServingStatus::Serving);

    proxy.cut().await;
    let started = Instant::now();
    let request = CreateUserRequest { email: "first@example.com".into(), name: "First".into() };
    let status = app.client.clone().create_user(request).await.expect_err("no database");
    let took = started.elapsed();
    let update = tokio::time::timeout(PATIENCE, updates.message()).await.expect("a status change in time");
    let noticed = started.elapsed();

    eprintln!("the call failed after {took:?}; NOT_SERVING after {noticed:?}");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(took < Duration::from_secs(1), "the call took {took:?}, not its 2s acquire timeout");
    assert_eq!(update.expect("the watch stays open").expect("the stream is open").status(), ServingStatus::NotServing);
    assert!(noticed < Duration::from_secs(1), "NOT_SERVING only {noticed:?} after the cut");
}

#[tokio::test]
async fn a_call_whose_connection_the_database_terminated_is_unavailable_not_internal_and_the_next_is_served() {
    // Pooled connections are not pinged again within the hour: the call's query meets
    // the terminated backend, as a call in flight during a server restart does.
    let app = spawn_app_with(|config| config.database.ping_after_idle = Duration::from_secs(3600)).await;
    let request = CreateUserRequest { email: "terminated@example.com".into(), name: "Terminated".into() };
    let created = app.client.clone().create_user(request).await.expect("created").into_inner();
    let id = created.user.expect("the user").id;

    // What `pg_ctl restart -m fast` does to each of the service's sessions (its pool's and
    // its health probe's): SQLSTATE 57P01, "terminating connection due to administrator command".
    let mut admin = PgConnection::connect(&app.database_url).await.expect("an admin connection");
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .expect("terminate the service's backends");
    assert!(!terminated.is_empty() && terminated.iter().all(|&done| done), "terminated: {terminated:?}");

    let get = GetUserRequest { id: id.clone() };
    let status = app.client.clone().get_user(get.clone()).await.expect_err("its connection is gone");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "database unavailable");
    // The dead connection went back into the pool, but is pinged and replaced before
    // the next call uses it, not an hour later.
    let found = app.client.clone().get_user(get).await.expect("served on a new connection").into_inner();
    assert_eq!(found.user.expect("the user").id, id);
}
