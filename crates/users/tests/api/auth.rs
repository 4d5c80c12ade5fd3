//! Who may call the users service: bearer tokens, per-method scopes, health open.

use std::time::Duration;

use api::users::v1::{CreateUserRequest, GetUserByEmailRequest, GetUserRequest};
use platform::auth::AuthConfig;
use secrecy::ExposeSecret;
use testkit::DevIssuer;
use tonic::{Code, Request};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::{TestApp, spawn_app_with};

const ISSUER: &str = "https://issuer.test";

/// A users service that takes tokens of `issuer` for audience `users`, with
/// `GetUserByEmail` open to the `users.read` scope only.
async fn spawn_secured(issuer: &DevIssuer) -> TestApp {
    let jwks = std::env::temp_dir().join(format!("users-api-jwks-{}.json", uuid::Uuid::new_v4().simple()));
    issuer.write_jwks(&jwks).expect("written");
    spawn_app_with(|config| {
        config.auth = AuthConfig::jwt(&jwks, ISSUER, "users");
        config.auth.scopes.insert("GetUserByEmail".to_owned(), vec!["users.read".to_owned()]);
    })
    .await
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("a header value"));
    request
}

#[tokio::test]
async fn every_business_rpc_without_a_token_is_unauthenticated_and_health_is_open() {
    let issuer = DevIssuer::generate(ISSUER);
    let mut app = spawn_secured(&issuer).await;
    let create = CreateUserRequest { email: "a@example.com".into(), name: "A".into() };
    let codes = [
        app.client.create_user(create).await.map(|_| ()),
        app.client.get_user(GetUserRequest { id: uuid::Uuid::now_v7().to_string() }).await.map(|_| ()),
        app.client.get_user_by_email(GetUserByEmailRequest { email: "a@example.com".into() }).await.map(|_| ()),
    ]
    .map(|result| result.expect_err("no token").code());
    assert_eq!(codes, [Code::Unauthenticated; 3]);

    let health = HealthClient::new(app.channel().await)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("health needs no token");
    assert_eq!(health.into_inner().status(), ServingStatus::Serving);
}

#[tokio::test]
async fn a_token_without_the_scope_of_get_user_by_email_is_permission_denied_and_with_it_the_call_is_served() {
    let issuer = DevIssuer::generate(ISSUER);
    let mut app = spawn_secured(&issuer).await;
    let writer = issuer.token("demo", "users", &["users.write"], Duration::from_secs(60));
    let create = CreateUserRequest { email: "b@example.com".into(), name: "B".into() };
    app.client.create_user(with_token(create, writer.expose_secret())).await.expect("no rule on CreateUser");

    let by_email = || GetUserByEmailRequest { email: "b@example.com".into() };
    let denied = app.client.get_user_by_email(with_token(by_email(), writer.expose_secret())).await.expect_err("scope");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    let orders = issuer.token("orders", "users", &["users.read"], Duration::from_secs(60));
    let found = app.client.get_user_by_email(with_token(by_email(), orders.expose_secret())).await.expect("allowed");
    assert_eq!(found.into_inner().user.expect("a user").email, "b@example.com");

    let stranger = DevIssuer::generate(ISSUER).token("orders", "users", &["users.read"], Duration::from_secs(60));
    let refused =
        app.client.get_user_by_email(with_token(by_email(), stranger.expose_secret())).await.expect_err("key");
    assert_eq!(refused.code(), Code::Unauthenticated, "a token signed by another key: {refused:?}");
}
