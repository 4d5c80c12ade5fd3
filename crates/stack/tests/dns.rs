//! The Kubernetes path of discovery: orders follows users through DNS (`users.resolver =
//! "dns"`, a headless Service) and steady CreateOrder load rides through a rolling deploy
//! of users done as Kubernetes does it, with the drain values of the manifests.
//!
//! A tiny authoritative DNS server in the test (hickory-server, on a free UDP port of
//! 127.0.0.1) plays the cluster DNS: it answers `users.test.` with the A records of the
//! ready users replicas, and the test changes that set as the endpoints controller would.
//! An A record carries no port, so every replica listens on the same port at its own
//! address, as pods do: 127.0.0.2, 127.0.0.3, … All of 127.0.0.0/8 is loopback on Linux,
//! so this keeps to the rule that services listen locally only (nothing leaves the
//! machine); 127.0.0.1 alone cannot hold several replicas on one port.

use std::{
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    time::Duration,
};

use api::users::v1::{CreateUserRequest, user_service_client::UserServiceClient};
use platform::client::ResolverConfig;
use stack::{
    Service,
    load::{OrderLoad, orders_stored},
    orders_env, temp_dir, users_env,
};
use testkit::DnsZone;

/// Bound on any awaited state change: a guard against a hung test, not a wait.
const PATIENCE: Duration = Duration::from_secs(60);

/// The test's DNS: records live 1 s, orders asks again every 200 ms, so a change reaches
/// orders within 1.2 s (`drain_period` must outlast that; the manifests' does by far).
const TEST_TTL: Duration = Duration::from_secs(1);
const TEST_REFRESH: &str = "200ms";

/// The TTL CoreDNS gives the records of a headless Service (its `kubernetes` plugin's
/// default `ttl 5`): what the manifests' drain period must cover beside `dns_refresh`.
const CLUSTER_DNS_TTL: Duration = Duration::from_secs(5);

const CUSTOMER: &str = "dns-load@example.com";

/// The workspace root: this crate lives in `crates/stack`.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What the Kubernetes manifests set for a rolling deploy of users: users' drain and
/// grace (deploy/k8s/base/config/users.toml) and orders' DNS refresh
/// (deploy/k8s/base/config/orders.toml), read with the services' own config loaders.
struct Manifests {
    drain_period: Duration,
    shutdown_grace: Duration,
    dns_refresh: Duration,
}

impl Manifests {
    fn read() -> Self {
        let users = users::Config::load(Some(&root().join("deploy/k8s/base/config/users.toml")))
            .expect("users.toml of the Kubernetes base loads");
        let orders = orders::Config::load(Some(&root().join("deploy/k8s/base/config/orders.toml")))
            .expect("orders.toml of the Kubernetes base loads");
        let ResolverConfig::Dns { refresh, .. } = orders.users.resolver else {
            panic!("the Kubernetes base has orders resolve users through DNS: {:?}", orders.users.resolver);
        };
        Self {
            drain_period: users.server.drain_period,
            shutdown_grace: users.server.shutdown_grace,
            dns_refresh: refresh,
        }
    }
}

/// A port that was free a moment ago on every one of `addresses`.
fn port_free_on_all(addresses: &[Ipv4Addr]) -> u16 {
    for _ in 0..20 {
        let first = TcpListener::bind((addresses[0], 0)).expect("bind a loopback address");
        let port = first.local_addr().expect("the bound address").port();
        let others: Result<Vec<TcpListener>, _> =
            addresses[1..].iter().map(|address| TcpListener::bind((*address, port))).collect();
        if others.is_ok() {
            return port;
        }
    }
    panic!("no port free on all of {addresses:?}");
}

/// A users replica listening on `address:port`, with the manifests' drain values.
async fn start_users(name: &str, address: Ipv4Addr, port: u16, dir: &Path, manifests: &Manifests) -> Service {
    let mut env = users_env(&dir.join("users.db"));
    env.retain(|(key, _)| *key != "USERS_SERVER__PORT");
    env.extend([
        ("USERS_SERVER__HOST", address.to_string()),
        ("USERS_SERVER__PORT", port.to_string()),
        ("USERS_SERVER__DRAIN_PERIOD", format!("{}ms", manifests.drain_period.as_millis())),
        ("USERS_SERVER__SHUTDOWN_GRACE", format!("{}ms", manifests.shutdown_grace.as_millis())),
    ]);
    Service::start("users", name, &env, dir).await.expect("users starts")
}

fn ip_of(service: &Service) -> Ipv4Addr {
    let host = service.address.trim_start_matches("http://").rsplit_once(':').expect("host:port").0;
    host.parse().expect("an IPv4 address")
}

