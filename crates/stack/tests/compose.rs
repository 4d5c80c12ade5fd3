//! The compose stack as shipped (`docker-compose.yml`, `deploy/Dockerfile`), on a real Docker
//! engine: `make compose-test` builds the images, then runs this test (ignored in a plain
//! `cargo test`, since it needs the engine and the images). Every request goes to the
//! ports the stack publishes on 127.0.0.1 (each moved to a free one by its `STACK_*_PORT`
//! variable) or to the containers this test starts; the compose project is this test's own
//! and is removed, volumes included, when it ends.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use api::{
    orders::v1::order_service_client::OrderServiceClient,
    users::v1::{CreateUserRequest, user_service_client::UserServiceClient},
};
use platform::client::{self, ClientConfig, ResilientChannel};
use serde_json::Value;
use stack::{
    free_port,
    load::{OrderLoad, orders_stored_at},
    traffic::{Caller, Recorder, drive},
};
use tokio::process::Command;
use tonic::transport::Channel;

/// Bound on anything that should happen within a compose health-check cycle or two (the
/// services check every 5 s, Prometheus scrapes every 5 s): a guard against a hung test.
const PATIENCE: Duration = Duration::from_secs(90);
/// How often a condition on the stack is looked at again while waiting for it.
const POLL: Duration = Duration::from_millis(250);
/// Clients of the steady CreateOrder load.
const LOAD_CLIENTS: usize = 4;
/// Calls the load must make between two steps, so each step happens under load.
const PROGRESS: usize = 20;
/// What the test leaves out of `docker compose up`, and why: said in its output.
const NOT_STARTED: [(&str, &str); 1] =
    [("grafana", "grafana/grafana has no offline build (its UI needs a network build); not run here")];
/// The replicas, in the order a rolling deploy replaces them.
const REPLICAS: [&str; 4] = ["users-1", "users-2", "orders-1", "orders-2"];
/// The published ports the test moves to free ones: variable, service, container port.
const PUBLISHED: [(&str, &str, u16); 8] = [
    ("STACK_USERS_1_PORT", "users-1", 50051),
    ("STACK_USERS_2_PORT", "users-2", 50051),
    ("STACK_ORDERS_1_PORT", "orders-1", 50052),
    ("STACK_ORDERS_2_PORT", "orders-2", 50052),
    ("STACK_CONSUL_PORT", "consul", 8500),
    ("STACK_JAEGER_PORT", "jaeger", 16686),
    ("STACK_PROMETHEUS_PORT", "prometheus", 9090),
    ("STACK_GRAFANA_PORT", "grafana", 3000),
];

/// One compose project of the repository's `docker-compose.yml`, unmodified, with its host
/// ports moved to free loopback ports. Dropping it runs `docker compose down --volumes`.
struct Stack {
    project: String,
    root: PathBuf,
    ports: BTreeMap<&'static str, u16>,
    services: Vec<String>,
}

impl Stack {
    fn new() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root");
        let ports = PUBLISHED.iter().map(|(var, _, _)| (*var, free_port().expect("a free loopback port"))).collect();
        let project = format!("compose-test-{}", std::process::id());
        let mut stack = Self { project, root, ports, services: Vec::new() };
        let listed = stack.blocking(&["config", "--services"]);
        assert!(listed.status.success(), "docker compose config: {}", String::from_utf8_lossy(&listed.stderr));
        stack.services = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|service| !NOT_STARTED.iter().any(|(left, _)| left == service))
            .map(str::to_owned)
            .collect();
        stack
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new("docker");
        command.current_dir(&self.root).args(["compose", "--project-name", &self.project]).args(args);
        for (var, port) in &self.ports {
            command.env(var, port.to_string());
        }
        command
    }

    fn blocking(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("docker runs")
    }

    /// `docker compose ARGS`; its output.
    async fn run(&self, args: &[&str]) -> Output {
        Command::from(self.command(args)).output().await.expect("docker runs")
    }

    /// `docker compose ARGS`, which must succeed; its standard output.
    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "docker compose {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `docker compose up --detach --wait` of every service but [`NOT_STARTED`]; how long
    /// it took until every health check passed.
    async fn up(&self) -> Duration {
        let start = Instant::now();
        let mut args = vec!["up", "--detach", "--wait", "--wait-timeout", "300"];
        args.extend(self.services.iter().map(String::as_str));
        self.ok(&args).await;
        start.elapsed()
    }

    /// `http://127.0.0.1:PORT` of a published port, by its variable.
    fn url(&self, var: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[var])
    }

    /// The id of `service`'s running container.
    async fn container(&self, service: &str) -> String {
        let id = self.ok(&["ps", "--quiet", service]).await.trim().to_owned();
        assert!(!id.is_empty(), "{service} has a container");
        id
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.blocking(&["down", "--volumes", "--remove-orphans", "--timeout", "20"]);
    }
}

