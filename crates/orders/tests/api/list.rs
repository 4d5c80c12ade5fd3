//! ListOrders: paging with opaque tokens, filters, bad tokens.

use api::orders::v1::{ListOrdersRequest, ListOrdersResponse, order_service_client::OrderServiceClient};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use tonic::{Code, Status, transport::Channel};

use crate::helpers::spawn_stack;

async fn page(
    client: &mut OrderServiceClient<Channel>,
    request: ListOrdersRequest,
) -> Result<Vec<ListOrdersResponse>, Status> {
    let mut stream = client.list_orders(request).await?.into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await? {
        messages.push(message);
    }
    Ok(messages)
}

#[tokio::test]
async fn list_orders_pages_through_every_order_once_in_creation_order() {
    let mut stack = spawn_stack().await;
    stack.create_user("pat@example.com").await;
    let mut created = Vec::new();
    for cents in 1..=7 {
        created.push(stack.create_order("pat@example.com", cents).await.id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut sizes = Vec::new();
    loop {
        let request = ListOrdersRequest { page_size: 3, page_token: token.clone(), ..Default::default() };
        let messages = page(&mut stack.orders, request).await.expect("a page");
        sizes.push(messages.len());
        // Only the last message of a page may carry the token.
        for message in &messages[..messages.len().saturating_sub(1)] {
            assert!(message.next_page_token.is_empty());
        }
        seen.extend(messages.iter().map(|m| m.order.as_ref().expect("an order").id.clone()));
        token = messages.last().map(|m| m.next_page_token.clone()).unwrap_or_default();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen, created);
}

#[tokio::test]
async fn list_orders_filters_by_customer() {
    let mut stack = spawn_stack().await;
    stack.create_user("quinn@example.com").await;
    stack.create_user("rita@example.com").await;
    let mine = stack.create_order("quinn@example.com", 10).await;
    stack.create_order("rita@example.com", 20).await;
    let request = ListOrdersRequest { customer_email: "QUINN@example.com".into(), ..Default::default() };
    let messages = page(&mut stack.orders, request).await.expect("a page");
    let orders: Vec<_> = messages.into_iter().filter_map(|m| m.order).collect();
    assert_eq!(orders, vec![mine]);
}

#[tokio::test]
async fn a_tampered_or_foreign_page_token_is_invalid_argument() {
    let mut stack = spawn_stack().await;
    stack.create_user("sam@example.com").await;
    for cents in 1..=3 {
        stack.create_order("sam@example.com", cents).await;
    }
    let first = page(&mut stack.orders, ListOrdersRequest { page_size: 1, ..Default::default() }).await.expect("page");
    let token = first[0].next_page_token.clone();
    assert!(!token.is_empty());

    let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64url");
    bytes[5] ^= 0x40;
    let tampered = URL_SAFE_NO_PAD.encode(bytes);
    let other_filter = ListOrdersRequest { page_token: token, customer_email: "sam@example.com".into(), page_size: 1 };
    for request in [
        ListOrdersRequest { page_size: 1, page_token: tampered, ..Default::default() },
        ListOrdersRequest { page_size: 1, page_token: "garbage".into(), ..Default::default() },
        other_filter,
    ] {
        let status = page(&mut stack.orders, request).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("page_token"), "{}", status.message());
    }
}

#[tokio::test]
async fn a_page_size_out_of_range_is_invalid_argument() {
    let mut stack = spawn_stack().await;
    for page_size in [-1, 1001] {
        let status =
            page(&mut stack.orders, ListOrdersRequest { page_size, ..Default::default() }).await.expect_err("bad");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("page_size"), "{}", status.message());
    }
}
