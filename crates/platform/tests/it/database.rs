//! The pool against a real PostgreSQL (`scripts/with-postgres.sh`): what it does when a
//! connection dies, when a transaction is abandoned, how many round trips a query takes,
//! and how the errors of a server going away or of conflicting transactions classify.

use std::{
    num::NonZeroU32,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Output,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use platform::{
    config::DatabaseConfig,
    database::{Database, StorageFailure, is_unavailable},
};
use sqlx::{Connection, PgConnection};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    process::Command,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

/// Upper bound for what should happen at once: a guard against a hung test, not a wait.
const PATIENCE: Duration = Duration::from_secs(10);

/// The `postgres` database of the server at `TEST_DATABASE_URL`.
fn postgres_url() -> String {
    let base = std::env::var("TEST_DATABASE_URL")
        .expect("TEST_DATABASE_URL is unset: run the tests through `make test` or scripts/with-postgres.sh");
    format!("{base}/postgres")
}

/// A pool of one connection to `url`.
async fn pool_of_one(url: &str, ping_after_idle: Duration) -> Database {
    pool_of_one_with(url, |config| config.ping_after_idle = ping_after_idle).await
}

/// A pool of one connection to `url`, its other settings the defaults as `configure` changes them.
async fn pool_of_one_with(url: &str, configure: impl FnOnce(&mut DatabaseConfig)) -> Database {
    let mut config = DatabaseConfig::at(url.parse().expect("a database URL"));
    config.max_connections = NonZeroU32::MIN;
    configure(&mut config);
    Database::connect(&config, "test").await.expect("connect to the test PostgreSQL")
}

async fn backend_pid(database: &Database) -> i32 {
    let mut connection = database.acquire().await.expect("a connection");
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *connection).await.expect("a query")
}

#[tokio::test]
async fn a_connection_that_died_in_the_pool_is_replaced_before_any_query_uses_it() {
    let url = postgres_url();
    // Whatever its idle time: the rule for connections idle `ping_after_idle` or more.
    let database = pool_of_one(&url, Duration::ZERO).await;
    let backend = backend_pid(&database).await;

    // What a restarted server or a killed backend leaves behind: an idle pooled connection whose server side is gone.
    let mut admin = PgConnection::connect(&url).await.expect("an admin connection");
    terminate_backend(&mut admin, backend).await;

    // The ping on acquire finds the dead connection: the pool replaces it and the query
    // runs on a new backend (without the ping, this query failed).
    let next = tokio::time::timeout(PATIENCE, backend_pid(&database)).await.expect("the pool answers in time");
    assert_ne!(next, backend, "the dead connection went back into the pool");
    assert_eq!(database.open_connections(), 1, "the pool replaced the connection rather than adding one");
}

#[tokio::test]
async fn a_transaction_dropped_without_commit_releases_its_locks_at_once_not_at_the_connections_next_use() {
    let url = postgres_url();
    let database = pool_of_one(&url, Duration::from_secs(3600)).await;
    // A lock key of this test's own: other tests share the server.
    let key: i64 = rand::random();
    {
        let mut connection = database.acquire().await.expect("a connection");
        let mut transaction = connection.begin().await.expect("BEGIN");
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(key).execute(&mut *transaction).await.expect("locked");
        // What a cancelled call leaves: the transaction and its connection dropped
        // mid-way, the pooled connection idle afterwards.
    }

    // Another session takes the same lock: it waits for the abandoned transaction's
    // ROLLBACK, which must reach the server without anyone using the pooled connection.
    let mut other = PgConnection::connect(&url).await.expect("another connection");
    let mut transaction = other.begin().await.expect("BEGIN");
    sqlx::query("SET LOCAL lock_timeout = '5s'").execute(&mut *transaction).await.expect("lock_timeout");
    let locked = sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(key).execute(&mut *transaction).await;
    assert!(locked.is_ok(), "the abandoned transaction still held its lock after 5s: {locked:?}");
    transaction.rollback().await.expect("ROLLBACK");
    // The flushed connection went back into the pool and still works.
    tokio::time::timeout(PATIENCE, backend_pid(&database)).await.expect("the pool answers in time");
    assert_eq!(database.open_connections(), 1);
}

