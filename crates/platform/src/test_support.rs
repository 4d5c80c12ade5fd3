//! Test helpers shared by both services' integration tests (feature `test-support`).

use sqlx::{Connection, PgConnection};

/// Creates an empty database with a unique name under the PostgreSQL server at
/// `TEST_DATABASE_URL` (set by `scripts/with-postgres.sh`) and returns its URL.
///
/// # Panics
/// When `TEST_DATABASE_URL` is unset or the server refuses: the test cannot run.
pub async fn fresh_postgres_database(prefix: &str) -> String {
    let base = std::env::var("TEST_DATABASE_URL")
        .expect("TEST_DATABASE_URL is unset: run the tests through `make test` or scripts/with-postgres.sh");
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{base}/postgres")).await.expect("connect to the test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create a test database");
    format!("{base}/{name}")
}

/// Drops the database at `url` (ending `/name`), terminating its connections:
/// to test what a service does when its database disappears.
///
/// # Panics
/// When the server refuses.
pub async fn drop_postgres_database(url: &str) {
    let (base, name) = url.rsplit_once('/').expect("a database URL ends with /name");
    let mut admin = PgConnection::connect(&format!("{base}/postgres")).await.expect("connect to the test PostgreSQL");
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop the test database");
}
