//! The demo's traffic shape, for `make demo` and for the compose stack's test: users,
//! orders over gRPC and Connect JSON, an idempotent retry, an invalid request, a page
//! walk and a watched order, each call recorded.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use api::{
    orders::v1::{
        CreateOrderRequest, DeliverOrderRequest, ListOrdersRequest, OrderEventKind, ShipOrderRequest,
        WatchOrderRequest, order_service_client::OrderServiceClient,
    },
    users::v1::{CreateUserRequest, user_service_client::UserServiceClient},
};
use serde_json::json;
use tonic::{Code, Status, transport::Channel};

use crate::{
    auth::{Bearer, DevAuth},
    connect::ConnectJson,
    new_traceparent, traced_request,
};

/// Every call the traffic made: method, code, latency.
#[derive(Default)]
pub struct Recorder {
    /// The calls in the order they were made: method name, gRPC code, latency.
    pub calls: Vec<(&'static str, Code, Duration)>,
}

impl Recorder {
    /// Makes `call` (of `method`, by its name) and records its outcome and latency.
    ///
    /// # Errors
    /// The call's own status.
    pub async fn call<T>(
        &mut self,
        method: &'static str,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let start = Instant::now();
        let result = call.await;
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.calls.push((method, code, start.elapsed()));
        result
    }

    /// The `p`th percentile (0-100) of the recorded latencies; zero when none.
    pub fn percentile(&self, p: f64) -> Duration {
        let mut latencies: Vec<_> = self.calls.iter().map(|(_, _, d)| *d).collect();
        latencies.sort();
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies.get(rank.saturating_sub(1)).copied().unwrap_or_default()
    }

