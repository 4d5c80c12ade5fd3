//! `make demo`: the embedded default (SQLite, static endpoints) with two users replicas
//! and one orders replica, driven by real traffic, then a summary. Authentication is on:
//! a throwaway Ed25519 key made at start signs short-lived tokens for the demo's calls
//! and for orders' calls to users; orders calls users over mTLS with a throwaway CA.
//! Most calls are gRPC; some go to orders over Connect JSON (HTTP/1.1 `POST`, and a
//! cacheable `GET`) on the same port, and the summary shows the calls per protocol as
//! the services' own metrics count them.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, ensure};
use clap::Parser;
use stack::{
    Service,
    auth::DevAuth,
    orders_env, sample, scrape,
    tls::DevTls,
    traffic::{Caller, PROTOCOLS, Recorder, drive},
    users_env,
};

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
    let outcome =
        drive(&mut recorder, Caller::Authenticated(&auth), users_channel, &orders.address, args.orders, "demo").await;

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

    let by_code = recorder.errors_by_code();
    let traffic = outcome?;
    ensure!(
        traffic.listed == traffic.orders.len(),
        "paging lists exactly the orders placed: {} of {}",
        traffic.listed,
        traffic.orders.len()
    );
    let (story, trace_id) = (traffic.story, traffic.trace_id);
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

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
