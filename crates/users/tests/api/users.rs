//! CreateUser, GetUser and GetUserByEmail.

use api::users::v1::{CreateUserRequest, GetUserByEmailRequest, GetUserRequest, User};
use tonic::Code;

use crate::helpers::{TestApp, spawn_app};

async fn create(app: &mut TestApp, email: &str, name: &str) -> Result<User, tonic::Status> {
    let request = CreateUserRequest { email: email.to_owned(), name: name.to_owned() };
    app.client.create_user(request).await.map(|r| r.into_inner().user.expect("a user"))
}

#[tokio::test]
async fn create_user_returns_the_stored_user_with_a_normalised_email() {
    let mut app = spawn_app().await;
    let user = create(&mut app, "  Ada@Example.COM", " Ada Lovelace ").await.expect("created");
    assert_eq!(user.email, "ada@example.com");
    assert_eq!(user.name, "Ada Lovelace");
    assert!(uuid::Uuid::parse_str(&user.id).is_ok());
    assert!(user.created_at.is_some());
}

#[tokio::test]
async fn get_user_returns_what_create_user_stored() {
    let mut app = spawn_app().await;
    let created = create(&mut app, "grace@example.com", "Grace").await.expect("created");
    let fetched =
        app.client.get_user(GetUserRequest { id: created.id.clone() }).await.expect("found").into_inner().user;
    assert_eq!(fetched, Some(created));
}

#[tokio::test]
async fn get_user_by_email_finds_the_user_whatever_the_case() {
    let mut app = spawn_app().await;
    let created = create(&mut app, "linus@example.com", "Linus").await.expect("created");
    let request = GetUserByEmailRequest { email: "LINUS@example.com".into() };
    let fetched = app.client.get_user_by_email(request).await.expect("found").into_inner().user;
    assert_eq!(fetched, Some(created));
}

#[tokio::test]
async fn create_user_with_a_taken_email_is_already_exists_and_keeps_the_first() {
    let mut app = spawn_app().await;
    let first = create(&mut app, "ken@example.com", "Ken").await.expect("created");
    let status = create(&mut app, "KEN@example.com", "Impostor").await.expect_err("the email is taken");
    assert_eq!(status.code(), Code::AlreadyExists);
    let request = GetUserByEmailRequest { email: "ken@example.com".into() };
    let kept = app.client.get_user_by_email(request).await.expect("found").into_inner().user;
    assert_eq!(kept, Some(first));
}

#[tokio::test]
async fn invalid_fields_are_invalid_argument_naming_the_field() {
    let mut app = spawn_app().await;
    let status = create(&mut app, "not-an-email", "Ada").await.expect_err("bad email");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("email"), "{}", status.message());
    let status = create(&mut app, "ada@example.com", "   ").await.expect_err("blank name");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("name"), "{}", status.message());
    let status = app.client.get_user(GetUserRequest { id: "42".into() }).await.expect_err("not a uuid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("id"), "{}", status.message());
}

#[tokio::test]
async fn unknown_users_are_not_found() {
    let mut app = spawn_app().await;
    let id = uuid::Uuid::now_v7().to_string();
    let status = app.client.get_user(GetUserRequest { id }).await.expect_err("no such user");
    assert_eq!(status.code(), Code::NotFound);
    let request = GetUserByEmailRequest { email: "nobody@example.com".into() };
    let status = app.client.get_user_by_email(request).await.expect_err("no such user");
    assert_eq!(status.code(), Code::NotFound);
}
