//! A service binary run as an operator would, for tests of its command line and config.

use sqlx::{Connection, PgConnection};

use crate::fresh_postgres_database;

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