/// `docker ARGS`, which must succeed; its standard output, trimmed.
async fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().await.expect("docker runs");
    assert!(output.status.success(), "docker {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// GET `url` with curl: the JSON body, if it answered 200 with one.
async fn get_json(url: &str) -> Option<Value> {
    let output = Command::new("curl").args(["--silent", "--fail", url]).output().await.ok()?;
    output.status.success().then(|| serde_json::from_slice(&output.stdout).ok()).flatten()
}

/// Looks at `check` every [`POLL`] until it gives a value; panics naming `what` after
/// [`PATIENCE`].
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + PATIENCE;
    let mut ticks = tokio::time::interval(POLL);
    loop {
        ticks.tick().await;
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
    }
}

/// One Prometheus instant query's vector: `(labels, value)` per series.
async fn prometheus_query(stack: &Stack, query: &str) -> Option<Vec<(Value, f64)>> {
    let encoded: String = query.bytes().map(|b| format!("%{b:02X}")).collect();
    let body = get_json(&format!("{}/api/v1/query?query={encoded}", stack.url("STACK_PROMETHEUS_PORT"))).await?;
    let series = body["data"]["result"].as_array()?;
    Some(
        series
            .iter()
            .filter_map(|s| Some((s["metric"].clone(), s["value"][1].as_str()?.parse::<f64>().ok()?)))
            .collect(),
    )
}

/// A client channel to both orders replicas as a caller of a replicated service has one:
/// round-robin over the published ports, retries of UNAVAILABLE for calls carrying an
/// idempotency key, ejection of a failing replica.
fn orders_channel(stack: &Stack) -> client::ResilientChannel {
    let endpoints = ["STACK_ORDERS_1_PORT", "STACK_ORDERS_2_PORT"]
        .iter()
        .map(|var| stack.url(var).parse().expect("an endpoint URI"))
        .collect();
    let mut config = ClientConfig::for_upstream("orders", endpoints);
    config.timeout = Duration::from_secs(10);
    let resolver = client::resolver(&config.resolver, None).expect("a static resolver");
    ResilientChannel::new("orders", &config, resolver, api::FILE_DESCRIPTOR_SET).expect("the descriptor set decodes")
}

/// Steady CreateOrder load over [`orders_channel`] for a new customer.
async fn start_load(stack: &Stack, customer: &str) -> OrderLoad {
    let users = Channel::from_shared(stack.url("STACK_USERS_1_PORT")).expect("a URI").connect().await.expect("users");
    let request = CreateUserRequest { email: customer.to_owned(), name: "Load".to_owned() };
    UserServiceClient::new(users).create_user(request).await.expect("the load's customer is created");
    let channel = orders_channel(stack);
    let load = OrderLoad::with_clients(
        (0..LOAD_CLIENTS).map(|_| OrderServiceClient::new(channel.clone())).collect(),
        customer,
    );
    load.wait_for_more(PROGRESS, PATIENCE).await.expect("the load gets going");
    load
}

