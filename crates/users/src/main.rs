//! The users binary: load config, start logging, build the app, serve until SIGTERM.

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
    match telemetry::subscriber(&config.log, std::io::stdout) {
        Ok(subscriber) => telemetry::init(subscriber),
        Err(error) => return exit("config", error, 78),
    }
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(error) => return exit("start-up", format!("{error:#}"), 1),
    };
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => exit("server", format!("{error:#}"), 1),
    }
}

/// Prints one line naming what failed and exits with `code` (78 = EX_CONFIG).
fn exit(stage: &str, error: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("users: {stage} error: {error}");
    ExitCode::from(code)
}
