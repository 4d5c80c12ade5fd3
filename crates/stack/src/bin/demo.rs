//! `make demo`: the embedded default (SQLite, static endpoints) with two users replicas
//! and one orders replica, driven by real traffic, then a summary. Authentication is on:
//! a throwaway Ed25519 key made at start signs short-lived tokens for the demo's calls
//! and for orders' calls to users; orders calls users over mTLS with a throwaway CA.
//! Most calls are gRPC; some go to orders over Connect JSON (HTTP/1.1 `POST`, and a
//! cacheable `GET`) on the same port, and the summary shows the calls per protocol as
//! the services' own metrics count them.

use std::{
    collections::BTreeMap,
    path::PathBuf,
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
use clap::Parser;
use serde_json::json;
use stack::{
    Service, auth::DevAuth, connect::ConnectJson, new_traceparent, orders_env, sample, scrape, tls::DevTls,
    traced_request, users_env,
};
use tonic::{Code, Status, transport::Channel};

/// Command line of the demo.
#[derive(Parser)]
#[command(about = "Run users x2 + orders on the embedded default and drive traffic through them")]
struct Args {
    /// Working directory for the SQLite files and the service logs (emptied first).
    #[arg(long, default_value = ".demo")]
    dir: PathBuf,
    /// Orders to place.
    #[arg(long, default_value_t = 40)]
    orders: usize,
}

/// Every call the demo made: method, code, latency.
#[derive(Default)]
struct Recorder {
    calls: Vec<(&'static str, Code, Duration)>,
}

impl Recorder {
    async fn call<T>(
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

    fn percentile(&self, p: f64) -> Duration {
        let mut latencies: Vec<_> = self.calls.iter().map(|(_, _, d)| *d).collect();
        latencies.sort();
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies.get(rank.saturating_sub(1)).copied().unwrap_or_default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir).with_context(|| format!("empty {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let users_db = dir.join("users.db");
    let auth = DevAuth::new(&dir)?;
    // mTLS between orders and users: a throwaway CA made now, like the signing key.
    let tls = DevTls::new(&dir)?;
    let users_env = [users_env(&users_db), auth.users_env(), tls.users_env()].concat();

    println!("starting users-a, users-b (sharing {}) and orders ...", users_db.display());
    // Replicas start one after the other: the first one creates the schema.
    let mut users_a = Service::start("users", "users-a", &users_env, &dir).await?;
    let mut users_b = Service::start("users", "users-b", &users_env, &dir).await?;
    let users = [&users_a, &users_b];
    let orders_env = [orders_env(&dir.join("orders.db"), &users), auth.orders_env(), tls.orders_env(&users)].concat();
    let mut orders = Service::start("orders", "orders", &orders_env, &dir).await?;
    println!("  users-a {}  users-b {}  orders {}", users_a.address, users_b.address, orders.address);

    let mut recorder = Recorder::default();
    let users_channel = tls.channel(&users_a).await?;
    let outcome = drive(&mut recorder, &auth, users_channel, &orders.address, args.orders).await;

    // Calls per protocol as each service counts them (its `rpc_protocol` metric label).
    let mut per_protocol = Vec::new();
    for service in [&orders, &users_a, &users_b] {
        let metrics = scrape(service).await?;
        let counts = PROTOCOLS.map(|protocol| {
            (protocol, sample(&metrics, "grpc_server_handled_total", &[("rpc_protocol", protocol)]) as u64)
        });
        per_protocol.push((service.name.clone(), counts));
    }

    let mut exits = Vec::new();
    for service in [&mut orders, &mut users_a, &mut users_b] {
        exits.push((service.name.clone(), service.stop().await?));
    }
    let spread = [
        (users_a.name.clone(), users_a.rpcs_finished("GetUserByEmail")?),
        (users_b.name.clone(), users_b.rpcs_finished("GetUserByEmail")?),
    ];

    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    for (_, code, _) in &recorder.calls {
        if *code != Code::Ok {
            *by_code.entry(format!("{code:?}")).or_default() += 1;
        }
    }
    let (story, trace_id) = outcome?;
    let traced_lines = [&orders, &users_a, &users_b]
        .iter()
        .map(|service| service.log_lines())
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .filter(|line| line["trace_id"] == trace_id.as_str())
        .count();
    println!("\n== traffic ==");
    for line in &story {
        println!("{line}");
    }
    println!("\n== summary ==");
    println!("calls: {}", recorder.calls.len());
    println!("errors by code: {}", if by_code.is_empty() { "none".to_owned() } else { format!("{by_code:?}") });
    println!("latency: p50 {:.2} ms, p99 {:.2} ms", ms(recorder.percentile(50.0)), ms(recorder.percentile(99.0)));
    println!(
        "users.v1.UserService/GetUserByEmail per replica (orders' round-robin): {}",
        spread.iter().map(|(name, n)| format!("{name} {n}")).collect::<Vec<_>>().join(", ")
    );
    println!("calls per protocol (each service's grpc_server_handled_total by rpc_protocol):");
    for (name, counts) in &per_protocol {
        let counts = counts.iter().map(|(protocol, n)| format!("{protocol} {n}")).collect::<Vec<_>>().join(", ");
        println!("  {name}: {counts}");
    }
    println!(
        "exit codes after SIGTERM: {}",
        exits.iter().map(|(n, c)| format!("{n} {c}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "trace of the first CreateOrder: {trace_id} ({traced_lines} log lines carry it; in Jaeger when \
         USERS_/ORDERS_TELEMETRY__OTLP_ENDPOINT point at it)"
    );
    println!(
        "auth: on (throwaway Ed25519 key; JWKS {}; tokens live {} min; orders -> users as subject `orders`)",
        dir.join("jwks.json").display(),
        stack::auth::LIFETIME.as_secs() / 60
    );
    println!(
        "mtls: orders -> users (throwaway CA {}; users require a client certificate)",
        tls.path("ca.pem").display()
    );
    println!("logs: {}", dir.display());
    ensure!(traced_lines >= 2, "the orders and users log lines of the traced call should carry its trace id");
    ensure!(spread.iter().all(|(_, n)| *n > 0), "every users replica should have served GetUserByEmail");
    let connect_calls: u64 =
        per_protocol.iter().flat_map(|(_, counts)| counts).filter(|(p, _)| *p == "connect").map(|(_, n)| n).sum();
    ensure!(connect_calls > 0, "the services should have counted the Connect calls under rpc_protocol=connect");
    ensure!(exits.iter().all(|(_, code)| *code == 0), "every service should exit 0 after SIGTERM");
    let unexpected: usize = by_code.iter().filter(|(code, _)| *code != "InvalidArgument").map(|(_, n)| n).sum();
    ensure!(unexpected == 0, "calls failed unexpectedly: {by_code:?}");
    println!("demo ok");
    Ok(())
}

/// The traffic: users, orders (one retried with its idempotency key), one invalid
/// request, paging, and a watched order going through its life; every fourth order
/// over Connect JSON and one GetOrder as a Connect `GET` (orders' port is plaintext;
/// users' takes mTLS clients), the rest over gRPC. Returns what it saw and the trace id the first CreateOrder was sent with.
async fn drive(
    recorder: &mut Recorder,
    auth: &DevAuth,
    users_channel: Channel,
    orders_url: &str,
    order_count: usize,
) -> anyhow::Result<(Vec<String>, String)> {
    let orders_channel = Channel::from_shared(orders_url.to_owned())?.connect().await?;
    // An unauthenticated call is refused before any work is done.
    let anonymous = UserServiceClient::new(users_channel.clone())
        .create_user(CreateUserRequest { email: "anonymous@example.com".to_owned(), name: "Anon".to_owned() })
        .await
        .expect_err("a call without a token");
    ensure!(anonymous.code() == Code::Unauthenticated, "a call without a token is UNAUTHENTICATED: {anonymous:?}");
    let mut users = UserServiceClient::with_interceptor(users_channel, auth.bearer("demo", "users", &[]));
    let mut orders = OrderServiceClient::with_interceptor(orders_channel, auth.bearer("demo", "orders", &[]));
    let orders_connect = ConnectJson::new(orders_url, auth.token("demo", "orders", &[]));
    let mut story = vec![format!("no token: {:?} \"{}\"", anonymous.code(), anonymous.message())];

    let customers: Vec<String> = (1..=5).map(|i| format!("customer{i}@example.com")).collect();
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
            idempotency_key: format!("demo-order-{i}"),
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
        idempotency_key: "demo-order-0".to_owned(),
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

    let (mut listed, mut pages, mut token) = (0, 0, String::new());
    loop {
        let request = ListOrdersRequest { page_size: 15, page_token: token.clone(), ..Default::default() };
        let mut stream = recorder.call("ListOrders", orders.list_orders(request)).await?.into_inner();
        pages += 1;
        token.clear();
        while let Some(message) = stream.message().await? {
            listed += 1;
            token = message.next_page_token;
        }
        if token.is_empty() {
            break;
        }
    }
    ensure!(listed == placed.len(), "paging lists every order once: {listed} of {}", placed.len());
    story.push(format!("paging: {listed} orders in {pages} pages of up to 15"));

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
    Ok((story, trace_id))
}

/// The `rpc_protocol` label values, in the order the summary prints them.
const PROTOCOLS: [&str; 3] = ["grpc", "connect", "grpc_web"];

/// The `order.id` of a Connect JSON answer holding an order.
fn order_id(answer: &serde_json::Value) -> anyhow::Result<String> {
    answer["order"]["id"].as_str().map(str::to_owned).context("the answer has order.id")
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