#[tokio::test]
async fn a_dropped_transaction_whose_rollback_cannot_be_sent_closes_its_connection_instead_of_pooling_it() {
    let url = postgres_url();
    let mut proxy = watched_proxy(&url).await;
    let database = pool_of_one(&proxy.url, Duration::from_secs(3600)).await;
    let mut admin = PgConnection::connect(&url).await.expect("an admin connection");
    {
        let mut connection = database.acquire().await.expect("a connection");
        let mut transaction = connection.begin().await.expect("BEGIN");
        let backend: i32 =
            sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *transaction).await.expect("a query");
        // The server side goes away while the transaction is open: the ROLLBACK its drop
        // queues cannot be flushed.
        terminate_backend(&mut admin, backend).await;
    }
    // The failed flush closes the connection (pooled again, it would stay open until a
    // query found it dead), and the pool no longer counts it.
    tokio::time::timeout(PATIENCE, proxy.closes.recv()).await.expect("the connection whose flush failed is still open");
    assert_eq!(database.open_connections(), 0);
    // The next query gets a new connection.
    tokio::time::timeout(PATIENCE, backend_pid(&database)).await.expect("the pool answers in time");
    assert_eq!(database.open_connections(), 1);
}

#[tokio::test]
async fn a_connection_with_a_queued_rollback_dropped_outside_any_runtime_is_closed_not_pooled() {
    let mut proxy = watched_proxy(&postgres_url()).await;
    let database = pool_of_one(&proxy.url, Duration::from_secs(3600)).await;
    let mut connection = database.acquire().await.expect("a connection");
    let transaction = connection.begin().await.expect("BEGIN");
    // Dropped, the transaction queues its ROLLBACK on the connection, unsent.
    drop(transaction);
    // What a test's runtime shutting down does: the connection is dropped where no runtime
    // can flush that ROLLBACK.
    let dropped = std::thread::spawn(move || drop(connection)).join();
    assert!(dropped.is_ok(), "dropping the connection outside a runtime panicked");
    tokio::time::timeout(PATIENCE, proxy.closes.recv()).await.expect("the unflushed connection is still open");
    assert_eq!(database.open_connections(), 0, "the unflushed connection went back into the pool");
}

#[tokio::test]
async fn a_query_on_a_recently_used_pooled_connection_is_one_round_trip_to_the_database() {
    let url = postgres_url();
    let proxy = watched_proxy(&url).await;
    let round_trips = proxy.reads;
    let database = pool_of_one(&proxy.url, Duration::from_secs(3600)).await;
    backend_pid(&database).await; // the statement is prepared once per connection

    const QUERIES: usize = 50;
    let before = round_trips.load(Ordering::SeqCst);
    for _ in 0..QUERIES {
        backend_pid(&database).await;
    }
    let trips = round_trips.load(Ordering::SeqCst) - before;
    // sqlx's own pool pinged every connection it took back: 2 round trips per query.
    assert!(trips <= QUERIES + QUERIES / 10, "{trips} round trips for {QUERIES} queries");
    assert!(trips >= QUERIES, "the proxy counted {trips} for {QUERIES} queries: it misses some");
}

#[tokio::test]
async fn connect_tries_again_while_the_database_refuses_connections_until_it_answers() {
    let url = postgres_url();
    let (proxy, refused) = proxy_refusing_first(&url, 2).await;
    let mut config = DatabaseConfig::at(proxy.parse().expect("a database URL"));
    config.acquire_timeout = Duration::from_secs(10);
    let database = Database::connect(&config, "test").await.expect("connected on the third attempt");
    assert_eq!(refused.load(Ordering::SeqCst), 2, "the first two connections were cut");
    backend_pid(&database).await;
}

#[tokio::test]
async fn a_connection_past_its_max_lifetime_is_replaced_when_next_handed_out_and_closed() {
    let mut proxy = watched_proxy(&postgres_url()).await;
    // Every connection is past it by the time it comes back.
    let database = pool_of_one_with(&proxy.url, |config| config.max_lifetime = Duration::from_nanos(1)).await;
    let first = backend_pid(&database).await;
    let second = backend_pid(&database).await;
    assert_ne!(first, second, "the connection outlived database.max_lifetime");
    assert_eq!(database.open_connections(), 1, "the pool replaced the connection rather than adding one");
    // The connection `connect` opened and the one `first` ran on were both closed.
    for _ in 0..2 {
        tokio::time::timeout(PATIENCE, proxy.closes.recv()).await.expect("a replaced connection is still open");
    }
}

