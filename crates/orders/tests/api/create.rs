//! CreateOrder: validation, the customer check, idempotency, deadlines.

use std::time::Duration;

use api::orders::v1::{CreateOrderRequest, ListOrdersRequest, OrderStatus};
use tonic::Code;

use crate::helpers::{order_request, raw_grpc_status, silent_endpoint, spawn_orders_with_users_at, spawn_stack};

#[tokio::test]
async fn create_order_for_an_existing_customer_returns_a_created_order() {
    let mut stack = spawn_stack().await;
    stack.create_user("ada@example.com").await;
    let request = CreateOrderRequest { currency: "eur".into(), ..order_request("Ada@Example.com", 1999, "") };
    let order = stack.orders.create_order(request).await.expect("created").into_inner().order.expect("an order");
    assert_eq!(order.customer_email, "ada@example.com");
    assert_eq!(order.total_cents, 1999);
    assert_eq!(order.currency, "EUR");
    assert_eq!(order.status(), OrderStatus::Created);
    assert!(order.created_at.is_some());
}

#[tokio::test]
async fn create_order_for_an_unknown_customer_is_failed_precondition_naming_the_email() {
    let mut stack = spawn_stack().await;
    let status = stack.orders.create_order(order_request("ghost@example.com", 100, "")).await.expect_err("unknown");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("ghost@example.com"), "{}", status.message());
}

#[tokio::test]
async fn create_order_with_invalid_fields_is_invalid_argument_naming_each_field() {
    let mut stack = spawn_stack().await;
    let cases = [
        (order_request("not-an-email", 100, ""), "customer_email"),
        (order_request("a@example.com", 0, ""), "total_cents"),
        (order_request("a@example.com", -1, ""), "total_cents"),
        (CreateOrderRequest { currency: "XYZ".into(), ..order_request("a@example.com", 1, "") }, "currency"),
        (order_request("a@example.com", 1, "has spaces"), "idempotency_key"),
    ];
    for (request, field) in cases {
        let status = stack.orders.create_order(request).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
}

#[tokio::test]
async fn create_order_with_a_reused_key_and_the_same_request_returns_the_first_order() {
    let mut stack = spawn_stack().await;
    stack.create_user("bob@example.com").await;
    let first = stack.orders.create_order(order_request("bob@example.com", 500, "key-1")).await.expect("first");
    let again = stack.orders.create_order(order_request("bob@example.com", 500, "key-1")).await.expect("replay");
    assert_eq!(first.into_inner().order, again.into_inner().order);
    assert_eq!(count_orders(&mut stack, "bob@example.com").await, 1);
}

#[tokio::test]
async fn create_order_with_a_reused_key_and_a_different_request_is_already_exists() {
    let mut stack = spawn_stack().await;
    stack.create_user("carol@example.com").await;
    stack.orders.create_order(order_request("carol@example.com", 500, "key-2")).await.expect("first");
    let status =
        stack.orders.create_order(order_request("carol@example.com", 501, "key-2")).await.expect_err("key reused");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(status.message().contains("key-2"), "{}", status.message());
    assert_eq!(count_orders(&mut stack, "carol@example.com").await, 1);
}

#[tokio::test]
async fn concurrent_creates_with_one_key_create_exactly_one_order() {
    let mut stack = spawn_stack().await;
    stack.create_user("dave@example.com").await;
    let calls = (0..16).map(|_| {
        let mut client = stack.orders.clone();
        tokio::spawn(async move { client.create_order(order_request("dave@example.com", 700, "race")).await })
    });
    let mut ids = Vec::new();
    for call in calls {
        let response = call.await.expect("the task ran").expect("every duplicate succeeds");
        ids.push(response.into_inner().order.expect("an order").id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "all duplicates answer with the same order");
    assert_eq!(count_orders(&mut stack, "dave@example.com").await, 1);
}

#[tokio::test]
async fn create_order_when_users_does_not_answer_is_unavailable_within_the_deadline() {
    let address = silent_endpoint().await;
    let mut stack = spawn_orders_with_users_at(address, Duration::from_millis(200)).await;
    let status = stack.orders.create_order(order_request("erin@example.com", 100, "")).await.expect_err("no users");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("users"), "{}", status.message());
}

#[tokio::test]
async fn create_order_whose_callers_deadline_passes_while_users_is_silent_is_deadline_exceeded() {
    let address = silent_endpoint().await;
    // Users may take 30 s by configuration; the caller allows 300 ms.
    let stack = spawn_orders_with_users_at(address, Duration::from_secs(30)).await;
    let request = order_request("fay@example.com", 100, "");
    let path = "/orders.v1.OrderService/CreateOrder";
    let code = raw_grpc_status(&stack.orders_address, path, &request, "300m").await;
    assert_eq!(code, Code::DeadlineExceeded, "not tonic's CANCELLED");
}

async fn count_orders(stack: &mut crate::helpers::TestStack, email: &str) -> usize {
    let request = ListOrdersRequest { page_size: 1000, customer_email: email.into(), ..Default::default() };
    let mut stream = stack.orders.list_orders(request).await.expect("list").into_inner();
    let mut count = 0;
    while stream.message().await.expect("a message").is_some() {
        count += 1;
    }
    count
}
