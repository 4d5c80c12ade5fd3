//! System tests with the real observability tools: both services export to a pinned
//! Jaeger v2, their `/metrics` pass `promtool check metrics`, and a log line leads to the
//! trace Jaeger shows.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use api::{
    orders::v1::{CreateOrderRequest, order_service_client::OrderServiceClient},
    users::v1::{CreateUserRequest, user_service_client::UserServiceClient},
};
use serde_json::Value;
use stack::{Service, free_port, new_traceparent, orders_env, sample, scrape, temp_dir, traced_request, users_env};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
};

/// How long Jaeger may take to start: a guard, not a wait.
const PATIENCE: Duration = Duration::from_secs(60);
/// What Jaeger (an OpenTelemetry Collector) logs once its receivers and extensions,
/// the query API among them, are listening.
const READY: &str = "Everything is ready";

/// A tool built by `scripts/install-tools.sh`: `$VAR`, else `.tools/bin/NAME`.
///
/// # Panics
/// When it is missing: this test must not pass without the real tool.
fn tool(var: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin").join(name));
    assert!(
        path.is_file(),
        "{name} not found at {} (${var} or .tools/bin): run scripts/install-tools.sh (or `make tools`)",
        path.display()
    );
    path
}

/// Jaeger v2 all-in-one with in-memory storage, OTLP/gRPC and the query API on loopback.
struct Jaeger {
    /// `http://127.0.0.1:PORT`: where the services export (OTLP over gRPC).
    otlp: String,
    /// `http://127.0.0.1:PORT`: the query HTTP API (`/api/traces/{id}`).
    query: String,
    _child: Child,
}

impl Jaeger {
    async fn start(dir: &Path) -> Self {
        let port = || free_port().expect("a free port");
        let (otlp, query_http, query_grpc) = (port(), port(), port());
        let config = format!(
            r#"service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 1000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"#
        );
        let config_path = dir.join("jaeger.yaml");
        std::fs::write(&config_path, config).expect("write the Jaeger config");
        let log_path = dir.join("jaeger.log");
        let mut log = tokio::fs::File::create(&log_path).await.expect("create the Jaeger log");
        let mut child = Command::new(tool("JAEGER", "jaeger"))
            .arg("--config")
            .arg(&config_path)
            .stdout(log.try_clone().await.expect("a second handle").into_std().await)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start jaeger");
        // Its log lines go to stderr: copied to the log file, and the test goes on once
        // Jaeger says it is ready (an event, not a poll).
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let ready = tokio::time::timeout(PATIENCE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                log.write_all(format!("{line}\n").as_bytes()).await.expect("write the Jaeger log");
                if line.contains(READY) {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(ready, Ok(true)),
            "Jaeger did not log {READY:?} within {PATIENCE:?} (or exited); see {}",
            log_path.display()
        );
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = log.write_all(format!("{line}\n").as_bytes()).await;
            }
        });
        Self {
            otlp: format!("http://127.0.0.1:{otlp}"),
            query: format!("http://127.0.0.1:{query_http}"),
            _child: child,
        }
    }

    /// The spans of trace `trace_id`, which must hold at least `spans`. Call it once the
    /// services have stopped: stopping flushes their spans, each export returns once
    /// Jaeger has stored them (its pipeline has no queue or batch processor), so they are
    /// all there by then.
    async fn trace(&self, trace_id: &str, spans: usize) -> Value {
        let url = format!("{}/api/traces/{trace_id}", self.query);
        let trace = get_json(&url).await.and_then(|body| body["data"].get(0).cloned());
        let found = trace.as_ref().and_then(|t| t["spans"].as_array()).map_or(0, Vec::len);
        assert!(found >= spans, "trace {trace_id} has {found} of {spans} spans in Jaeger");
        trace.expect("found spans")
    }
}

/// GET `url` with curl; the JSON body when the answer is 200.
async fn get_json(url: &str) -> Option<Value> {
    let output = Command::new("curl").args(["--silent", "--fail", url]).output().await.ok()?;
    output.status.success().then(|| serde_json::from_slice(&output.stdout).ok()).flatten()
}

