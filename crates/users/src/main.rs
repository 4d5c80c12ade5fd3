//! The users binary: load config, start logs and traces, build the app, serve until SIGTERM, flush traces.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use platform::telemetry;
use users::{App, Config};

/// Command line of the users service; everything else is config.
#[derive(Parser)]
#[command(version, about = "The users gRPC service")]
struct Args {
    /// TOML config file, applied over the defaults and under `USERS_*` env vars.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(error) => return exit("config", error, 78),
    };
    let tracing = match telemetry::start(&config.log, &config.telemetry) {
        Ok(tracing) => tracing,
        Err(error) => return exit("config", error, 78),
    };
    let result = match App::build(config).await {
        Ok(app) => app.run_until_stopped().await.map_err(|error| ("server", error)),
        Err(error) => Err(("start-up", error)),
    };
    // Export the spans still queued, whatever happened.
    tracing.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((stage, error)) => exit(stage, format!("{error:#}"), 1),
    }
}

/// Prints one line naming what failed and exits with `code` (78 = EX_CONFIG).
fn exit(stage: &str, error: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("users: {stage} error: {error}");
    ExitCode::from(code)
}
