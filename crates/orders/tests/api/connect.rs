//! Orders over Connect with JSON from a plain HTTP/1.1 client: a unary create and a
//! server stream (ListOrders) in Connect envelopes ending with the end-stream message.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{Value, json};

use crate::helpers::spawn_stack;

/// POSTs `body` with `content_type` to `method` of the orders service; status and body.
async fn post(address: &str, method: &str, content_type: &str, body: Bytes) -> (StatusCode, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{address}/orders.v1.OrderService/{method}"))
        .header("content-type", content_type)
        .body(Full::new(body))
        .expect("a valid request");
    let response = client.request(request).await.expect("an HTTP answer");
    let status = response.status();
    (status, response.into_body().collect().await.expect("the whole body").to_bytes())
}

/// The (flags, JSON) of each Connect envelope in `body`.
fn envelopes(mut body: Bytes) -> Vec<(u8, Value)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let flags = body.get_u8();
        let length = body.get_u32() as usize;
        let message = body.split_to(length);
        out.push((flags, serde_json::from_slice(&message).expect("a JSON message")));
    }
    assert!(body.is_empty(), "a partial envelope left: {body:?}");
    out
}

#[tokio::test]
async fn an_order_created_over_connect_json_is_listed_by_a_connect_stream() {
    let mut stack = spawn_stack().await;
    stack.create_user("cody@example.com").await;
    let create = json!({"customerEmail": "cody@example.com", "totalCents": "1250", "currency": "EUR"});
    let (status, body) =
        post(&stack.orders_address, "CreateOrder", "application/json", Bytes::from(create.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let created: Value = serde_json::from_slice(&body).expect("JSON");
    let id = created["order"]["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["order"]["totalCents"], "1250", "int64 is a JSON string: {created}");

    let request = json!({"customerEmail": "cody@example.com"}).to_string();
    let mut envelope = BytesMut::new();
    envelope.put_u8(0);
    envelope.put_u32(u32::try_from(request.len()).expect("small"));
    envelope.put_slice(request.as_bytes());
    let (status, body) = post(&stack.orders_address, "ListOrders", "application/connect+json", envelope.freeze()).await;
    assert_eq!(status, StatusCode::OK);
    let messages = envelopes(body);
    let (end_flags, end) = messages.last().expect("an end-stream message");
    assert_eq!(*end_flags, 2, "the stream ends with the end-stream flag");
    assert!(end.get("error").is_none(), "{end}");
    let listed: Vec<_> =
        messages[..messages.len() - 1].iter().map(|(_, message)| message["order"]["id"].clone()).collect();
    assert_eq!(listed, [Value::from(id)]);
}