/// Stops the load; panics unless every call succeeded and each left exactly one order.
async fn no_call_failed_and_no_order_was_lost_or_duplicated(
    stack: &Stack,
    load: OrderLoad,
    customer: &str,
    step: &str,
) {
    let (succeeded, failures) = load.stop().await.expect("the load's tasks end");
    let stored = orders_stored_at(&stack.url("STACK_ORDERS_1_PORT"), customer).await.expect("ListOrders");
    println!("{step}: {succeeded} CreateOrder calls, {} failed, {stored} orders stored", failures.len());
    assert!(
        failures.is_empty(),
        "{step}: no call fails, got {} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(stored, succeeded, "{step}: one order per successful call, none lost, none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a Docker engine and the stack's images: run through `make compose-test`"]
async fn the_compose_stack_as_shipped_serves_the_demo_traffic_survives_replacements_and_outages_and_keeps_its_data() {
    let stack = Stack::new();
    for (service, why) in NOT_STARTED {
        println!("not started: {service}: {why}");
    }
    let took = stack.up().await;
    println!(
        "up: {} services healthy {:.1} s after `docker compose up --wait`",
        stack.services.len(),
        took.as_secs_f64()
    );

    let (trace_id, create_order_calls) = the_demo_traffic_passes_through_the_stack(&stack).await;
    one_create_order_is_one_trace_in_jaeger_with_spans_of_both_services(&stack, &trace_id).await;
    prometheus_scrapes_all_four_replicas_and_counts_every_call(&stack, create_order_calls).await;
    consul_lists_two_passing_instances_of_each_service(&stack).await;
    each_container_runs_as_its_pinned_uid_and_the_services_on_a_read_only_root_without_a_shell(&stack).await;
    a_rolling_replacement_of_every_replica_under_load_fails_no_call(&stack).await;
    killing_a_users_container_under_load_fails_no_call(&stack).await;
    a_database_restart_under_load_answers_unavailable_never_internal_and_loses_nothing(&stack).await;
    a_service_turns_unhealthy_while_its_database_is_stopped_and_healthy_again_after(&stack).await;
    down_then_up_keeps_every_order(&stack).await;
}

/// The demo's traffic against orders-1 and users-1, plus a Connect JSON CreateOrder by curl;
/// returns the traced CreateOrder's trace id and how many CreateOrder calls were made.
async fn the_demo_traffic_passes_through_the_stack(stack: &Stack) -> (String, usize) {
    let users = Channel::from_shared(stack.url("STACK_USERS_1_PORT")).expect("a URI").connect().await.expect("users");
    let mut recorder = Recorder::default();
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let traffic = drive(&mut recorder, Caller::Anonymous, users, &stack.url("STACK_ORDERS_1_PORT"), 12, &run)
        .await
        .expect("the demo's traffic passes");
    for line in &traffic.story {
        println!("traffic: {line}");
    }
    let unexpected: usize =
        recorder.errors_by_code().iter().filter(|(code, _)| *code != "InvalidArgument").map(|(_, n)| n).sum();
    assert_eq!(unexpected, 0, "only the invalid request fails: {:?}", recorder.errors_by_code());

    // curl speaks Connect: a JSON POST to the RPC path, on the same port as gRPC.
    let body = serde_json::json!({
        "customerEmail": traffic.customers[0],
        "totalCents": "4200",
        "currency": "EUR",
        "idempotencyKey": format!("{run}-curl"),
    });
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--fail-with-body", "--header", "Content-Type: application/json"])
        .args(["--data", &body.to_string()])
        .arg(format!("{}/orders.v1.OrderService/CreateOrder", stack.url("STACK_ORDERS_1_PORT")))
        .output()
        .await
        .expect("curl runs");
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    assert!(
        output.status.success(),
        "curl's Connect POST is answered 200: {answer} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(answer["order"]["totalCents"], "4200", "curl's CreateOrder returns the order: {answer}");
    println!("curl: Connect JSON CreateOrder -> order {}", answer["order"]["id"]);

    let create_order_calls = recorder.calls.iter().filter(|(method, _, _)| *method == "CreateOrder").count() + 1;
    (traffic.trace_id, create_order_calls)
}

async fn one_create_order_is_one_trace_in_jaeger_with_spans_of_both_services(stack: &Stack, trace_id: &str) {
    let url = format!("{}/api/traces/{trace_id}", stack.url("STACK_JAEGER_PORT"));
    let services = eventually("the traced CreateOrder has spans of orders and users in Jaeger", || async {
        let trace = get_json(&url).await?;
        let trace = trace["data"].get(0)?;
        let services: BTreeSet<String> = trace["spans"]
            .as_array()?
            .iter()
            .filter_map(|span| {
                trace["processes"][span["processID"].as_str()?]["serviceName"].as_str().map(str::to_owned)
            })
            .collect();
        (services.contains("orders") && services.contains("users")).then_some(services)
    })
    .await;
    println!("jaeger: trace {trace_id} has spans of {services:?}");
}

async fn prometheus_scrapes_all_four_replicas_and_counts_every_call(stack: &Stack, create_order_calls: usize) {
    let targets_url = format!("{}/api/v1/targets", stack.url("STACK_PROMETHEUS_PORT"));
    let up = eventually("Prometheus scrapes users-1, users-2, orders-1 and orders-2", || async {
        let body = get_json(&targets_url).await?;
        let up: BTreeSet<String> = body["data"]["activeTargets"]
            .as_array()?
            .iter()
            .filter(|target| target["health"] == "up")
            .filter_map(|target| target["labels"]["instance"].as_str().map(str::to_owned))
            .collect();
        (up.len() == REPLICAS.len()).then_some(up)
    })
    .await;
    println!("prometheus: targets up {up:?}");

    let counted = eventually("Prometheus counts every CreateOrder call the traffic made", || async {
        let series = prometheus_query(stack, r#"sum(grpc_server_handled_total{grpc_method="CreateOrder"})"#).await?;
        let counted = series.first()?.1 as usize;
        (counted >= create_order_calls).then_some(counted)
    })
    .await;
    assert_eq!(counted, create_order_calls, "grpc_server_handled_total counts each CreateOrder call once");
    // orders found both users replicas through Consul and spread its calls over them.
    let per_replica = prometheus_query(
        stack,
        r#"sum by (instance) (grpc_server_handled_total{job="users",grpc_method="GetUserByEmail"})"#,
    )
    .await
    .expect("a query result");
    println!("prometheus: CreateOrder {counted}; GetUserByEmail per users replica {per_replica:?}");
    assert_eq!(per_replica.len(), 2, "both users replicas served orders' calls: {per_replica:?}");
    assert!(per_replica.iter().all(|(_, n)| *n > 0.0), "both users replicas served orders' calls: {per_replica:?}");
}

async fn consul_lists_two_passing_instances_of_each_service(stack: &Stack) {
    for service in ["users", "orders"] {
        let url = format!("{}/v1/health/service/{service}?passing=true", stack.url("STACK_CONSUL_PORT"));
        let addresses = eventually(&format!("two passing {service} instances in Consul"), || async {
            let entries = get_json(&url).await?;
            let addresses: BTreeSet<String> = entries
                .as_array()?
                .iter()
                .filter_map(|entry| entry["Service"]["Address"].as_str().map(str::to_owned))
                .collect();
            (addresses.len() == 2).then_some(addresses)
        })
        .await;
        println!("consul: {service} passing at {addresses:?}");
    }
}

async fn each_container_runs_as_its_pinned_uid_and_the_services_on_a_read_only_root_without_a_shell(stack: &Stack) {
    for service in REPLICAS {
        let id = stack.container(service).await;
        let inspected = docker(&["inspect", "--format", "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}", &id]).await;
        assert_eq!(inspected, "true 65532:65532", "{service}: read-only root, image user 65532");
        let uids = process_uids(&id).await;
        assert!(uids.iter().all(|uid| uid == "65532"), "{service} runs as uid 65532: {uids:?}");
        let shell =
            Command::new("docker").args(["exec", &id, "/bin/sh", "-c", "true"]).output().await.expect("docker runs");
        assert!(!shell.status.success(), "{service}'s image has no shell");
    }
    println!("images: {REPLICAS:?} run as uid 65532, read-only root filesystem, no /bin/sh");

    // The third-party images run as the uids the Kubernetes manifests pin for them.
    for (service, manifest) in
        [("postgres", "deploy/k8s/overlays/dev/postgres.yaml"), ("consul", "deploy/k8s/components/consul/consul.yaml")]
    {
        let pinned = std::fs::read_to_string(stack.root.join(manifest)).expect("the manifest");
        let pinned = pinned.lines().find_map(|line| line.trim().strip_prefix("runAsUser:")).expect("a runAsUser");
        let uid = process_uids(&stack.container(service).await).await.remove(0);
        assert_eq!(uid, pinned.trim(), "{service} runs as the runAsUser {manifest} gives it");
        println!("images: {service} runs as uid {uid}, as {manifest} expects");
    }
}

/// The uids of a container's first process as the kernel reports them: real, effective,
/// saved and filesystem.
async fn process_uids(container: &str) -> Vec<String> {
    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", container]).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process's status");
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:")).expect("a Uid line");
    uids.split_whitespace().map(str::to_owned).collect()
}

async fn a_rolling_replacement_of_every_replica_under_load_fails_no_call(stack: &Stack) {
    let customer = format!("rolling-{}@example.com", std::process::id());
    let load = start_load(stack, &customer).await;
    for service in REPLICAS {
        let before = stack.container(service).await;
        let start = Instant::now();
        // As the README's rollout does it, one replica at a time; --force-recreate since
        // the image is the same one (a new image recreates the container by itself).
        stack.ok(&["up", "--detach", "--no-deps", "--force-recreate", "--wait", service]).await;
        let after = stack.container(service).await;
        assert_ne!(before, after, "{service} was replaced by a new container");
        println!("rolling: {service} replaced and healthy in {:.1} s", start.elapsed().as_secs_f64());
        load.wait_for_more(PROGRESS, PATIENCE).await.expect("the load goes on after the replacement");
    }
    no_call_failed_and_no_order_was_lost_or_duplicated(stack, load, &customer, "rolling replacement").await;
}

async fn killing_a_users_container_under_load_fails_no_call(stack: &Stack) {
    let customer = format!("kill-{}@example.com", std::process::id());
    let load = start_load(stack, &customer).await;
    stack.ok(&["kill", "users-2"]).await;
    load.wait_for_more(PROGRESS, PATIENCE).await.expect("the load goes on without users-2");
    stack.ok(&["up", "--detach", "--no-deps", "--wait", "users-2"]).await;
    load.wait_for_more(PROGRESS, PATIENCE).await.expect("the load goes on with users-2 back");
    no_call_failed_and_no_order_was_lost_or_duplicated(stack, load, &customer, "docker kill users-2").await;
}

async fn a_database_restart_under_load_answers_unavailable_never_internal_and_loses_nothing(stack: &Stack) {
    let customer = format!("restart-{}@example.com", std::process::id());
    let load = start_load(stack, &customer).await;
    let start = Instant::now();
    stack.ok(&["restart", "postgres"]).await;
    println!("database: `docker compose restart postgres` took {:.1} s", start.elapsed().as_secs_f64());
    load.wait_for_more(PROGRESS, PATIENCE).await.expect("the load recovers after the restart");
    let (succeeded, failures) = load.stop().await.expect("the load's tasks end");
    let stored = orders_stored_at(&stack.url("STACK_ORDERS_1_PORT"), &customer).await.expect("ListOrders");
    let mut by_code: BTreeMap<&str, usize> = BTreeMap::new();
    for failure in &failures {
        *by_code.entry(failure.split(':').next().unwrap_or_default()).or_default() += 1;
    }
    println!("database restart: {succeeded} calls succeeded, failures by code {by_code:?}, {stored} orders stored");
    assert!(
        by_code.keys().all(|code| *code == "Unavailable"),
        "a failed call is UNAVAILABLE, never another code: {failures:?}"
    );
    assert!(stored >= succeeded, "no order of a successful call is lost: {stored} stored, {succeeded} succeeded");
    // A call that failed may have committed before its answer was lost; none committed twice.
    assert!(
        stored <= succeeded + failures.len(),
        "no order is stored twice: {stored} stored for {} calls",
        succeeded + failures.len()
    );
}

async fn a_service_turns_unhealthy_while_its_database_is_stopped_and_healthy_again_after(stack: &Stack) {
    let mut checked = Vec::new();
    for service in ["users-1", "orders-1"] {
        checked.push((service, stack.container(service).await));
    }
    stack.ok(&["stop", "postgres"]).await;
    each_health_becomes(&checked, "unhealthy", "PostgreSQL stopped").await;
    // `start`, not `up --wait`: compose refuses to wait on a dependency that is unhealthy
    // when it looks, which these are until their next check finds the database back.
    stack.ok(&["start", "postgres"]).await;
    each_health_becomes(&checked, "healthy", "PostgreSQL started again").await;
}

/// Waits until the `HEALTHCHECK` of each `(service, container)` reports `status`, saying how
/// long after `cause` (just done) each did.
async fn each_health_becomes(containers: &[(&str, String)], status: &str, cause: &str) {
    let start = Instant::now();
    for (service, id) in containers {
        eventually(&format!("{service}'s HEALTHCHECK reports {status} after {cause}"), || async {
            (docker(&["inspect", "--format", "{{.State.Health.Status}}", id]).await == status).then_some(())
        })
        .await;
        println!("healthcheck: {service} {status} {:.1} s after {cause}", start.elapsed().as_secs_f64());
    }
}

async fn down_then_up_keeps_every_order(stack: &Stack) {
    let orders = stack.url("STACK_ORDERS_1_PORT");
    let before = orders_stored_at(&orders, "").await.expect("ListOrders");
    stack.ok(&["down", "--timeout", "20"]).await;
    let took = stack.up().await;
    let after = orders_stored_at(&orders, "").await.expect("ListOrders");
    println!("down/up: {before} orders before, {after} after (healthy again in {:.1} s)", took.as_secs_f64());
    assert_eq!(after, before, "the named volumes keep every order across down and up");
}
