//! System tests: the release binaries started as processes, called with grpcurl
//! through server reflection and with typed clients; logs read as an operator would.

use std::{path::PathBuf, process::Command};

use api::orders::v1::{CreateOrderRequest, order_service_client::OrderServiceClient};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use stack::{Service, auth::DevAuth, orders_env, temp_dir, tls::DevTls, users_env};
use tonic::{Code, transport::Channel};

/// grpcurl: `$GRPCURL`, else the one `make tools` builds, else `grpcurl` on PATH.
fn grpcurl() -> PathBuf {
    if let Some(path) = std::env::var_os("GRPCURL") {
        return PathBuf::from(path);
    }
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/grpcurl");
    if built.is_file() { built } else { PathBuf::from("grpcurl") }
}

/// Runs grpcurl against `service` (plaintext) and returns its stdout, or panics with its stderr.
fn call(service: &Service, args: &[&str]) -> String {
    call_over(service, &["-plaintext"], args)
}

/// grpcurl's flags for mTLS with the run's CA and `client` certificate (`orders`), or none.
fn tls_flags(tls: &DevTls, client: Option<&str>) -> Vec<String> {
    let mut flags = vec!["-cacert".to_owned(), tls.path("ca.pem").display().to_string()];
    if let Some(client) = client {
        flags.extend(["-cert".to_owned(), tls.path(&format!("{client}.pem")).display().to_string()]);
        flags.extend(["-key".to_owned(), tls.path(&format!("{client}-key.pem")).display().to_string()]);
    }
    flags
}

/// Runs grpcurl with `flags` (e.g. `-plaintext`, or TLS files) before `args`.
fn grpcurl_output(service: &Service, flags: &[&str], args: &[&str]) -> std::process::Output {
    let authority = service.address.trim_start_matches("http://");
    Command::new(grpcurl())
        .args(flags)
        .args(args.iter().take(args.len().saturating_sub(1)))
        .arg(authority)
        .args(args.last())
        .output()
        .expect("grpcurl runs (make tools builds it)")
}

/// As [`call`], with `flags` instead of `-plaintext`.
fn call_over(service: &Service, flags: &[&str], args: &[&str]) -> String {
    let output = grpcurl_output(service, flags, args);
    assert!(output.status.success(), "grpcurl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8")
}

fn call_json(service: &Service, data: Value, method: &str) -> Value {
    let out = call(service, &["-d", &data.to_string(), method]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("grpcurl printed JSON for {method}: {e}: {out}"))
}

#[tokio::test]
async fn grpcurl_lists_and_calls_both_services_through_reflection() {
    let dir = temp_dir("grpcurl");
    let mut users = Service::start("users", "users", &users_env(&dir.join("users.db")), &dir).await.expect("users");
    let mut orders =
        Service::start("orders", "orders", &orders_env(&dir.join("orders.db"), &[&users]), &dir).await.expect("orders");

    let listed = call(&users, &["list"]);
    for service in ["users.v1.UserService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
        assert!(listed.lines().any(|l| l == service), "users lists {service}: {listed}");
    }
    assert!(call(&orders, &["list"]).lines().any(|l| l == "orders.v1.OrderService"));

    let user = call_json(&users, json!({"email": "ada@example.com", "name": "Ada"}), "users.v1.UserService/CreateUser");
    assert_eq!(user["user"]["email"], "ada@example.com");

    let order = call_json(
        &orders,
        json!({"customer_email": "ada@example.com", "total_cents": 1250, "currency": "EUR"}),
        "orders.v1.OrderService/CreateOrder",
    );
    assert_eq!(order["order"]["status"], "ORDER_STATUS_CREATED");
    assert_eq!(order["order"]["totalCents"], "1250");

    for service in [&users, &orders] {
        let health = call_json(service, json!({}), "grpc.health.v1.Health/Check");
        assert_eq!(health["status"], "SERVING");
    }

    assert_eq!(orders.stop().await.expect("orders stops"), 0);
    assert_eq!(users.stop().await.expect("users stops"), 0);
}

