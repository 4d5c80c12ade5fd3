//! The orders binary: load config, then serve (start logs and traces, build the app, serve
//! until SIGTERM, flush traces), or answer `health-check`, or apply `migrate`.

use std::process::ExitCode;

use orders::{App, Config, repository::MIGRATOR};
use platform::{
    cli::{self, Cli, Command},
    observability::logs,
};

// mimalloc rather than glibc's malloc: measured in docs/perf.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::from_env("orders", "The orders gRPC service; config from --config and ORDERS_* env vars");
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => return cli::config_error("orders", error),
    };
    match cli.subcommand() {
        Command::Serve => {
            let telemetry = logs::start(&config.log, &config.telemetry);
            cli::serve("orders", telemetry, async { App::build(config).await?.run_until_stopped().await }).await
        }
        Command::HealthCheck => cli::health_check("orders", &config.server).await,
        Command::Migrate => cli::migrate("orders", &config.database, &MIGRATOR).await,
    }
}
