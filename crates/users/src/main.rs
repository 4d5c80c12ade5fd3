//! The users binary: load config, then serve (start logs and traces, build the app, serve
//! until SIGTERM, flush traces), or answer `health-check`, or apply `migrate`.

use std::process::ExitCode;

use platform::{
    cli::{self, Cli, Command},
    observability::logs,
};
use users::{App, Config, repository::MIGRATOR};

// mimalloc rather than glibc's malloc: measured in docs/perf.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::from_env("users", "The users gRPC service; config from --config and USERS_* env vars");
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => return cli::config_error("users", error),
    };
    match cli.subcommand() {
        Command::Serve => {
            let telemetry = logs::start(&config.log, &config.telemetry);
            cli::serve("users", telemetry, async { App::build(config).await?.run_until_stopped().await }).await
        }
        Command::HealthCheck => cli::health_check("users", &config.server).await,
        Command::Migrate => cli::migrate("users", &config.database, &MIGRATOR).await,
    }
}