#[tokio::test]
async fn create_order_calls_reach_both_users_replicas_in_turn_over_mtls_with_auth_on_and_orders_named_as_the_caller() {
    let dir = temp_dir("round-robin");
    let users_db = dir.join("users.db");
    let auth = DevAuth::new(&dir).expect("a throwaway key");
    let tls = DevTls::new(&dir).expect("a throwaway CA");
    let users_env = [users_env(&users_db), auth.users_env(), tls.users_env()].concat();
    let mut users_a = Service::start("users", "users-a", &users_env, &dir).await.expect("users-a");
    let mut users_b = Service::start("users", "users-b", &users_env, &dir).await.expect("users-b");
    let users = [&users_a, &users_b];
    let orders_env = [orders_env(&dir.join("orders.db"), &users), auth.orders_env(), tls.orders_env(&users)].concat();
    let mut orders = Service::start("orders", "orders", &orders_env, &dir).await.expect("orders");
    let token = auth.token("system-test", "users", &[]);
    let bearer = format!("authorization: Bearer {}", token.expose_secret());
    let create = json!({"email": "rr@example.com", "name": "RR"}).to_string();
    let with_cert = tls_flags(&tls, Some("orders"));
    let with_cert: Vec<&str> = with_cert.iter().map(String::as_str).collect();
    call_over(&users_a, &with_cert, &["-H", &bearer, "-d", &create, "users.v1.UserService/CreateUser"]);
    // Users speaks only TLS, and only to clients with a certificate from the CA.
    for flags in [vec!["-plaintext".to_owned()], tls_flags(&tls, None)] {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let refused = grpcurl_output(&users_a, &flags, &["list"]);
        assert!(!refused.status.success(), "users answered grpcurl {flags:?}");
    }

    let channel = Channel::from_shared(orders.address.clone()).expect("an address").connect().await.expect("connect");
    let refused = OrderServiceClient::new(channel.clone())
        .create_order(CreateOrderRequest { customer_email: "rr@example.com".into(), ..Default::default() })
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let mut client = OrderServiceClient::with_interceptor(channel, auth.bearer("system-test", "orders", &[]));
    let calls = 10;
    for i in 0..calls {
        let request = CreateOrderRequest {
            customer_email: "rr@example.com".into(),
            total_cents: 100 + i,
            currency: "USD".into(),
            idempotency_key: String::new(),
        };
        client.create_order(request).await.expect("created");
    }
    // Stopping first puts every log line in the files.
    for service in [&mut orders, &mut users_a, &mut users_b] {
        assert_eq!(service.stop().await.expect("stops"), 0, "{} exits 0 on SIGTERM", service.name);
    }
    // Each CreateOrder makes one GetUserByEmail; round-robin alternates the replicas.
    let a = users_a.rpcs_finished("GetUserByEmail").expect("users-a log");
    let b = users_b.rpcs_finished("GetUserByEmail").expect("users-b log");
    assert_eq!(a + b, calls as usize);
    assert!(a.abs_diff(b) <= 1, "round-robin spreads evenly: users-a {a}, users-b {b}");
    // Users names the caller (orders' own token, not the client's) and never the token.
    for users in [&users_a, &users_b] {
        let lines = users.log_lines().expect("users log");
        let lookups: Vec<String> = lines
            .iter()
            .filter(|line| line["message"] == "rpc finished" && line["rpc.method"] == "GetUserByEmail")
            .map(Value::to_string)
            .collect();
        assert!(lookups.iter().all(|line| line.contains(r#""enduser.id":"orders""#)), "{lookups:?}");
        let text = std::fs::read_to_string(&users.log_path).expect("users log");
        assert!(!text.contains(token.expose_secret()), "no token in {}", users.log_path.display());
    }
}

#[test]
fn a_bad_config_value_exits_78_with_one_line_naming_the_key_and_the_variable() {
    let output = Command::new(stack::bin_dir().join("orders"))
        .env("ORDERS_USERS__TIMEOUT", "soon")
        .output()
        .expect("the orders binary runs (build the release binaries first)");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("users.timeout") && stderr.contains("ORDERS_USERS__TIMEOUT"), "{stderr}");
}

#[tokio::test]
async fn grpc_web_over_http1_is_served_on_the_same_port() {
    let dir = temp_dir("grpc-web");
    let mut users = Service::start("users", "users", &users_env(&dir.join("users.db")), &dir).await.expect("users");
    // An empty grpc.health.v1.HealthCheckRequest in one gRPC-Web frame: flag 0, length 0.
    let frame = dir.join("request.bin");
    std::fs::write(&frame, [0u8, 0, 0, 0, 0]).expect("write the frame");
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--http1.1", "--include", "-X", "POST"])
        .args(["-H", "content-type: application/grpc-web+proto", "-H", "x-grpc-web: 1"])
        .arg("--data-binary")
        .arg(format!("@{}", frame.display()))
        .arg(format!("{}/grpc.health.v1.Health/Check", users.address))
        .output()
        .expect("curl runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let response = String::from_utf8_lossy(&output.stdout);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.to_ascii_lowercase().contains("content-type: application/grpc-web+proto"), "{response}");
    // The trailers travel in the body as a frame flagged 0x80.
    assert!(response.contains("grpc-status:0"), "{response}");
    assert_eq!(users.stop().await.expect("stops"), 0);
}
