//! Throwaway PostgreSQL databases under the test server (`TEST_DATABASE_URL`), and a
//! proxy in front of it to take the database away from one service.

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
