//! Start-up: the one path production and tests share. `App::build` connects,
//! migrates and binds; `run_until_stopped` serves.

use std::future::Future;

use anyhow::Context;
use api::users::v1::user_service_server::UserServiceServer;
use platform::{
    auth::Authenticator, database::Database, discovery::consul::Consul, observability::admin::AdminServer,
    observability::logs, observability::metrics::Metrics, server::GrpcServer, shutdown,
};

use crate::{
    config::Config,
    domain::Users,
    grpc::UserGrpc,
    repository::{MIGRATOR, UserRepository},
};

/// A built users service: database ready, listener bound, not yet serving.
pub struct App {
    server: GrpcServer,
    admin: AdminServer,
    database: Database,
}

impl App {
    /// Connects to `config.database`, applies migrations, and binds `config.server`
    /// (port 0 picks a free port; see [`App::port`]) and the metrics endpoint
    /// `config.admin` (see [`App::admin_port`]). With `registration.enabled`, the
    /// instance registers in Consul once it serves.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated, or the port cannot be bound;
    /// the message says which.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let authenticator = Authenticator::new(&config.auth).context("read the signing keys (auth.jwks_file)")?;
        let database =
            Database::connect(&config.database, "users").await.context("connect to the database (database.url)")?;
        database.migrate(&MIGRATOR).await.context("apply database migrations")?;
        let metrics = Metrics::new();
        metrics.register(database.collector()).context("register the pool metrics")?;
        metrics.register(logs::collector()).context("register the log metrics")?;
        let users = Users::new(UserRepository::new(database.clone()));
        let mut server = GrpcServer::bind(&config.server, api::FILE_DESCRIPTOR_SET, &metrics)
            .await
            .with_context(|| format!("bind {} (server.host, server.port)", config.server.addr()))?
            // Test-only faults (`testing.*`, refused at load unless enabled): a pass-through by default.
            .add_service(config.testing.faults().wrap(UserServiceServer::new(UserGrpc::new(users))))
            .probe_database(&database, &config.database)
            .authenticate(authenticator)
            .rate_limit(&config.rate_limit);
        if config.registration.enabled {
            let consul = Consul::new(&config.consul);
            server = server.register_in(consul, &config.registration, env!("CARGO_PKG_VERSION"));
        }
        let admin = AdminServer::bind(&config.admin, metrics)
            .await
            .with_context(|| format!("bind {} (admin.host, admin.port)", config.admin.addr()))?;
        tracing::info!(address = %server.local_addr(), admin_address = %admin.local_addr(), "users listening");
        Ok(Self { server, admin, database })
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
        self.database.close().await;
        Ok(())
    }
}
