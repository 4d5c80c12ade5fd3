//! Logging and tracing setup: build a subscriber with a swappable sink, then install it once.
//!
//! One subscriber carries both: JSON log lines (or pretty ones) and the
//! `tracing-opentelemetry` layer that turns spans into OpenTelemetry spans. Every JSON
//! line written inside a span carries that span's OpenTelemetry `trace_id` and
//! `span_id` (lowercase hex, as Jaeger shows them), so a log line leads to its trace.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::SdkTracer;
use serde_json::{Map, Value};
use tracing::{
    Event, Level, Subscriber,
    field::{Field, Visit},
};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{FilterExt, LevelFilter, filter_fn},
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter,
        format::{JsonFields, Writer},
        time::{FormatTime, SystemTime},
    },
    layer::SubscriberExt,
    registry::LookupSpan,
};

use crate::{
    config::{LogConfig, LogFormat},
    otel::{TelemetryConfig, Tracing},
};

/// Builds the subscriber: `RUST_LOG` if set, else `config.level`, as the filter of the
/// log lines; spans (and their events) at INFO and above exported through `tracer`
/// (see [`crate::otel::Tracing`]) whatever that filter says; JSON lines (event fields at
/// the top level, plus `timestamp`, `level`, `target`, the current `span` with its
/// fields, and `trace_id`/`span_id` inside a span) or pretty output, written to `sink`
/// (stdout in production, a test writer or `std::io::sink` in tests).
///
/// Fields whose name says they hold a secret (`password`, `token`, `secret`,
/// `authorization`) are written as `"[redacted]"`.
///
/// # Errors
/// When `config.level` is not a valid filter directive; the message names `log.level`.
pub fn subscriber<W>(
    config: &LogConfig,
    tracer: SdkTracer,
    sink: W,
) -> Result<Box<dyn Subscriber + Send + Sync>, String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => {
            EnvFilter::try_new(directives).map_err(|e| format!("invalid RUST_LOG: {e}"))
        }
        _ => EnvFilter::try_new(&config.level).map_err(|e| format!("invalid config key `log.level`: {e}")),
    }?;
    // Each layer filters for itself. Traces keep spans and events at INFO and above
    // whatever the log level, so `log.level = "warn"` quiets the logs without emptying
    // Jaeger; the log layer also sees INFO spans it would filter out, so a WARN line
    // inside an RPC still names its span.
    let traces = OpenTelemetryLayer::new(tracer).with_filter(LevelFilter::INFO);
    let logs = filter.or(filter_fn(|metadata| metadata.is_span() && *metadata.level() <= Level::INFO));
    let registry = Registry::default().with(traces);
    Ok(match config.format {
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(JsonLines)
                    .with_writer(sink)
                    .with_filter(logs),
            ),
        ),
        LogFormat::Pretty => {
            Box::new(registry.with(tracing_subscriber::fmt::layer().pretty().with_writer(sink).with_filter(logs)))
        }
    })
}

/// Installs `subscriber` as the global default. Call once, at start-up.
///
/// # Panics
/// If a global subscriber was already installed: that is a start-up bug, not input.
pub fn init(subscriber: Box<dyn Subscriber + Send + Sync>) {
    tracing::subscriber::set_global_default(subscriber).expect("telemetry::init is called once");
}

/// A service's start-up of logs and traces: starts span export per `traces`, then
/// installs the JSON (or pretty) log subscriber on stdout carrying those spans. Call
/// once; call [`Tracing::shutdown`] on the result before exiting, to flush spans.
///
/// # Errors
/// A one-line message naming the bad key (`telemetry.*` or `log.level`).
pub fn start(log: &LogConfig, traces: &TelemetryConfig) -> Result<Tracing, String> {
    let tracing = Tracing::start(traces)?;
    init(subscriber(log, tracing.tracer(), std::io::stdout)?);
    Ok(tracing)
}

