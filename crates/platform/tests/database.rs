//! The pool against a real PostgreSQL (`scripts/with-postgres.sh`): what it does when a connection dies.

use std::{num::NonZeroU32, time::Duration};

use platform::{config::DatabaseConfig, database};
use sqlx::{Connection, PgConnection};

/// The `postgres` database of the server at `TEST_DATABASE_URL`.
fn postgres_url() -> String {
    let base = std::env::var("TEST_DATABASE_URL")
        .expect("TEST_DATABASE_URL is unset: run the tests through `make test` or scripts/with-postgres.sh");
    format!("{base}/postgres")
}

#[tokio::test]
async fn a_connection_that_died_in_the_pool_is_replaced_before_any_query_uses_it() {
    let url = postgres_url();
    let mut config = DatabaseConfig::at(url.parse().expect("a database URL"));
    config.max_connections = NonZeroU32::MIN;
    // Whatever its idle time: the rule for connections idle `ping_after_idle` or more.
    config.ping_after_idle = Duration::ZERO;
    let pool = database::connect(&config).await.expect("connect to the test PostgreSQL");
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&pool).await.expect("the first query");

    // What a restarted server or a killed backend leaves behind: an idle pooled connection whose server side is gone.
    let mut admin = PgConnection::connect(&url).await.expect("an admin connection");
    let signalled: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)")
        .bind(backend)
        .fetch_one(&mut admin)
        .await
        .expect("terminate the pooled connection's backend");
    assert!(signalled, "backend {backend} was not terminated");

    // The ping on acquire finds the dead connection: the pool replaces it and the query
    // runs on a new backend (without the ping, this query failed).
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()").fetch_one(&pool),
    )
    .await
    .expect("the pool answers within its acquire timeout")
    .expect("the first query after the backend died succeeds");
    assert_ne!(next, backend, "the dead connection went back into the pool");
    assert_eq!(pool.size(), 1, "the pool replaced the connection rather than adding one");
}