#[test]
fn the_manifests_drain_outlasts_the_time_orders_takes_to_see_a_dns_change() {
    let manifests = Manifests::read();
    assert!(
        manifests.drain_period > manifests.dns_refresh + CLUSTER_DNS_TTL,
        "users' server.drain_period {:?} must exceed orders' users.dns_refresh {:?} + the cluster DNS TTL {:?}",
        manifests.drain_period,
        manifests.dns_refresh,
        CLUSTER_DNS_TTL
    );
    let test_refresh = Duration::from_millis(TEST_REFRESH.trim_end_matches("ms").parse().expect("milliseconds"));
    assert!(manifests.drain_period > test_refresh + TEST_TTL, "the test keeps the same rule");
}

#[tokio::test]
async fn a_rolling_deploy_of_users_behind_dns_fails_no_call_and_duplicates_no_order() {
    let manifests = Manifests::read();
    let dir = temp_dir("dns-rolling");
    let [old_a, old_b, new_a, new_b] = [2, 3, 4, 5].map(|host| Ipv4Addr::new(127, 0, 0, host));
    let port = port_free_on_all(&[old_a, old_b, new_a, new_b]);
    let zone = DnsZone::start("users.test.", TEST_TTL).await;

    let mut old = vec![
        start_users("users-a", old_a, port, &dir, &manifests).await,
        start_users("users-b", old_b, port, &dir, &manifests).await,
    ];
    for replica in &old {
        replica.wait_serving(PATIENCE).await.expect("SERVING");
    }
    zone.set(&[old_a, old_b]).await;

    let mut env = orders_env(&dir.join("orders.db"), &[]);
    env.retain(|(key, _)| *key != "ORDERS_USERS__ENDPOINTS");
    env.extend([
        ("ORDERS_USERS__RESOLVER", "dns".to_owned()),
        ("ORDERS_USERS__DNS_NAME", format!("users.test.:{port}")),
        ("ORDERS_USERS__DNS_REFRESH", TEST_REFRESH.to_owned()),
        ("ORDERS_USERS__DNS_NAMESERVER", zone.address().to_string()),
        // No retries: a call that reached a replica after its listener closed would fail,
        // so zero failures is the drain's doing (with retries a stop without any drain
        // passes too: each refused connection is retried on another replica).
        ("ORDERS_USERS__RETRY_POLICY__MAXATTEMPTS", "1".to_owned()),
    ]);
    let orders = Service::start("orders", "orders", &env, &dir).await.expect("orders starts");
    let mut users = UserServiceClient::connect(old[0].address.clone()).await.expect("connect to users");
    let request = CreateUserRequest { email: CUSTOMER.to_owned(), name: "Load".to_owned() };
    users.create_user(request).await.expect("the customer is created");

    let load = OrderLoad::start(&orders, CUSTOMER, 4).await.expect("connect to orders");
    load.wait_for_more(50, PATIENCE).await.expect("the load makes progress");
    // maxSurge 1, maxUnavailable 0: a new pod first, ready, in the endpoints; then an old
    // one leaves the endpoints and gets SIGTERM at the same moment, drains, exits.
    let mut answer = vec![old_a, old_b];
    let mut new = Vec::new();
    for (name, address) in [("users-c", new_a), ("users-d", new_b)] {
        let replica = start_users(name, address, port, &dir, &manifests).await;
        replica.wait_serving(PATIENCE).await.expect("SERVING");
        answer.push(address);
        zone.set(&answer).await;
        // Orders has followed the answer once the new replica serves its calls.
        replica.wait_for_rpc("GetUserByEmail", PATIENCE).await.expect("the new replica takes calls");

        let mut leaving = old.remove(0);
        answer.retain(|ip| *ip != ip_of(&leaving));
        zone.set(&answer).await;
        assert_eq!(leaving.stop().await.expect("SIGTERM"), 0, "{} drained and exited 0", leaving.name);
        new.push(replica);
        load.wait_for_more(30, PATIENCE).await.expect("the load makes progress");
    }

    let served_before: Vec<usize> =
        new.iter().map(|replica| replica.rpcs_finished("GetUserByEmail").expect("log readable")).collect();
    load.wait_for_more(100, PATIENCE).await.expect("the load makes progress on the new replicas");
    let (succeeded, failures) = load.stop().await.expect("the load stops");
    assert!(failures.is_empty(), "{} of {} calls failed: {failures:?}", failures.len(), succeeded + failures.len());
    assert_eq!(orders_stored(&orders, CUSTOMER).await.expect("ListOrders"), succeeded, "one order per call");
    for (replica, before) in new.iter_mut().zip(served_before) {
        // Killed, not drained: the log is complete once it has exited, and the test is done.
        replica.kill().await.expect("kill -9");
        let after = replica.rpcs_finished("GetUserByEmail").expect("log readable");
        assert!(after > before, "{} took calls after the roll: {before} then {after}", replica.name);
    }
}