/// For tests: logs to stdout when `TEST_LOG` is set, else nowhere; spans get ids but
/// are not exported. Safe to call from every test; only the first call installs.
pub fn init_for_tests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let config = LogConfig { level: "info".to_owned(), format: LogFormat::Json };
        let tracer = opentelemetry::trace::TracerProvider::tracer(
            &opentelemetry_sdk::trace::SdkTracerProvider::builder().build(),
            "tests",
        );
        let subscriber = if std::env::var_os("TEST_LOG").is_some() {
            subscriber(&config, tracer, std::io::stdout)
        } else {
            subscriber(&config, tracer, std::io::sink)
        };
        if let Ok(subscriber) = subscriber {
            let _ = tracing::subscriber::set_global_default(subscriber);
        }
    });
}

/// One JSON object per event; see [`subscriber`].
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert("level".into(), Value::String(event.metadata().level().to_string()));
        event.record(&mut Fields(&mut line));
        line.insert("target".into(), Value::String(event.metadata().target().to_owned()));
        if let Some(span) = ctx.lookup_current() {
            let mut fields = span
                .extensions()
                .get::<FormattedFields<N>>()
                .and_then(|fields| serde_json::from_str::<Map<String, Value>>(fields).ok())
                .unwrap_or_default();
            fields.insert("name".into(), Value::String(span.name().to_owned()));
            line.insert("span".into(), Value::Object(fields));
            // Entering a span makes its OpenTelemetry context the current one (the
            // OpenTelemetry layer's context activation), so the ids are those of the span
            // this event is in. (The dispatcher cannot be asked here: it is busy with this event.)
            let context = opentelemetry::Context::current();
            let span_context = context.span().span_context().clone();
            if span_context.is_valid() {
                line.insert("trace_id".into(), Value::String(span_context.trace_id().to_string()));
                line.insert("span_id".into(), Value::String(span_context.span_id().to_string()));
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Copies an event's fields into a JSON object, redacting secrets by name.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        let lower = name.to_ascii_lowercase();
        let secret = ["password", "token", "secret", "authorization"].iter().any(|word| lower.contains(word));
        self.0.insert(name.to_owned(), if secret { Value::String("[redacted]".to_owned()) } else { value });
    }
}

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;

    use super::*;

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Self;

        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    fn lines(sink: &Captured) -> Vec<Value> {
        let bytes = sink.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes).expect("utf-8").lines().map(|l| serde_json::from_str(l).expect("JSON")).collect()
    }

    #[test]
    fn a_line_inside_a_span_carries_its_trace_and_span_ids_and_secrets_are_redacted() {
        let sink = Captured::default();
        let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder().build().tracer("test");
        let config = LogConfig { level: "info".to_owned(), format: LogFormat::Json };
        let subscriber = subscriber(&config, tracer, sink.clone()).expect("a valid level");
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let span = tracing::info_span!("work", job = "a");
            let _entered = span.enter();
            tracing::info!(password = "hunter2", count = 3, "inside");
        });
        let lines = lines(&sink);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
        let inside = &lines[1];
        assert_eq!(inside["message"], "inside");
        assert_eq!(inside["count"], 3);
        assert_eq!(inside["password"], "[redacted]");
        assert_eq!(inside["span"]["name"], "work");
        assert_eq!(inside["span"]["job"], "a");
        let trace_id = inside["trace_id"].as_str().expect("a trace id");
        assert_eq!(trace_id.len(), 32);
        assert_ne!(trace_id, "00000000000000000000000000000000");
        assert_eq!(inside["span_id"].as_str().map(str::len), Some(16));
    }

    #[test]
    fn a_quieter_log_level_keeps_the_spans_so_a_warning_still_carries_its_trace_id() {
        let sink = Captured::default();
        let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder().build().tracer("test");
        let config = LogConfig { level: "warn".to_owned(), format: LogFormat::Json };
        let subscriber = subscriber(&config, tracer, sink.clone()).expect("a valid level");
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc", method = "CreateOrder");
            let _entered = span.enter();
            tracing::info!("filtered out");
            tracing::warn!("kept");
        });
        let lines = lines(&sink);
        assert_eq!(lines.len(), 1, "only the warning is logged: {lines:?}");
        assert_eq!(lines[0]["message"], "kept");
        assert_eq!(lines[0]["span"]["name"], "rpc");
        assert_eq!(lines[0]["trace_id"].as_str().map(str::len), Some(32), "the span is traced: {}", lines[0]);
    }
}