/// `promtool check metrics` on `body`: panics with promtool's findings unless it accepts it.
async fn promtool_accepts(name: &str, body: &str) {
    let mut child = Command::new(tool("PROMTOOL", "promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(body.as_bytes()).await.expect("write to promtool");
    drop(stdin);
    let output = child.wait_with_output().await.expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics rejects {name}'s /metrics:\n{}{}\n--- body ---\n{body}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A Jaeger span's tag value.
fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"].as_array()?.iter().find(|t| t["key"] == key).map(|t| &t["value"])
}

/// The span id a Jaeger span is the child of.
fn parent(span: &Value) -> Option<&str> {
    span["references"].as_array()?.iter().find(|r| r["refType"] == "CHILD_OF")?["spanID"].as_str()
}

/// The one span of `service` named `operation`.
fn span<'a>(trace: &'a Value, service: &str, operation: &str) -> &'a Value {
    let spans = trace["spans"].as_array().expect("spans");
    let matching: Vec<&Value> = spans
        .iter()
        .filter(|s| {
            s["operationName"] == operation
                && trace["processes"][s["processID"].as_str().unwrap_or("")]["serviceName"] == service
        })
        .collect();
    assert_eq!(matching.len(), 1, "one {service} span {operation} in {trace:#}");
    matching[0]
}

