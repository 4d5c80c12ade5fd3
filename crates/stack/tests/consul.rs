//! Discovery and resilience against a real Consul agent: the release binaries register
//! themselves, orders follows users' passing instances, and steady CreateOrder load
//! from a gRPC client rides through kills, rolling restarts and a Consul outage.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use api::users::v1::{CreateUserRequest, user_service_client::UserServiceClient};
use serde_json::Value;
use stack::{
    Service,
    consul::{ConsulAgent, Exited},
    free_port,
    load::{OrderLoad, orders_stored},
    temp_dir, users_env,
};

/// Bound on any awaited state change: a guard against a hung test, not a wait.
const PATIENCE: Duration = Duration::from_secs(60);

const CUSTOMER: &str = "load@example.com";

/// Env vars that make a service register in `consul` and check fast.
fn registration_env(prefix: &str, consul: &ConsulAgent) -> Vec<(String, String)> {
    [
        ("CONSUL__ADDRESS", consul.address.clone()),
        ("REGISTRATION__ENABLED", "true".to_owned()),
        ("REGISTRATION__CHECK_INTERVAL", "1s".to_owned()),
        ("REGISTRATION__CHECK_TIMEOUT", "1s".to_owned()),
        ("REGISTRATION__REFRESH_INTERVAL", "1s".to_owned()),
        ("SERVER__DRAIN_PERIOD", "1s".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (format!("{prefix}{key}"), value))
    .collect()
}

async fn start_users(name: &str, dir: &Path, consul: &ConsulAgent) -> Service {
    start_users_with(name, dir, consul, &[]).await
}

/// A registered users replica with `overrides` applied over the usual env vars.
async fn start_users_with(name: &str, dir: &Path, consul: &ConsulAgent, overrides: &[(String, String)]) -> Service {
    let mut env: Vec<(String, String)> =
        users_env(&dir.join("users.db")).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    env.extend(registration_env("USERS_", consul));
    env.retain(|(key, _)| overrides.iter().all(|(other, _)| other != key));
    env.extend(overrides.iter().cloned());
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    Service::start("users", name, &env, dir).await.expect("users starts")
}

async fn start_orders(dir: &Path, consul: &ConsulAgent, extra: &[(&str, &str)]) -> Service {
    let mut env = vec![
        ("ORDERS_SERVER__PORT".to_owned(), "0".to_owned()),
        ("ORDERS_ADMIN__PORT".to_owned(), "0".to_owned()),
        ("ORDERS_DATABASE__URL".to_owned(), format!("sqlite://{}?mode=rwc", dir.join("orders.db").display())),
        ("ORDERS_USERS__RESOLVER".to_owned(), "consul".to_owned()),
        ("ORDERS_USERS__CONSUL_WAIT".to_owned(), "10s".to_owned()),
        // These tests are about discovery and resilience: serve open, explicitly.
        ("ORDERS_AUTH__MODE".to_owned(), "none".to_owned()),
    ];
    env.extend(registration_env("ORDERS_", consul));
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    Service::start("orders", "orders", &env, dir).await.expect("orders starts")
}

/// Consul, two registered users replicas over one SQLite file, orders following them,
/// and the load's customer.
struct Stack {
    dir: PathBuf,
    consul: ConsulAgent,
    users: Vec<Service>,
    orders: Service,
}

impl Stack {
    async fn start(name: &str) -> Self {
        Self::start_with(name, &[]).await
    }

    /// [`Stack::start`], with `orders_env` added to orders' environment.
    async fn start_with(name: &str, orders_env: &[(&str, &str)]) -> Self {
        let dir = temp_dir(name);
        let consul = ConsulAgent::start(&dir).await.expect("consul starts");
        let users = vec![start_users("users-a", &dir, &consul).await, start_users("users-b", &dir, &consul).await];
        consul.wait_for("users", PATIENCE, |passing| passing.len() == 2).await.expect("both users replicas pass");
        let orders = start_orders(&dir, &consul, orders_env).await;
        let mut client = UserServiceClient::connect(users[0].address.clone()).await.expect("connect to users");
        let request = CreateUserRequest { email: CUSTOMER.to_owned(), name: "Load".to_owned() };
        client.create_user(request).await.expect("the customer is created");
        Self { dir, consul, users, orders }
    }
}

/// `GET path` on the agent's HTTP API, as JSON (curl, as an operator would).
fn consul_get(consul: &ConsulAgent, path: &str) -> Value {
    let output = Command::new("curl").args(["-sf", &format!("{}{path}", consul.address)]).output().expect("curl runs");
    assert!(output.status.success(), "GET {path}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("consul answers JSON")
}

#[tokio::test]
async fn an_instance_registers_with_a_passing_grpc_check_and_leaves_consul_on_sigterm() {
    let dir = temp_dir("register");
    let consul = ConsulAgent::start(&dir).await.expect("consul starts");
    let mut users = start_users("users", &dir, &consul).await;
    let port = users.port();
    consul.wait_for("users", PATIENCE, |passing| passing.iter().any(|i| i.port == port)).await.expect("passing");

    let checks = consul_get(&consul, "/v1/health/checks/users");
    let check = &checks.as_array().expect("a list of checks")[0];
    assert_eq!(check["Type"], "grpc", "{check}");
    assert_eq!(check["Status"], "passing", "{check}");
    let services = consul_get(&consul, "/v1/agent/services");
    let registered = services.as_object().expect("services by id").values().find(|s| s["Service"] == "users");
    let registered = registered.expect("users is in the agent's services");
    assert_eq!(registered["Port"], port);
    assert_eq!(registered["Meta"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(registered["Tags"].as_array().expect("tags").iter().any(|tag| tag == "grpc"), "{registered}");

    assert_eq!(users.stop().await.expect("users stops"), 0, "exit code after SIGTERM");
    let services = consul_get(&consul, "/v1/agent/services");
    assert!(services.as_object().expect("services by id").values().all(|s| s["Service"] != "users"), "{services}");
}

#[tokio::test]
async fn an_instance_killed_and_restarted_on_its_address_leaves_one_consul_entry() {
    let dir = temp_dir("restart-same-port");
    let consul = ConsulAgent::start(&dir).await.expect("consul starts");
    let port = stack::free_port().expect("a free port");
    let env = [("USERS_SERVER__PORT".to_owned(), port.to_string())];
    let mut first = start_users_with("users-1", &dir, &consul, &env).await;
    first.wait_for_log("registered in consul", PATIENCE).await.expect("the first run registers");
    first.kill().await.expect("kill -9");

    let second = start_users_with("users-2", &dir, &consul, &env).await;
    second.wait_for_log("registered in consul", PATIENCE).await.expect("the restart registers");
    let entries = consul_get(&consul, "/v1/agent/services");
    let on_port: Vec<&Value> = entries
        .as_object()
        .expect("services by id")
        .values()
        .filter(|s| s["Service"] == "users" && s["Port"] == port)
        .collect();
    assert_eq!(on_port.len(), 1, "the restart replaced the dead run's entry: {entries}");
    let passing = consul.wait_for("users", PATIENCE, |p| p.iter().all(|i| i.port == port) && p.len() == 1).await;
    passing.expect("one passing entry, the new process's");
}

/// A free port another process takes before the agent binds it makes the agent exit:
/// `start` must see the exit (and try other ports), not wait a minute for a leader.
#[tokio::test]
async fn an_agent_whose_port_is_taken_is_reported_exited_not_leaderless() {
    let dir = temp_dir("port-taken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let serf_lan = taken.local_addr().expect("an address").port();
    let ports = [free_port().expect("a port"), serf_lan, free_port().expect("a port")];
    let error = ConsulAgent::start_on(&dir, ports).await.err().expect("consul cannot bind its Serf LAN port");
    assert!(error.is::<Exited>(), "{error:#}");
}

#[tokio::test]
async fn a_new_instance_is_passing_as_soon_as_it_has_registered() {
    let dir = temp_dir("initially-passing");
    let consul = ConsulAgent::start(&dir).await.expect("consul starts");
    // Consul's first run of a check comes at a random point of its interval: with 60 s,
    // an instance registered critical stays out of `?passing` answers for a long while.
    let env = [("USERS_REGISTRATION__CHECK_INTERVAL".to_owned(), "60s".to_owned())];
    let users = start_users_with("users", &dir, &consul, &env).await;
    users.wait_for_log("registered in consul", PATIENCE).await.expect("registers");
    let passing = consul.passing("users").await.expect("consul answers");
    assert!(passing.iter().any(|i| i.port == users.port()), "not yet passing after registering: {passing:?}");
}

#[tokio::test]
async fn steady_load_spreads_within_ten_percent_over_two_users_replicas() {
    let mut stack = Stack::start("spread").await;
    let load = OrderLoad::start(&stack.orders, CUSTOMER, 4).await.expect("connect to orders");
    load.wait_for_more(300, PATIENCE).await.expect("the load makes progress");
    let (succeeded, failures) = load.stop().await.expect("the load stops");
    assert!(failures.is_empty(), "{failures:?}");

    // Every CreateOrder made one GetUserByEmail. Stopping a replica waits for its last
    // log line to reach the file, so the counts are complete.
    let mut counts = Vec::new();
    for users in &mut stack.users {
        assert_eq!(users.stop().await.expect("users stops"), 0);
        counts.push(users.rpcs_finished("GetUserByEmail").expect("log readable"));
    }
    assert_eq!(counts.iter().sum::<usize>(), succeeded, "one GetUserByEmail per CreateOrder: {counts:?}");
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    for count in &counts {
        assert!((*count as f64 - mean).abs() <= 0.1 * mean, "replica counts {counts:?} (mean {mean})");
    }
}

#[tokio::test]
async fn killing_a_users_replica_under_load_fails_no_call() {
    let mut stack = Stack::start("kill").await;
    let load = OrderLoad::start(&stack.orders, CUSTOMER, 4).await.expect("connect to orders");
    load.wait_for_more(50, PATIENCE).await.expect("the load makes progress");
    stack.users[1].kill().await.expect("kill -9");
    load.wait_for_more(200, PATIENCE).await.expect("the load makes progress");
    let (succeeded, failures) = load.stop().await.expect("the load stops");
    assert!(failures.is_empty(), "{} of {} calls failed: {failures:?}", failures.len(), succeeded + failures.len());
    assert_eq!(orders_stored(&stack.orders, CUSTOMER).await.expect("ListOrders"), succeeded);
}

/// As an orchestrator rolls a Deployment: start the replacement, stop the old replica
/// as soon as the replacement answers SERVING (not waiting for Consul), next step.
/// What makes this safe is `server.drain_period` (1 s here) outlasting the time a
/// replacement needs to become visible to orders.
#[tokio::test]
async fn a_rolling_restart_of_users_fails_no_call_and_duplicates_no_order() {
    let mut stack = Stack::start("rolling").await;
    let load = OrderLoad::start(&stack.orders, CUSTOMER, 4).await.expect("connect to orders");
    load.wait_for_more(50, PATIENCE).await.expect("the load makes progress");
    for (old, replacement) in [(0, "users-c"), (1, "users-d")] {
        let new = start_users(replacement, &stack.dir, &stack.consul).await;
        new.wait_serving(PATIENCE).await.expect("the replacement is ready");
        assert_eq!(stack.users[old].stop().await.expect("SIGTERM"), 0, "a drained replica exits 0");
        stack.users.push(new);
        load.wait_for_more(30, PATIENCE).await.expect("the load makes progress");
    }
    let (succeeded, failures) = load.stop().await.expect("the load stops");
    assert!(failures.is_empty(), "{} of {} calls failed: {failures:?}", failures.len(), succeeded + failures.len());
    assert_eq!(
        orders_stored(&stack.orders, CUSTOMER).await.expect("ListOrders"),
        succeeded,
        "one order per successful call, no duplicates"
    );
}

/// The replacement of a killed replica, on its address, is an endpoint orders already
/// knows and may have ejected (1 s for three failures in a row): from 1 s after it takes
/// its first call it takes its half of the calls.
#[tokio::test]
async fn one_second_after_a_replacement_of_a_killed_replica_takes_a_call_calls_are_even_again() {
    // An ejection doubles each time the dead replica fails again after one ends (gRFC
    // A50's multiplier, up to 30 s by default), and how many times that happens depends
    // on how long the replacement takes to start on a loaded machine: capped at the
    // base here, so the second measures the endpoint's return, not the machine's load.
    let cap = [("ORDERS_USERS__OUTLIER_DETECTION__MAX_EJECTION_TIME", "1s")];
    let mut stack = Stack::start_with("replace", &cap).await;
    let load = OrderLoad::start(&stack.orders, CUSTOMER, 4).await.expect("connect to orders");
    load.wait_for_more(50, PATIENCE).await.expect("the load makes progress");
    let port = stack.users[1].port();
    stack.users[1].kill().await.expect("kill -9");
    // Calls go on through the survivor meanwhile.
    load.wait_for_more(50, PATIENCE).await.expect("the load makes progress");

    let env = [("USERS_SERVER__PORT".to_owned(), port.to_string())];
    let mut replacement = start_users_with("users-b2", &stack.dir, &stack.consul, &env).await;
    // Back in rotation once Consul's check passed and orders saw it (a check interval,
    // which a loaded machine stretches): measured from its first call, not from SERVING.
    let first = replacement.wait_for_rpc("GetUserByEmail", PATIENCE).await.expect("the replacement takes calls");
    let first = first["timestamp"].as_str().and_then(|at| humantime::parse_rfc3339(at).ok());
    let even_from = first.expect("a log line has an RFC 3339 timestamp") + Duration::from_secs(1);
    // Keep the load on until a second of calls has passed after that point.
    while SystemTime::now() < even_from + Duration::from_secs(1) {
        load.wait_for_more(50, PATIENCE).await.expect("the load makes progress");
    }
    let (_, failures) = load.stop().await.expect("the load stops");
    assert!(failures.is_empty(), "{failures:?}");

    // Stopping a replica waits for its last log line, so the counts are complete.
    assert_eq!(replacement.stop().await.expect("users stops"), 0);
    assert_eq!(stack.users[0].stop().await.expect("users stops"), 0);
    let taken = replacement.rpcs_finished_since("GetUserByEmail", even_from).expect("log readable");
    let survivor = stack.users[0].rpcs_finished_since("GetUserByEmail", even_from).expect("log readable");
    let share = taken as f64 / (taken + survivor).max(1) as f64;
    assert!(share >= 0.4, "from 1 s after its first call the replacement took {taken} of {} calls", taken + survivor);
}

#[tokio::test]
async fn a_consul_outage_under_load_fails_no_call_and_everything_registers_again() {
    let mut stack = Stack::start("outage").await;
    let load = OrderLoad::start(&stack.orders, CUSTOMER, 2).await.expect("connect to orders");
    load.wait_for_more(50, PATIENCE).await.expect("the load makes progress");

    stack.consul.kill().await.expect("consul stops");
    // The outage lasts until every instance has met it (orders' resolver and each
    // registration refresh failed) and calls went on after that.
    let noticed = [
        (&stack.orders, "consul query failed; keeping the last endpoints"),
        (&stack.orders, "consul registration failed"),
        (&stack.users[0], "consul registration failed"),
        (&stack.users[1], "consul registration failed"),
    ];
    for (service, message) in noticed {
        service.wait_for_log(message, PATIENCE).await.expect("the outage is noticed");
    }
    load.wait_for_more(100, PATIENCE).await.expect("calls go on while Consul is down");
    stack.consul.restart().await.expect("consul starts again");

    stack.consul.wait_for("users", PATIENCE, |passing| passing.len() == 2).await.expect("users registered again");
    stack.consul.wait_for("orders", PATIENCE, |passing| passing.len() == 1).await.expect("orders registered again");
    load.wait_for_more(50, PATIENCE).await.expect("the load makes progress");
    let (succeeded, failures) = load.stop().await.expect("the load stops");
    assert!(failures.is_empty(), "{} of {} calls failed: {failures:?}", failures.len(), succeeded + failures.len());
}
