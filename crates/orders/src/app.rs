//! Start-up: the one path production and tests share. `App::build` connects,
//! migrates, wires the users client and binds; `run_until_stopped` serves.

use std::future::Future;

use anyhow::Context;
use api::orders::v1::order_service_server::OrderServiceServer;
use platform::{
    auth::Authenticator,
    client::{self, ResolverConfig},
    database::{Backend, Database},
    discovery::consul::Consul,
    observability::admin::AdminServer,
    observability::logs,
    observability::metrics::Metrics,
    server::GrpcServer,
    shutdown,
};
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;

use crate::{
    changes::Changes,
    config::Config,
    domain::Orders,
    grpc::OrderGrpc,
    page_token::PageTokens,
    repository::{MIGRATOR, OrderRepository},
    users_client::UsersClient,
};

/// A built orders service: database ready, listener bound, not yet serving.
pub struct App {
    server: GrpcServer,
    admin: AdminServer,
    database: Database,
    listener: Option<JoinHandle<()>>,
}

impl App {
    /// Connects to `config.database`, applies migrations, starts listening for other
    /// replicas' changes (PostgreSQL), builds the users client over the resolver
    /// `users.resolver` names, and binds `config.server` (port 0 picks a free port) and
    /// the metrics endpoint `config.admin`. With `registration.enabled`, the instance
    /// registers in Consul once it serves.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated, an endpoint is malformed, or
    /// the port cannot be bound; the message says which.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let database =
            Database::connect(&config.database, "orders").await.context("connect to the database (database.url)")?;
        database.migrate(&MIGRATOR).await.context("apply database migrations")?;
        let metrics = Metrics::new();
        metrics.register(database.collector()).context("register the pool metrics")?;
        metrics.register(logs::collector()).context("register the log metrics")?;
        let (changes, listener) = match config.database.url.backend() {
            Backend::Postgres => {
                let (changes, task) = Changes::listen(config.database.url.expose_secret())
                    .await
                    .context("LISTEN for order changes (database.url)")?;
                (changes, Some(task))
            }
            Backend::Sqlite => (Changes::local(), None),
        };
        let consul = (config.registration.enabled || matches!(config.users.resolver, ResolverConfig::Consul { .. }))
            .then(|| Consul::new(&config.consul));
        // Observed (span, traceparent, grpc_client_* metrics) and resilient (deadline,
        // retries, balancing), its metrics registered.
        let users = client::channel("users", &config.users, consul.as_ref(), &metrics, api::FILE_DESCRIPTOR_SET)?;
        let orders = Orders::new(
            OrderRepository::new(database.clone(), changes.clone()),
            UsersClient::new(users),
            PageTokens::new(config.paging.token_secret.as_ref().map_or("", ExposeSecret::expose_secret)),
            &changes,
        );
        let authenticator = Authenticator::new(&config.auth).context("read the signing keys (auth.jwks_file)")?;
        let mut server = GrpcServer::bind(&config.server, api::FILE_DESCRIPTOR_SET, &metrics)
            .await
            .with_context(|| format!("bind {} (server.host, server.port)", config.server.addr()))?
            .add_service(OrderServiceServer::new(OrderGrpc::new(orders, config.paging)))
            .probe_database(&database, &config.database)
            .authenticate(authenticator)
            .rate_limit(&config.rate_limit);
        if let (true, Some(consul)) = (config.registration.enabled, consul) {
            server = server.register_in(consul, &config.registration, env!("CARGO_PKG_VERSION"));
        }
        let admin = AdminServer::bind(&config.admin, metrics)
            .await
            .with_context(|| format!("bind {} (admin.host, admin.port)", config.admin.addr()))?;
        tracing::info!(address = %server.local_addr(), admin_address = %admin.local_addr(), "orders listening");
        Ok(Self { server, admin, database, listener })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.server.local_addr().port()
    }

    /// The bound port of the metrics endpoint (`GET /metrics`).
    pub fn admin_port(&self) -> u16 {
        self.admin.local_addr().port()
    }

    /// Serves until SIGTERM or SIGINT, then drains (see [`GrpcServer::serve`]).
    ///
    /// # Errors
    /// A transport error of the server.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown::signal()).await
    }

    /// Serves until `stop` resolves, then drains. The metrics endpoint answers until
    /// the gRPC server has drained. Tests pass their own `stop`.
    ///
    /// # Errors
    /// A transport error of the server.
    pub async fn run_until(self, stop: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        self.admin.serve_while(self.server.serve(stop)).await?;
        if let Some(listener) = self.listener {
            listener.abort();
        }
        self.database.close().await;
        Ok(())
    }
}
