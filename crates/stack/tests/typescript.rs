//! The real TypeScript Connect client against the release binaries: buf generates
//! protobuf-es code, then `node --test` runs `tests/typescript/orders.test.mjs` against
//! users + orders with auth on, over Connect JSON, Connect proto and gRPC-Web.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use api::users::v1::{CreateUserRequest, user_service_client::UserServiceClient};
use secrecy::ExposeSecret;
use stack::{Service, auth::DevAuth, orders_env, sample, scrape, temp_dir, users_env};
use tokio::process::Command;
use tonic::transport::Channel;

/// How long node may take for the whole file: a guard against a hung stream, not a wait.
const NODE_PATIENCE: Duration = Duration::from_secs(120);

/// The TypeScript project: package.json, the lock file, buf.gen.yaml, the test file.
fn project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/typescript")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// buf: `$BUF`, else the one `make tools` installs.
fn buf() -> PathBuf {
    std::env::var_os("BUF").map_or_else(|| workspace().join(".tools/bin/buf"), PathBuf::from)
}

/// Runs `command` to its end; panics with its output when it fails.
async fn run(command: &mut Command, what: &str) -> String {
    let output = tokio::time::timeout(NODE_PATIENCE, command.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {NODE_PATIENCE:?}"))
        .unwrap_or_else(|error| panic!("{what} did not start: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{what} failed ({}):\n{stdout}\n{stderr}", output.status);
    stdout.into_owned()
}

#[tokio::test]
async fn the_typescript_connect_client_calls_orders_over_connect_json_connect_proto_and_grpc_web() {
    let project = project();
    let bin = project.join("node_modules/.bin");
    assert!(
        bin.join("protoc-gen-es").is_file(),
        "{} has no npm packages: run scripts/install-tools.sh",
        project.display()
    );
    // protobuf-es code for orders.v1, into the gitignored gen/ beside the test file.
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("a PATH");
    let _ = std::fs::remove_dir_all(project.join("gen"));
    run(
        Command::new(buf())
            .current_dir(workspace())
            .env("PATH", &path)
            .arg("generate")
            .arg("--template")
            .arg(project.join("buf.gen.yaml"))
            .arg("--output")
            .arg(&project)
            .args(["--path", "proto/orders"]),
        "buf generate",
    )
    .await;
    assert!(project.join("gen/orders/v1/orders_pb.js").is_file(), "buf generated orders_pb.js");

    let dir = temp_dir("typescript");
    let auth = DevAuth::new(&dir).expect("a throwaway key");
    let users_env = [users_env(&dir.join("users.db")), auth.users_env()].concat();
    let mut users = Service::start("users", "users", &users_env, &dir).await.expect("users");
    let orders_env = [orders_env(&dir.join("orders.db"), &[&users]), auth.orders_env()].concat();
    let mut orders = Service::start("orders", "orders", &orders_env, &dir).await.expect("orders");
    let customer = "ts@example.com";
    let channel = Channel::from_shared(users.address.clone()).expect("an address").connect().await.expect("connect");
    UserServiceClient::with_interceptor(channel, auth.bearer("typescript-test", "users", &[]))
        .create_user(CreateUserRequest { email: customer.to_owned(), name: "TS".to_owned() })
        .await
        .expect("the customer is created");

    let token = auth.token("typescript-test", "orders", &[]);
    let report = run(
        Command::new("node")
            .current_dir(&project)
            .env("ORDERS_URL", &orders.address)
            .env("ORDERS_TOKEN", token.expose_secret())
            .env("CUSTOMER_EMAIL", customer)
            .args(["--test", "--test-reporter=spec", "orders.test.mjs"]),
        "node --test",
    )
    .await;
    println!("{report}");
    // node exits 0 for a file with no tests too: the file's 16 tests must have run.
    let passed =
        report.lines().find_map(|line| line.strip_prefix("ℹ pass ")).and_then(|n| n.trim().parse::<u32>().ok());
    assert!(passed >= Some(16), "every test ran and passed:\n{report}");

    // orders counted the calls under the protocol that carried them.
    let metrics = scrape(&orders).await.expect("orders' metrics");
    for protocol in ["connect", "grpc_web"] {
        let created = sample(
            &metrics,
            "grpc_server_handled_total",
            &[("grpc_method", "CreateOrder"), ("grpc_code", "OK"), ("rpc_protocol", protocol)],
        );
        assert!(created >= 1.0, "CreateOrder over {protocol} counted: {metrics}");
    }
    assert_eq!(orders.stop().await.expect("orders stops"), 0);
    assert_eq!(users.stop().await.expect("users stops"), 0);
}