#[tokio::test]
async fn a_connection_idle_for_idle_timeout_is_closed() {
    let mut proxy = watched_proxy(&postgres_url()).await;
    let database = pool_of_one_with(&proxy.url, |config| config.idle_timeout = Duration::from_millis(100)).await;
    let backend = backend_pid(&database).await;
    tokio::time::timeout(PATIENCE, proxy.closes.recv()).await.expect("the idle connection is still open");
    assert_eq!(database.open_connections(), 0, "the pool still counts the closed connection");
    // The pool opens a new one for the next query.
    assert_ne!(backend_pid(&database).await, backend);
}

#[tokio::test]
async fn a_query_whose_backend_is_terminated_under_it_is_unavailable_with_sqlstate_57p01() {
    let (_, _, error) = query_whose_backend_was_terminated(&postgres_url()).await;
    assert_eq!(sqlstate(&error).as_deref(), Some("57P01"), "admin_shutdown: {error:?}");
    assert_eq!(StorageFailure::of(&error), StorageFailure::Unavailable, "{error:?}");
    assert!(is_unavailable(&error), "{error:?}");
}

#[tokio::test]
async fn a_connection_whose_query_found_its_backend_gone_is_replaced_before_the_next_query_uses_it() {
    // Recently used, the connection is not pinged by the rule for idle ones.
    let (database, backend, error) = query_whose_backend_was_terminated(&postgres_url()).await;
    // What the repositories do with a query's error; the dead connection is back in the pool.
    let error = database.noticed(error);
    assert!(is_unavailable(&error), "{error:?}");

    let next = tokio::time::timeout(PATIENCE, backend_pid(&database)).await.expect("the pool answers in time");
    assert_ne!(next, backend, "the dead connection was handed out again");
    assert_eq!(database.open_connections(), 1, "the pool replaced the connection rather than adding one");
}

#[tokio::test]
async fn a_query_in_flight_when_the_server_stops_in_fast_mode_is_unavailable_and_so_is_the_next_one() {
    let cluster = OwnCluster::start().await;
    let database = pool_of_one(&cluster.url, Duration::from_secs(3600)).await;
    let mut admin = PgConnection::connect(&cluster.url).await.expect("an admin connection");
    let (_, query) = sleep_in_flight(&database, &mut admin).await;

    // What `docker compose restart postgres` and `pg_ctl restart` begin with.
    cluster.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "30"]).await;

    let error = tokio::time::timeout(PATIENCE, query).await.expect("the query ended in time").expect("ran");
    let error = error.expect_err("the server stopped under the query");
    assert_eq!(sqlstate(&error).as_deref(), Some("57P01"), "admin_shutdown: {error:?}");
    assert_eq!(StorageFailure::of(&error), StorageFailure::Unavailable, "{error:?}");
    // The next call, on the dead pooled connection or a new one the stopped server refuses.
    let next = tokio::time::timeout(PATIENCE, async {
        let mut connection = database.acquire().await?;
        sqlx::query("SELECT 1").execute(&mut *connection).await
    })
    .await
    .expect("the next call ended in time");
    let next = next.expect_err("the server is stopped");
    assert_eq!(StorageFailure::of(&next), StorageFailure::Unavailable, "{next:?}");
}

#[tokio::test]
async fn a_serialization_failure_between_two_transactions_is_aborted_with_sqlstate_40001() {
    let url = postgres_url();
    let database = pool_of_one(&url, Duration::from_secs(3600)).await;
    let mut other = PgConnection::connect(&url).await.expect("another connection");
    // A table of this test's own: other tests share the server.
    let table = format!("serialized_{}", rand::random::<u32>());
    sqlx::query(&format!("CREATE TABLE {table} (id INT PRIMARY KEY, value INT NOT NULL)"))
        .execute(&mut other)
        .await
        .expect("CREATE TABLE");
    sqlx::query(&format!("INSERT INTO {table} VALUES (1, 0)")).execute(&mut other).await.expect("INSERT");

    let mut connection = database.acquire().await.expect("a connection");
    let mut transaction = connection.begin().await.expect("BEGIN");
    sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").execute(&mut *transaction).await.expect("SERIALIZABLE");
    // The transaction's snapshot is taken here; the other session then changes the row.
    sqlx::query(&format!("SELECT value FROM {table} WHERE id = 1")).execute(&mut *transaction).await.expect("SELECT");
    sqlx::query(&format!("UPDATE {table} SET value = value + 1 WHERE id = 1"))
        .execute(&mut other)
        .await
        .expect("the other session's UPDATE");
    let conflict =
        sqlx::query(&format!("UPDATE {table} SET value = value + 1 WHERE id = 1")).execute(&mut *transaction).await;
    transaction.rollback().await.expect("ROLLBACK");
    drop(connection);
    sqlx::query(&format!("DROP TABLE {table}")).execute(&mut other).await.expect("DROP TABLE");

    let error = conflict.expect_err("the row changed after the snapshot");
    assert_eq!(sqlstate(&error).as_deref(), Some("40001"), "serialization_failure: {error:?}");
    assert_eq!(StorageFailure::of(&error), StorageFailure::Aborted, "{error:?}");
}

