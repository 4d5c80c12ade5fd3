//! The orders binary: load config, start logs and traces, build the app, serve until SIGTERM, flush traces.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use orders::{App, Config};
use platform::telemetry;

/// Command line of the orders service; everything else is config.
#[derive(Parser)]
#[command(version, about = "The orders gRPC service")]
struct Args {
    /// TOML config file, applied over the defaults and under `ORDERS_*` env vars.
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
    eprintln!("orders: {stage} error: {error}");
    ExitCode::from(code)
}
