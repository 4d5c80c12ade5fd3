//! Errors a program can read: google.rpc details decoded from real calls, and messages
//! that quote input only briefly.

use api::orders::v1::{CreateOrderRequest, GetOrderRequest, ListOrdersRequest};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::{order_request, spawn_stack};

/// The fields of `status`'s `google.rpc.BadRequest` violations, in order.
fn violated_fields(status: &Status) -> Vec<String> {
    let details = status.get_error_details();
    let bad_request = details.bad_request().expect("a BadRequest detail");
    bad_request.field_violations.iter().map(|v| v.field.clone()).collect()
}

/// Asserts `status` has `code` and a `google.rpc.ErrorInfo` of `reason` in domain `orders.v1`.
fn assert_reason(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code);
    let details = status.get_error_details();
    let info = details.error_info().expect("an ErrorInfo detail");
    assert_eq!((info.reason.as_str(), info.domain.as_str()), (reason, "orders.v1"));
}

#[tokio::test]
async fn create_order_with_several_invalid_fields_returns_a_field_violation_for_each() {
    let mut stack = spawn_stack().await;
    let request = CreateOrderRequest { currency: "XYZ".into(), ..order_request("not-an-email", 0, "has spaces") };
    let status = stack.orders.create_order(request).await.expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["customer_email", "total_cents", "currency", "idempotency_key"]);
}

#[tokio::test]
async fn get_order_with_a_malformed_id_returns_a_field_violation_naming_id() {
    let mut stack = spawn_stack().await;
    let status = stack.orders.get_order(GetOrderRequest { id: "42".into() }).await.expect_err("not a UUID");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["id"]);
}

#[tokio::test]
async fn list_orders_with_a_bad_page_size_and_a_bad_email_returns_a_field_violation_for_each() {
    let mut stack = spawn_stack().await;
    let request = ListOrdersRequest { customer_email: "nope".into(), page_size: -1, page_token: String::new() };
    let status = stack.orders.list_orders(request).await.expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["page_size", "customer_email"]);
}

#[tokio::test]
async fn create_order_with_a_reused_key_returns_reason_idempotency_key_reused() {
    let mut stack = spawn_stack().await;
    stack.create_user("dora@example.com").await;
    stack.orders.create_order(order_request("dora@example.com", 500, "key-3")).await.expect("first");
    let status = stack.orders.create_order(order_request("dora@example.com", 501, "key-3")).await.expect_err("reused");
    assert_reason(&status, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
}

#[tokio::test]
async fn create_order_for_an_unknown_customer_returns_reason_customer_not_found() {
    let mut stack = spawn_stack().await;
    let status = stack.orders.create_order(order_request("ghost@example.com", 100, "")).await.expect_err("unknown");
    assert_reason(&status, Code::FailedPrecondition, "CUSTOMER_NOT_FOUND");
}

#[tokio::test]
async fn a_megabyte_of_input_in_any_create_field_comes_back_as_a_short_message() {
    let mut stack = spawn_stack().await;
    let huge = "X".repeat(1 << 20);
    for (request, field) in [
        (CreateOrderRequest { currency: huge.clone(), ..order_request("a@example.com", 1, "") }, "currency"),
        (order_request(&huge, 1, ""), "customer_email"),
        (order_request("a@example.com", 1, &huge), "idempotency_key"),
    ] {
        let status = stack.orders.create_order(request).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(status.message().len() < 200, "{field}: a {} byte message", status.message().len());
        assert_eq!(violated_fields(&status), [field]);
    }
}