#[tokio::test]
async fn one_create_order_is_one_trace_in_jaeger_counted_exactly_and_found_from_its_log_line() {
    let dir = temp_dir("observability");
    let jaeger = Jaeger::start(&dir).await;
    let mut users_env = users_env(&dir.join("users.db"));
    users_env.push(("USERS_TELEMETRY__OTLP_ENDPOINT", jaeger.otlp.clone()));
    let mut users = Service::start("users", "users", &users_env, &dir).await.expect("users starts");
    let mut orders_env = orders_env(&dir.join("orders.db"), &[&users]);
    orders_env.push(("ORDERS_TELEMETRY__OTLP_ENDPOINT", jaeger.otlp.clone()));
    let mut orders = Service::start("orders", "orders", &orders_env, &dir).await.expect("orders starts");

    let mut users_client = UserServiceClient::connect(users.address.clone()).await.expect("connect to users");
    let customer = CreateUserRequest { email: "trace@example.com".into(), name: "Trace".into() };
    users_client.create_user(customer).await.expect("a customer");

    let users_before = scrape(&users).await.expect("users /metrics");
    let orders_before = scrape(&orders).await.expect("orders /metrics");

    let (trace_id, traceparent) = new_traceparent();
    let caller_span = traceparent.split('-').nth(2).expect("a span id").to_owned();
    let mut orders_client = OrderServiceClient::connect(orders.address.clone()).await.expect("connect to orders");
    let request = CreateOrderRequest {
        customer_email: "trace@example.com".into(),
        total_cents: 4200,
        currency: "EUR".into(),
        idempotency_key: String::new(),
    };
    orders_client.create_order(traced_request(request, &traceparent).expect("a request")).await.expect("created");
    let invalid = CreateOrderRequest { currency: "ZZZ".into(), ..CreateOrderRequest::default() };
    let status = orders_client.create_order(invalid).await.expect_err("an unknown currency");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let users_after = scrape(&users).await.expect("users /metrics");
    let orders_after = scrape(&orders).await.expect("orders /metrics");
    for (name, body) in [("users", &users_after), ("orders", &orders_after)] {
        promtool_accepts(name, body).await;
    }
    let moved = |before: &str, after: &str, metric: &str, labels: &[(&str, &str)]| {
        sample(after, metric, labels) - sample(before, metric, labels)
    };
    let create = [("grpc_service", "orders.v1.OrderService"), ("grpc_method", "CreateOrder"), ("grpc_type", "unary")];
    let by_email =
        [("grpc_service", "users.v1.UserService"), ("grpc_method", "GetUserByEmail"), ("grpc_type", "unary")];
    let with = |labels: &[(&'static str, &'static str)], code: &'static str| {
        let mut labels = labels.to_vec();
        labels.push(("grpc_code", code));
        labels
    };
    assert_eq!(moved(&orders_before, &orders_after, "grpc_server_started_total", &create), 2.0);
    assert_eq!(moved(&orders_before, &orders_after, "grpc_server_handled_total", &with(&create, "OK")), 1.0);
    assert_eq!(
        moved(&orders_before, &orders_after, "grpc_server_handled_total", &with(&create, "InvalidArgument")),
        1.0
    );
    assert_eq!(moved(&orders_before, &orders_after, "grpc_server_handled_total", &create), 2.0, "no other codes");
    assert_eq!(moved(&orders_before, &orders_after, "grpc_server_handling_seconds_count", &create), 2.0);
    // The invalid request is refused before orders asks users anything.
    assert_eq!(moved(&orders_before, &orders_after, "grpc_client_handled_total", &with(&by_email, "OK")), 1.0);
    assert_eq!(moved(&users_before, &users_after, "grpc_server_handled_total", &with(&by_email, "OK")), 1.0);
    assert_eq!(moved(&users_before, &users_after, "grpc_server_handled_total", &by_email), 1.0, "no other codes");
    // One query on each side, each on one connection taken from the pool.
    let users_pool = [("pool_name", "users")];
    let orders_pool = [("pool_name", "orders")];
    let waits = "db_client_connections_wait_time_seconds_count";
    assert_eq!(moved(&users_before, &users_after, waits, &users_pool), 1.0, "users waited once for a connection");
    assert_eq!(moved(&orders_before, &orders_after, waits, &orders_pool), 1.0, "orders waited once for a connection");
    let open = sample(&users_after, "db_client_connections_usage", &users_pool);
    assert!(open >= 1.0, "the pool holds the connection it used: {open}");
    assert!(sample(&users_after, "db_client_connections_max", &users_pool) >= open);
    // Each app exports the log writer's dropped lines (README, `log.buffered_lines`); none here.
    for (name, body) in [("users", &users_after), ("orders", &orders_after)] {
        assert!(body.lines().any(|line| line == "log_lines_dropped_total 0"), "{name} /metrics:\n{body}");
    }

    // Stopping flushes the spans still queued in the batch exporters.
    assert_eq!(orders.stop().await.expect("orders stops"), 0);
    assert_eq!(users.stop().await.expect("users stops"), 0);

    let trace = jaeger.trace(&trace_id, 5).await;
    let orders_server = span(&trace, "orders", "orders.v1.OrderService/CreateOrder");
    let client = span(&trace, "orders", "users.v1.UserService/GetUserByEmail");
    let users_server = span(&trace, "users", "users.v1.UserService/GetUserByEmail");
    let users_query = span(&trace, "users", "SELECT users");
    let orders_insert = span(&trace, "orders", "INSERT orders");
    assert_eq!(parent(orders_server), Some(caller_span.as_str()), "orders continues the caller's traceparent");
    assert_eq!(parent(client), orders_server["spanID"].as_str());
    assert_eq!(parent(users_server), client["spanID"].as_str(), "users continues orders' traceparent");
    assert_eq!(parent(users_query), users_server["spanID"].as_str());
    assert_eq!(parent(orders_insert), orders_server["spanID"].as_str());
    assert_eq!(tag(orders_server, "span.kind").and_then(Value::as_str), Some("server"));
    assert_eq!(tag(client, "span.kind").and_then(Value::as_str), Some("client"));
    assert_eq!(tag(orders_server, "rpc.system").and_then(Value::as_str), Some("grpc"));
    assert_eq!(tag(orders_server, "rpc.method").and_then(Value::as_str), Some("CreateOrder"));
    assert_eq!(tag(users_server, "rpc.grpc.status_code").and_then(Value::as_i64), Some(0));
    assert_eq!(tag(client, "server.address").and_then(Value::as_str), Some("users"));
    assert_eq!(tag(users_query, "db.system").and_then(Value::as_str), Some("sqlite"));
    assert_eq!(tag(users_query, "db.operation").and_then(Value::as_str), Some("SELECT"));
    for span in trace["spans"].as_array().expect("spans") {
        let values = span["tags"].to_string();
        assert!(!values.contains("trace@example.com"), "no span holds a parameter value: {span:#}");
    }

    // The log line of that call carries the trace id Jaeger shows.
    let finished = orders
        .log_lines()
        .expect("orders log")
        .into_iter()
        .find(|line| {
            line["message"] == "rpc finished" && line["rpc.method"] == "CreateOrder" && line["grpc.code"] == "OK"
        })
        .expect("a log line for the CreateOrder");
    assert_eq!(finished["trace_id"].as_str(), trace["traceID"].as_str());
    assert_eq!(finished["span_id"].as_str(), orders_server["spanID"].as_str());
}
