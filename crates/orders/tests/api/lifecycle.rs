//! GetOrder, ShipOrder, DeliverOrder and WatchOrder: an order's life.

use api::orders::v1::{
    DeliverOrderRequest, GetOrderRequest, OrderEventKind, OrderStatus, ShipOrderRequest, WatchOrderRequest,
};
use tonic::Code;

use crate::helpers::spawn_stack;

#[tokio::test]
async fn get_order_returns_the_order_and_unknown_or_malformed_ids_are_refused() {
    let mut stack = spawn_stack().await;
    stack.create_user("uma@example.com").await;
    let order = stack.create_order("uma@example.com", 42).await;
    let fetched = stack.orders.get_order(GetOrderRequest { id: order.id.clone() }).await.expect("found");
    assert_eq!(fetched.into_inner().order, Some(order));
    let unknown = uuid::Uuid::now_v7().to_string();
    let status = stack.orders.get_order(GetOrderRequest { id: unknown }).await.expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let status = stack.orders.get_order(GetOrderRequest { id: "x".into() }).await.expect_err("malformed");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("id"));
}

#[tokio::test]
async fn ship_then_deliver_moves_the_order_forward_and_repeats_are_harmless() {
    let mut stack = spawn_stack().await;
    stack.create_user("vic@example.com").await;
    let id = stack.create_order("vic@example.com", 42).await.id;
    for _ in 0..2 {
        let shipped = stack.orders.ship_order(ShipOrderRequest { id: id.clone() }).await.expect("shipped");
        assert_eq!(shipped.into_inner().order.expect("order").status(), OrderStatus::Shipped);
    }
    for _ in 0..2 {
        let delivered = stack.orders.deliver_order(DeliverOrderRequest { id: id.clone() }).await.expect("delivered");
        assert_eq!(delivered.into_inner().order.expect("order").status(), OrderStatus::Delivered);
    }
    let status = stack.orders.ship_order(ShipOrderRequest { id }).await.expect_err("already delivered");
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn deliver_before_ship_is_failed_precondition() {
    let mut stack = spawn_stack().await;
    stack.create_user("wes@example.com").await;
    let id = stack.create_order("wes@example.com", 42).await.id;
    let status = stack.orders.deliver_order(DeliverOrderRequest { id: id.clone() }).await.expect_err("not shipped");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("SHIPPED"), "{}", status.message());
    let order = stack.orders.get_order(GetOrderRequest { id }).await.expect("found").into_inner().order;
    assert_eq!(order.expect("order").status(), OrderStatus::Created);
}

#[tokio::test]
async fn watch_order_streams_history_then_live_events_and_ends_after_delivery() {
    let mut stack = spawn_stack().await;
    stack.create_user("xia@example.com").await;
    let id = stack.create_order("xia@example.com", 42).await.id;
    let mut events =
        stack.orders.watch_order(WatchOrderRequest { order_id: id.clone() }).await.expect("watch").into_inner();
    let created = events.message().await.expect("a message").expect("the created event");
    assert_eq!(created.event.expect("event").kind(), OrderEventKind::Created);

    stack.orders.ship_order(ShipOrderRequest { id: id.clone() }).await.expect("shipped");
    let shipped = events.message().await.expect("a message").expect("the shipped event");
    assert_eq!(shipped.event.expect("event").kind(), OrderEventKind::Shipped);

    stack.orders.deliver_order(DeliverOrderRequest { id: id.clone() }).await.expect("delivered");
    let delivered = events.message().await.expect("a message").expect("the delivered event");
    let delivered = delivered.event.expect("event");
    assert_eq!(delivered.kind(), OrderEventKind::Delivered);
    assert_eq!(delivered.order_id, id);
    assert!(events.message().await.expect("ends with OK").is_none(), "the stream ends after DELIVERED");
}

#[tokio::test]
async fn watch_order_sees_changes_made_on_another_replica() {
    let mut stack = spawn_stack().await;
    stack.create_user("yan@example.com").await;
    let id = stack.create_order("yan@example.com", 42).await.id;
    let mut other = stack.another_orders_replica().await;
    let mut events =
        stack.orders.watch_order(WatchOrderRequest { order_id: id.clone() }).await.expect("watch").into_inner();
    events.message().await.expect("a message").expect("the created event");

    other.ship_order(ShipOrderRequest { id: id.clone() }).await.expect("shipped on the other replica");
    let shipped = events.message().await.expect("a message").expect("the shipped event");
    assert_eq!(shipped.event.expect("event").kind(), OrderEventKind::Shipped);
}

#[tokio::test]
async fn watch_order_of_an_unknown_or_malformed_id_is_refused() {
    let mut stack = spawn_stack().await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let status = stack.orders.watch_order(WatchOrderRequest { order_id: unknown }).await.expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let status = stack.orders.watch_order(WatchOrderRequest { order_id: "1".into() }).await.expect_err("malformed");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("order_id"));
}
