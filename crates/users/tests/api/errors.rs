//! Errors a program can read: google.rpc details decoded from real calls, and messages
//! that quote input only briefly.

use api::users::v1::CreateUserRequest;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::{TestApp, spawn_app};

async fn create(app: &mut TestApp, email: &str, name: &str) -> Result<(), Status> {
    let request = CreateUserRequest { email: email.to_owned(), name: name.to_owned() };
    app.client.create_user(request).await.map(drop)
}

/// The fields of `status`'s `google.rpc.BadRequest` violations, in order.
fn violated_fields(status: &Status) -> Vec<String> {
    let details = status.get_error_details();
    let bad_request = details.bad_request().expect("a BadRequest detail");
    bad_request.field_violations.iter().map(|v| v.field.clone()).collect()
}

#[tokio::test]
async fn create_user_with_a_bad_email_and_a_blank_name_returns_a_field_violation_for_each() {
    let mut app = spawn_app().await;
    let status = create(&mut app, "not-an-email", "  ").await.expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["email", "name"]);
}

#[tokio::test]
async fn create_user_with_a_taken_email_returns_reason_email_taken() {
    let mut app = spawn_app().await;
    create(&mut app, "eve@example.com", "Eve").await.expect("created");
    let status = create(&mut app, "eve@example.com", "Eve again").await.expect_err("taken");
    assert_eq!(status.code(), Code::AlreadyExists);
    let details = status.get_error_details();
    let info = details.error_info().expect("an ErrorInfo detail");
    assert_eq!((info.reason.as_str(), info.domain.as_str()), ("EMAIL_TAKEN", "users.v1"));
}

#[tokio::test]
async fn a_megabyte_of_input_in_any_create_field_comes_back_as_a_short_message() {
    let mut app = spawn_app().await;
    let huge = "X".repeat(1 << 20);
    for (email, name, field) in [(huge.as_str(), "Ada", "email"), ("ada@example.com", huge.as_str(), "name")] {
        let status = create(&mut app, email, name).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(status.message().len() < 200, "{field}: a {} byte message", status.message().len());
        assert_eq!(violated_fields(&status), [field]);
    }
}
