//! `spawn_app`: a users service on a free port over a fresh database, with a typed client.

use std::time::Duration;

use api::users::v1::user_service_client::UserServiceClient;
use platform::{auth::AuthConfig, config::DatabaseConfig};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use users::{App, Config};

/// How long a stopping test app lets open RPCs run.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// A running users service for one test; it stops when dropped.
pub struct TestApp {
    pub address: String,
    pub database_url: String,
    pub client: UserServiceClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// Tells the service to stop, as SIGTERM does in production, and returns its task,
    /// which ends when the server has stopped.
    pub fn stop(&mut self) -> &mut tokio::task::JoinHandle<anyhow::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        &mut self.serving
    }

    /// A plain channel to the service, for the health client.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.address.clone()).expect("a valid address").connect().await.expect("connect")
    }
}

/// Builds the app exactly as `main` does, on port 0 and a fresh database, with no
/// lame-duck drain period.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// As [`spawn_app`], with `customise` applied to the config last.
pub async fn spawn_app_with(customise: impl FnOnce(&mut Config)) -> TestApp {
    platform::observability::logs::init_for_tests();
    let database_url = testkit::fresh_postgres_database("users_test").await;
    let mut config = Config::default();
    config.server.port = 0;
    config.admin.port = 0;
    config.database = DatabaseConfig::at(database_url.parse().expect("a database URL"));
    config.database.health_check_interval = Duration::from_millis(50);
    config.database.acquire_timeout = Duration::from_millis(500);
    config.server.shutdown_grace = SHUTDOWN_GRACE;
    config.server.drain_period = Duration::ZERO;
    // Open, so each test calls without a token; auth.rs turns it on.
    config.auth = AuthConfig::none();
    customise(&mut config);
    let app = App::build(config).await.expect("the app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let client = UserServiceClient::connect(address.clone()).await.expect("connect to the users service");
    TestApp { address, database_url, client, stop: Some(stop), serving }
}
