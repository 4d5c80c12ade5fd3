//! Bench-only baseline (`make bench`): the users service's own GetUser handler, domain and
//! repository served by bare tonic, without our layer stack (no logging, metrics,
//! tracing, deadlines, limits, health or reflection) but with the services' allocator, so the
//! bench reports what the stack costs as a ratio against it. Not a service: no config file,
//! no graceful drain.
//!
//! Env: `BARE_USERS_DATABASE_URL` (required; migrated on start), `BARE_USERS_MAX_CONNECTIONS`
//! (pool size, default 10 as in the users service). Listens on a free port of 127.0.0.1 with
//! TCP_NODELAY and prints one JSON line `{"address": "127.0.0.1:PORT"}` to stdout once bound.

use std::num::NonZeroU32;

use anyhow::{Context, anyhow};
use api::users::v1::user_service_server::UserServiceServer;
use platform::{config::DatabaseConfig, database::Database};
use tonic::transport::{Server, server::TcpIncoming};
use users::{
    domain::Users,
    grpc::UserGrpc,
    repository::{MIGRATOR, UserRepository},
};

// The services' allocator, so the ratio against this baseline is the layers' cost alone.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("BARE_USERS_DATABASE_URL").context("BARE_USERS_DATABASE_URL is unset")?;
    let mut config = DatabaseConfig::at(url.parse().map_err(|e| anyhow!("BARE_USERS_DATABASE_URL: {e}"))?);
    if let Ok(size) = std::env::var("BARE_USERS_MAX_CONNECTIONS") {
        config.max_connections = size.parse::<NonZeroU32>().context("BARE_USERS_MAX_CONNECTIONS: a number from 1")?;
    }
    let database = Database::connect(&config, "users").await.context("connect to BARE_USERS_DATABASE_URL")?;
    database.migrate(&MIGRATOR).await.context("apply database migrations")?;
    let users = Users::new(UserRepository::new(database));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("bind 127.0.0.1:0")?;
    let address = listener.local_addr()?;
    println!("{}", serde_json::json!({ "message": "bare users listening", "address": address.to_string() }));
    // The same socket option the real server sets: without it Nagle delays small frames ~40 ms.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(UserServiceServer::new(UserGrpc::new(users)))
        .serve_with_incoming(incoming)
        .await
        .context("serve")
}