/// The SQLSTATE of an error the server answered with.
fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error.as_database_error().and_then(|error| error.code()).map(|code| code.into_owned())
}

/// A pool of one connection to `url`, pinged only after an hour idle, whose query
/// `SELECT pg_sleep(30)` had its backend terminated under it; and that backend's pid and
/// the query's error.
async fn query_whose_backend_was_terminated(url: &str) -> (Database, i32, sqlx::Error) {
    let database = pool_of_one(url, Duration::from_secs(3600)).await;
    let mut admin = PgConnection::connect(url).await.expect("an admin connection");
    let (backend, query) = sleep_in_flight(&database, &mut admin).await;
    terminate_backend(&mut admin, backend).await;
    let error = tokio::time::timeout(PATIENCE, query).await.expect("the query ended in time").expect("ran");
    (database, backend, error.expect_err("the query's backend was terminated"))
}

/// Starts `SELECT pg_sleep(30)` on a connection of `database`; returns its backend's pid,
/// once `admin` sees that backend running a statement, and the query's task.
async fn sleep_in_flight(database: &Database, admin: &mut PgConnection) -> (i32, JoinHandle<Result<(), sqlx::Error>>) {
    let (started, backend) = oneshot::channel();
    let database = database.clone();
    let query = tokio::spawn(async move {
        let mut connection = database.acquire().await?;
        let _ =
            started.send(sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()").fetch_one(&mut *connection).await?);
        sqlx::query("SELECT pg_sleep(30)").execute(&mut *connection).await.map(drop)
    });
    let backend = tokio::time::timeout(PATIENCE, backend).await.expect("a backend in time").expect("a connection");
    let running = async {
        let mut every = tokio::time::interval(Duration::from_millis(10));
        loop {
            every.tick().await;
            let active: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' \
                 AND query LIKE 'SELECT pg_sleep%')",
            )
            .bind(backend)
            .fetch_one(&mut *admin)
            .await
            .expect("read pg_stat_activity");
            if active {
                return;
            }
        }
    };
    tokio::time::timeout(PATIENCE, running).await.expect("the sleep started in time");
    (backend, query)
}

/// A PostgreSQL cluster of one test's own, which it may stop: made by `initdb` in a
/// temporary directory and started by `pg_ctl` on a free loopback port, both run as the
/// `postgres` user when the test runs as root (initdb refuses root), as
/// scripts/with-postgres.sh does. Stopped (immediate mode) and removed when dropped.
struct OwnCluster {
    /// The server's `bin` directory (the newest `/usr/lib/postgresql/*/bin`).
    bin: PathBuf,
    /// The temporary directory: `data/`, `server.log` and the Unix socket.
    dir: PathBuf,
    /// The `postgres` database on it.
    url: String,
}

impl OwnCluster {
    async fn start() -> Self {
        let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL installed under /usr/lib/postgresql (scripts/install-tools.sh)")
            .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
            .filter(|bin| bin.join("pg_ctl").exists())
            .collect();
        bins.sort_by_key(|bin| bin.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()));
        let bin = bins.pop().expect("a PostgreSQL server under /usr/lib/postgresql/*/bin");
        let dir = std::env::temp_dir().join(format!("pg-own-{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&dir).expect("a temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let cluster = Self { bin, dir, url: format!("postgres://postgres@127.0.0.1:{port}/postgres") };
        if running_as_root() {
            let chown = Command::new("chown").arg("postgres").arg(&cluster.dir).status().await;
            assert!(chown.is_ok_and(|status| status.success()), "chown postgres {}", cluster.dir.display());
        }
        let data = cluster.dir.join("data");
        let initdb = cluster.bin.join("initdb");
        let args = ["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "-D"];
        let mut command = as_owner(&initdb);
        command.args(args).arg(&data);
        succeeded(Command::from(command).output().await, "initdb");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} -c fsync=off",
            cluster.dir.display()
        );
        let log = cluster.dir.join("server.log");
        let log = log.to_str().expect("a UTF-8 path");
        cluster.pg_ctl(&["start", "-w", "-t", "60", "-l", log, "-o", &options]).await;
        cluster
    }

