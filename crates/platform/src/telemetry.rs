//! Logging setup: build a subscriber with a swappable sink, then install it once.

use tracing::Subscriber;
use tracing_subscriber::{EnvFilter, Registry, fmt::MakeWriter, layer::SubscriberExt};

use crate::config::{LogConfig, LogFormat};

/// Builds the subscriber: `RUST_LOG` if set, else `config.level`, as the filter;
/// JSON lines (fields flattened to the top level, plus `target` and the span's
/// fields) or pretty output, written to `sink` (stdout in production, a test writer
/// or `std::io::sink` in tests).
///
/// # Errors
/// When `config.level` is not a valid filter directive; the message names `log.level`.
pub fn subscriber<W>(config: &LogConfig, sink: W) -> Result<Box<dyn Subscriber + Send + Sync>, String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => {
            EnvFilter::try_new(directives).map_err(|e| format!("invalid RUST_LOG: {e}"))
        }
        _ => EnvFilter::try_new(&config.level).map_err(|e| format!("invalid config key `log.level`: {e}")),
    }?;
    let registry = Registry::default().with(filter);
    Ok(match config.format {
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(sink),
            ),
        ),
        LogFormat::Pretty => Box::new(registry.with(tracing_subscriber::fmt::layer().pretty().with_writer(sink))),
    })
}

/// Installs `subscriber` as the global default. Call once, at start-up.
///
/// # Panics
/// If a global subscriber was already installed: that is a start-up bug, not input.
pub fn init(subscriber: Box<dyn Subscriber + Send + Sync>) {
    tracing::subscriber::set_global_default(subscriber).expect("telemetry::init is called once");
}

/// For tests: logs to stdout when `TEST_LOG` is set, else nowhere. Safe to call from
/// every test; only the first call installs.
pub fn init_for_tests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let config = LogConfig { level: "info".to_owned(), format: LogFormat::Json };
        let subscriber = if std::env::var_os("TEST_LOG").is_some() {
            subscriber(&config, std::io::stdout)
        } else {
            subscriber(&config, std::io::sink)
        };
        if let Ok(subscriber) = subscriber {
            let _ = tracing::subscriber::set_global_default(subscriber);
        }
    });
}