    /// The calls that did not answer OK, counted by code (`"InvalidArgument"`, ...).
    pub fn errors_by_code(&self) -> BTreeMap<String, usize> {
        let mut by_code = BTreeMap::new();
        for (_, code, _) in &self.calls {
            if *code != Code::Ok {
                *by_code.entry(format!("{code:?}")).or_default() += 1;
            }
        }
        by_code
    }
}

/// Who the traffic's calls are made as.
#[derive(Clone, Copy)]
pub enum Caller<'a> {
    /// The subject `demo`, with this run's short-lived tokens; a call without one is
    /// checked first to be refused UNAUTHENTICATED.
    Authenticated(&'a DevAuth),
    /// No credentials: a stack whose services run with `auth.mode = "none"` (compose's).
    Anonymous,
}

/// What [`drive`] saw.
pub struct Traffic {
    /// One line per step, for a summary.
    pub story: Vec<String>,
    /// The trace id the first CreateOrder was sent with (its `traceparent`).
    pub trace_id: String,
    /// The ids of the orders placed, in order.
    pub orders: Vec<String>,
    /// The customers the orders were placed for (each one a user).
    pub customers: Vec<String>,
    /// How many orders the page walk listed: every order in the database.
    pub listed: usize,
}

/// The demo's traffic: users, orders (one retried with its idempotency key), one invalid
/// request, paging, and a watched order going through its life; every fourth order
/// over Connect JSON and one GetOrder as a Connect `GET`, the rest over gRPC. Users are
/// called over `users_channel` (the demo's takes mTLS), orders at `orders_url`
/// (`http://HOST:PORT`). Every user and idempotency key is new for each `run` (any
/// short string): the traffic can be driven twice against one database.
///
/// # Errors
/// A call that failed when it should not have, or an answer that breaks what the
/// traffic checks (the retry returns the first order, paging lists every order once,
/// the watch sees created, shipped, delivered).
pub async fn drive(
    recorder: &mut Recorder,
    caller: Caller<'_>,
    users_channel: Channel,
    orders_url: &str,
    order_count: usize,
    run: &str,
) -> anyhow::Result<Traffic> {
    let orders_channel = Channel::from_shared(orders_url.to_owned())?.connect().await?;
    let mut story = Vec::new();
    let (users_bearer, orders_bearer, orders_token) = match caller {
        Caller::Authenticated(auth) => {
            // An unauthenticated call is refused before any work is done.
            let anonymous = UserServiceClient::new(users_channel.clone())
                .create_user(CreateUserRequest { email: "anonymous@example.com".to_owned(), name: "Anon".to_owned() })
                .await
                .expect_err("a call without a token");
            ensure!(
                anonymous.code() == Code::Unauthenticated,
                "a call without a token is UNAUTHENTICATED: {anonymous:?}"
            );
            story.push(format!("no token: {:?} \"{}\"", anonymous.code(), anonymous.message()));
            (
                auth.bearer("demo", "users", &[]),
                auth.bearer("demo", "orders", &[]),
                Some(auth.token("demo", "orders", &[])),
            )
        }
        Caller::Anonymous => (Bearer::anonymous(), Bearer::anonymous(), None),
    };
    let mut users = UserServiceClient::with_interceptor(users_channel, users_bearer);
    let mut orders = OrderServiceClient::with_interceptor(orders_channel, orders_bearer);
    let orders_connect = ConnectJson::new(orders_url, orders_token);

    let customers: Vec<String> = (1..=5).map(|i| format!("customer{i}-{run}@example.com")).collect();
    for (i, email) in customers.iter().enumerate() {
        let request = CreateUserRequest { email: email.clone(), name: format!("Customer {}", i + 1) };
        recorder.call("CreateUser", users.create_user(request)).await?;
    }

    let (mut placed, mut over_connect): (Vec<String>, usize) = (Vec::new(), 0);
    // The first order is sent with a traceparent, as a traced client would: its trace
    // id is known before the call and printed in the summary.
    let (trace_id, traceparent) = new_traceparent();
    for i in 0..order_count {
        let request = CreateOrderRequest {
            customer_email: customers[i % customers.len()].clone(),
            total_cents: 500 + 137 * i as i64,
            currency: ["USD", "EUR", "GBP"][i % 3].to_owned(),
            idempotency_key: format!("{run}-order-{i}"),
        };
        if i % 4 == 3 {
            // Every fourth order over Connect JSON: the same handler, proto3 JSON field names.
            let message = json!({
                "customerEmail": request.customer_email,
                "totalCents": request.total_cents.to_string(),
                "currency": request.currency,
                "idempotencyKey": request.idempotency_key,
            });
            let answer = recorder
                .call("CreateOrder", orders_connect.post("orders.v1.OrderService/CreateOrder", &message))
                .await?;
            placed.push(order_id(&answer)?);
            over_connect += 1;
            continue;
        }
        let request = if i == 0 { traced_request(request, &traceparent)? } else { tonic::Request::new(request) };
        let order = recorder.call("CreateOrder", orders.create_order(request)).await?.into_inner().order;
        placed.push(order.context("CreateOrder returns the order")?.id);
    }
    let first_id = placed.first().context("at least one order (--orders)")?.clone();
    let first = recorder
        .call("GetOrder", orders_connect.get("orders.v1.OrderService/GetOrder", &json!({"id": first_id})))
        .await?;
    ensure!(order_id(&first)? == first_id, "GetOrder over GET returns the order: {first}");
    story.push(format!(
        "Connect JSON: {over_connect} of {} orders placed by POST; GetOrder {first_id} by GET ({} {})",
        placed.len(),
        first["order"]["totalCents"],
        first["order"]["currency"]
    ));

    // A client retry: the same request with the same idempotency key.
    let retry = CreateOrderRequest {
        customer_email: customers[0].clone(),
        total_cents: 500,
        currency: "USD".to_owned(),
        idempotency_key: format!("{run}-order-0"),
    };
    let replayed = recorder.call("CreateOrder", orders.create_order(retry)).await?.into_inner().order;
    ensure!(replayed.as_ref().map(|o| &o.id) == Some(&first_id), "a retried CreateOrder returns the first order");
    story.push(format!("idempotent retry: same key returned order {} again", first_id));

    let invalid = CreateOrderRequest {
        customer_email: customers[1].clone(),
        total_cents: 100,
        currency: "ZZZ".to_owned(),
        idempotency_key: String::new(),
    };
    let status = recorder.call("CreateOrder", orders.create_order(invalid)).await.expect_err("an invalid request");
    ensure!(status.code() == Code::InvalidArgument, "an invalid request is InvalidArgument, got {status:?}");
    story.push(format!("invalid request: {:?} \"{}\"", status.code(), status.message()));

    // Every order in the database, page by page: this run's must each be there once,
    // and no order twice (the database may hold earlier runs' orders too).
    let (mut listed, mut pages, mut token) = (Vec::new(), 0, String::new());
    loop {
        let request = ListOrdersRequest { page_size: 15, page_token: token.clone(), ..Default::default() };
        let mut stream = recorder.call("ListOrders", orders.list_orders(request)).await?.into_inner();
        pages += 1;
        token.clear();
        while let Some(message) = stream.message().await? {
            listed.push(message.order.context("a listed order")?.id);
            token = message.next_page_token;
        }
        if token.is_empty() {
            break;
        }
    }
    let distinct: std::collections::HashSet<&String> = listed.iter().collect();
    ensure!(
        distinct.len() == listed.len(),
        "paging lists no order twice: {} of {} distinct",
        distinct.len(),
        listed.len()
    );
    let missing = placed.iter().filter(|id| !distinct.contains(id)).count();
    ensure!(missing == 0, "paging lists every order placed: {missing} of {} missing", placed.len());
    story.push(format!("paging: {} orders in {pages} pages of up to 15", listed.len()));
    let listed = listed.len();

    let watched = placed[placed.len() / 2].clone();
    let mut events = recorder
        .call("WatchOrder", orders.watch_order(WatchOrderRequest { order_id: watched.clone() }))
        .await?
        .into_inner();
    let first = events.message().await?.and_then(|m| m.event).context("the created event")?;
    recorder.call("ShipOrder", orders.ship_order(ShipOrderRequest { id: watched.clone() })).await?;
    recorder.call("DeliverOrder", orders.deliver_order(DeliverOrderRequest { id: watched.clone() })).await?;
    let mut kinds = vec![first.kind()];
    while let Some(message) = events.message().await? {
        kinds.push(message.event.context("an event")?.kind());
    }
    let expected = [OrderEventKind::Created, OrderEventKind::Shipped, OrderEventKind::Delivered];
    ensure!(kinds == expected, "WatchOrder sees created, shipped, delivered; saw {kinds:?}");
    story.push(format!("watch {watched}: {}", kinds.iter().map(|k| k.as_str_name()).collect::<Vec<_>>().join(" -> ")));
    Ok(Traffic { story, trace_id, orders: placed, customers, listed })
}

/// The `rpc_protocol` label values, in the order the summary prints them.
pub const PROTOCOLS: [&str; 3] = ["grpc", "connect", "grpc_web"];

/// The `order.id` of a Connect JSON answer holding an order.
fn order_id(answer: &serde_json::Value) -> anyhow::Result<String> {
    answer["order"]["id"].as_str().map(str::to_owned).context("the answer has order.id")
}
