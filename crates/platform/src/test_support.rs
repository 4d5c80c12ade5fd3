//! Test helpers shared by both services' integration tests and the system tests
//! (feature `test-support`).

pub mod dns;

use crate::config::ServerConfig;

/// A config of one `server` section, as both services' configs have, loaded with
/// `platform::config::load` in tests of how [`ServerConfig`] parses (port 0 by default).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ServerSection {
    /// The section under test.
    pub server: ServerConfig,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self { server: ServerConfig::on_port(0) }
    }
}

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

/// A TCP proxy on a free loopback port in front of one upstream address (the test
/// PostgreSQL), to take a dependency away from one service only: [`TcpProxy::cut`]
/// closes every proxied connection and refuses new ones, as a stopped server does;
/// [`TcpProxy::restore`] accepts again on the same port.
pub struct TcpProxy {
    address: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    running: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl TcpProxy {
    /// A proxy to the host and port of `TEST_DATABASE_URL` (see [`fresh_postgres_database`]).
    ///
    /// # Panics
    /// When `TEST_DATABASE_URL` is unset or names no `host:port`, or no port can be bound.
    pub async fn to_test_postgres() -> Self {
        let base = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL is unset");
        let url = url::Url::parse(&base).expect("TEST_DATABASE_URL is a URL");
        let upstream = url.socket_addrs(|| Some(5432)).expect("TEST_DATABASE_URL names host:port")[0];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a free port");
        let address = listener.local_addr().expect("a bound listener has an address");
        let mut proxy = Self { address, upstream, running: None };
        proxy.accept_on(listener);
        proxy
    }

    /// `url` with its host and port replaced by the proxy's, so a service connects through it.
    ///
    /// # Panics
    /// When `url` is not a URL with a host.
    pub fn route(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).expect("a URL");
        url.set_ip_host(self.address.ip()).expect("a URL with a host");
        url.set_port(Some(self.address.port())).expect("a URL with a host");
        url.into()
    }

    /// Closes every proxied connection (both sides see the socket closed) and the
    /// listener (new connections are refused). Returns once all are closed.
    pub async fn cut(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.await.expect("the proxy task ends cleanly");
        }
    }

    /// Listens on the proxy's port again (after [`TcpProxy::cut`]).
    ///
    /// # Panics
    /// When the port was taken in the meantime.
    pub async fn restore(&mut self) {
        if self.running.is_none() {
            let listener = tokio::net::TcpListener::bind(self.address).await.expect("rebind the proxy's port");
            self.accept_on(listener);
        }
    }

    fn accept_on(&mut self, listener: tokio::net::TcpListener) {
        let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
        let upstream = self.upstream;
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        pipes.spawn(async move {
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                    // Reap finished pipes so the set does not grow.
                    Some(_) = pipes.join_next(), if !pipes.is_empty() => {}
                }
            }
            drop(listener);
            // Aborts every pipe and waits until its sockets are dropped.
            pipes.shutdown().await;
        });
        self.running = Some((stop_tx, task));
    }
}

/// One of our service binaries, run as an operator would, for tests of its command line
/// and config: `path` is `env!("CARGO_BIN_EXE_users")` or the like, `prefix` its env
/// var prefix (`USERS_`).
pub struct ServiceBinary {
    /// The executable.
    pub path: &'static str,
    /// Its config env var prefix, e.g. `USERS_`.
    pub prefix: &'static str,
}

/// How a run of a [`ServiceBinary`] ended.
#[derive(Debug)]
pub struct BinaryExit {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl ServiceBinary {
    /// Bound on one run: a guard against a binary that serves instead of exiting.
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

    /// A directory of its own (under the system temp dir) for test `name`'s files.
    ///
    /// # Panics
    /// When the directory cannot be created.
    pub fn scratch(&self, name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("{}-cli-{name}-{}", self.service(), std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        dir
    }

    /// Runs the binary with `args` and, over a base of free ports (`SERVER__PORT`,
    /// `ADMIN__PORT` = 0) and a SQLite file under `dir`, the variables `env`; no other
    /// variable with its prefix is passed on.
    ///
    /// # Panics
    /// When the binary cannot run or does not exit within a minute.
    pub async fn run(&self, args: &[&str], dir: &std::path::Path, env: &[(&str, &str)]) -> BinaryExit {
        let mut command = tokio::process::Command::new(self.path);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().to_ascii_uppercase().starts_with(self.prefix) {
                command.env_remove(key);
            }
        }
        let database = format!("sqlite://{}?mode=rwc", dir.join(format!("{}.db", self.service())).display());
        command
            .args(args)
            .env(format!("{}SERVER__PORT", self.prefix), "0")
            .env(format!("{}ADMIN__PORT", self.prefix), "0")
            .env(format!("{}DATABASE__URL", self.prefix), database)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Self::PATIENCE, command.output())
            .await
            .expect("the binary exits instead of serving")
            .expect("the binary runs");
        BinaryExit { code: output.status.code(), stderr: String::from_utf8_lossy(&output.stderr).into_owned() }
    }