    /// Runs `pg_ctl -D <data> <args>`, which must succeed within 90 s.
    async fn pg_ctl(&self, args: &[&str]) {
        let mut command = as_owner(&self.bin.join("pg_ctl"));
        command.arg("-D").arg(self.dir.join("data")).args(args);
        let mut command = Command::from(command);
        let run = command.kill_on_drop(true).output();
        let output = tokio::time::timeout(Duration::from_secs(90), run).await.expect("pg_ctl ended in time");
        succeeded(output, &format!("pg_ctl {args:?} (log: {})", self.dir.join("server.log").display()));
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let _ = as_owner(&pg_ctl).arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether this process runs as root (the owner of its `/proc/self`).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// A command running `program`, as the `postgres` user when this process runs as root.
fn as_owner(program: &Path) -> std::process::Command {
    if running_as_root() {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        std::process::Command::new(program)
    }
}

/// Panics unless the command of `output` ran and exited 0 (`what` it was, for the panic).
fn succeeded(output: std::io::Result<Output>, what: &str) {
    let output = output.unwrap_or_else(|error| panic!("{what} did not run: {error}"));
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Terminates PostgreSQL backend `pid` (as a restarted server or an administrator does),
/// waiting up to 10 s for it to exit.
async fn terminate_backend(admin: &mut PgConnection, pid: i32) {
    let signalled: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)")
        .bind(pid)
        .fetch_one(admin)
        .await
        .expect("terminate the backend");
    assert!(signalled, "backend {pid} was not terminated");
}

/// A TCP proxy in front of the server of `url` that cuts its first `refuse` connections
/// at once, as a database still starting does; and how many it cut.
async fn proxy_refusing_first(url: &str, refuse: usize) -> (String, Arc<AtomicUsize>) {
    let (target, listener, proxied) = proxy_listener(url).await;
    let refused = Arc::new(AtomicUsize::new(0));
    let counted = refused.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if counted.load(Ordering::SeqCst) < refuse {
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = client.shutdown().await;
                continue;
            }
            let mut server = TcpStream::connect(&target).await.expect("the test PostgreSQL");
            tokio::spawn(async move { tokio::io::copy_bidirectional(&mut client, &mut server).await });
        }
    });
    (proxied, refused)
}

/// A listener on a free loopback port, the `host:port` of the server of `url`, and `url`
/// pointing at the listener instead.
async fn proxy_listener(url: &str) -> (String, TcpListener, String) {
    let server: url::Url = url.parse().expect("a URL");
    let target = format!("{}:{}", server.host_str().expect("a host"), server.port().unwrap_or(5432));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let mut proxied = server.clone();
    proxied.set_host(Some("127.0.0.1")).expect("a host");
    proxied.set_port(Some(listener.local_addr().expect("bound").port())).expect("a port");
    (target, listener, proxied.to_string())
}

/// What [`watched_proxy`] sees of the connections through it.
struct WatchedProxy {
    /// The URL through the proxy.
    url: String,
    /// The reads of what clients sent: one per round trip when a client waits for each
    /// answer before it sends again.
    reads: Arc<AtomicUsize>,
    /// A message each time a client (the pool) closes its side of a connection. What a
    /// client sends after the server has gone is read and dropped, so only the client's
    /// own close counts.
    closes: mpsc::UnboundedReceiver<()>,
}

/// A TCP proxy in front of the server of `url` that counts reads and reports closes (see
/// [`WatchedProxy`]).
async fn watched_proxy(url: &str) -> WatchedProxy {
    let (target, listener, proxied) = proxy_listener(url).await;
    let reads = Arc::new(AtomicUsize::new(0));
    let (closed, closes) = mpsc::unbounded_channel();
    let counted = reads.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(&target).await.expect("the test PostgreSQL");
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_server, mut to_server) = server.into_split();
            let (counted, closed) = (counted.clone(), closed.clone());
            tokio::spawn(async move {
                let mut buffer = vec![0; 64 * 1024];
                while let Ok(read @ 1..) = from_client.read(&mut buffer).await {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let _ = to_server.write_all(&buffer[..read]).await;
                }
                let _ = closed.send(());
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                let _ = to_client.shutdown().await;
            });
        }
    });
    WatchedProxy { url: proxied, reads, closes }
}