    /// Runs the binary with one bad variable and asserts exit 78 (EX_CONFIG) and one
    /// stderr line naming `key` and `variable`; returns that line.
    ///
    /// # Panics
    /// When it does not.
    pub async fn assert_refused(&self, name: &str, variable: &str, value: &str, key: &str) -> String {
        let exit = self.run(&[], &self.scratch(name), &[(variable, value)]).await;
        assert_eq!(exit.code, Some(78), "{variable}={value}: {}", exit.stderr);
        assert_eq!(exit.stderr.trim().lines().count(), 1, "one line: {}", exit.stderr);
        assert!(exit.stderr.contains(key) && exit.stderr.contains(variable), "{}", exit.stderr);
        exit.stderr
    }

    /// Asserts each bad value of the config sections both services share (an unknown
    /// key, `consul`, `database`), then each of the service's `own` cases (variable
    /// without the prefix, bad value, the key the line must name), is refused as
    /// [`ServiceBinary::assert_refused`] says, and that the refusal of a database URL
    /// does not quote its password.
    ///
    /// # Panics
    /// When one is not refused so.
    pub async fn assert_bad_config_refused(&self, own: &[(&str, &str, &str)]) {
        let shared = [
            ("SERVR__PORT", "7000", "servr"),
            ("CONSUL__ADDRESS", "127.0.0.1:8500", "consul.address"),
            ("DATABASE__MAX_CONNECTIONS", "0", "database.max_connections"),
            ("DATABASE__ACQUIRE_TIMEOUT", "0s", "database.acquire_timeout"),
        ];
        for (variable, value, key) in shared.iter().chain(own) {
            self.assert_refused(key, &format!("{}{variable}", self.prefix), value, key).await;
        }
        let variable = format!("{}DATABASE__URL", self.prefix);
        let url = format!("mysql://app:hunter2@db/{}", self.service());
        let stderr = self.assert_refused("scheme", &variable, &url, "database.url").await;
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }

    /// Asserts the variables kubelet sets in every pod of a namespace with a Service of
    /// this binary's name (cluster IP `ip`, port `grpc` = `port`) do not stop it: they
    /// share its prefix but are no config keys (`migrate` runs and exits 0).
    ///
    /// # Panics
    /// When they stop it.
    pub async fn assert_kubernetes_service_links_ignored(&self, ip: &str, port: u16) {
        let prefix = self.prefix;
        let links = [
            (format!("{prefix}SERVICE_HOST"), ip.to_owned()),
            (format!("{prefix}SERVICE_PORT"), port.to_string()),
            (format!("{prefix}SERVICE_PORT_GRPC"), port.to_string()),
            (format!("{prefix}PORT"), format!("tcp://{ip}:{port}")),
            (format!("{prefix}PORT_{port}_TCP"), format!("tcp://{ip}:{port}")),
            (format!("{prefix}PORT_{port}_TCP_PROTO"), "tcp".to_owned()),
            (format!("{prefix}PORT_{port}_TCP_PORT"), port.to_string()),
            (format!("{prefix}PORT_{port}_TCP_ADDR"), ip.to_owned()),
        ];
        let links: Vec<(&str, &str)> = links.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
        let exit = self.run(&["migrate"], &self.scratch("kubernetes"), &links).await;
        assert_eq!(exit.code, Some(0), "{}", exit.stderr);
    }

    /// Runs `health-check` against `port` on 127.0.0.1 (scratch directory `name`).
    ///
    /// # Panics
    /// As [`ServiceBinary::run`].
    pub async fn health_check(&self, name: &str, port: &str) -> BinaryExit {
        let variable = format!("{}SERVER__PORT", self.prefix);
        self.run(&["health-check"], &self.scratch(name), &[(&variable, port)]).await
    }

    /// Asserts `health-check` exits 1 against a free port nothing listens on.
    ///
    /// # Panics
    /// When it does not, or no port is free.
    pub async fn assert_health_check_fails_when_nothing_listens(&self) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("an address").port();
        let exit = self.health_check("nothing", &port.to_string()).await;
        assert_eq!(exit.code, Some(1), "{}", exit.stderr);
    }

    /// Asserts `migrate` on a fresh database (see [`fresh_postgres_database`], named
    /// after `database_prefix`) exits 0 and leaves `table` there, empty.
    ///
    /// # Panics
    /// When it does not, or PostgreSQL is not there.
    pub async fn assert_migrate_creates(&self, database_prefix: &str, table: &str) {
        let url = fresh_postgres_database(database_prefix).await;
        let variable = format!("{}DATABASE__URL", self.prefix);
        let exit = self.run(&["migrate"], &self.scratch("migrate"), &[(&variable, &url)]).await;
        assert_eq!(exit.code, Some(0), "{}", exit.stderr);
        let mut connection = PgConnection::connect(&url).await.expect("connect to the migrated database");
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("the {table} table: {e}"));
        assert_eq!(rows, 0);
    }

    /// The service's name: its prefix in lower case, without the `_`.
    fn service(&self) -> String {
        self.prefix.trim_end_matches('_').to_ascii_lowercase()
    }
}
