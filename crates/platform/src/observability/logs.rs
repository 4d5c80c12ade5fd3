//! Logging and tracing setup: build a subscriber with a swappable sink, then install it once.
//!
//! One subscriber carries both: JSON log lines (or pretty ones) and the
//! `tracing-opentelemetry` layer that turns spans into OpenTelemetry spans. Every JSON
//! line written inside a span carries the OpenTelemetry `trace_id` and `span_id` of the
//! innermost span it was written in (lowercase hex, as Jaeger shows them), so a log line
//! leads to its trace. A query's span (`database::QUERY_SPAN`) is left out of the lines:
//! a line inside one names the RPC's span and carries the query's ids.

use std::{
    fmt::{self, Write as _},
    num::NonZeroUsize,
    sync::{Arc, Mutex, OnceLock},
};

use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::SdkTracer;
use prometheus::{
    IntCounter,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use tracing::{
    Event, Level, Subscriber,
    field::{Field, Visit},
    span::Record,
};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    field::RecordFields,
    filter::{FilterExt, LevelFilter, Targets, filter_fn},
    fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter, format::Writer},
    layer::{Filter, SubscriberExt},
    registry::LookupSpan,
};

use crate::{
    config::{LogConfig, LogFormat},
    database,
    observability::traces::{TelemetryConfig, Tracing},
};

/// Builds the subscriber: `RUST_LOG` if set, else `config.level`, as the filter of the
/// log lines; spans at INFO and above, with the events at WARN and above inside them as
/// span events, exported through `tracer` (see [`crate::observability::traces::Tracing`]) whatever that
/// filter says; JSON lines (event fields at
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
            log_filter(&directives).map_err(|e| format!("invalid RUST_LOG: {e}"))
        }
        _ => log_filter(&config.level).map_err(|e| format!("invalid config key `log.level`: {e}")),
    }?;
    // Each layer filters for itself. Traces keep spans at INFO and above whatever the log
    // level, so `log.level = "warn"` quiets the logs without emptying Jaeger; the log
    // layer also sees INFO spans it would filter out, so a WARN line inside an RPC still
    // names its span.
    //
    // Events become span events (the "logs" of a span in Jaeger) at WARN and above only:
    // an INFO line such as "rpc finished" repeats what its span already holds, and
    // turning it into a span event (its fields copied into attributes) was a tenth of
    // the tracing cost of a call (docs/perf.md, section 15). Every line still reaches the
    // logs, with the span's trace_id.
    //
    // Per span, only what the code sets: no `code.*` location (every RPC span would name
    // the observe layer's line), no `thread.*`, no `target`, no busy/idle times (two clock
    // reads and an extension lookup on every enter and exit of every span). Measured in
    // docs/perf.md.
    let traces = OpenTelemetryLayer::new(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(
            filter_fn(|metadata| *metadata.level() <= if metadata.is_span() { Level::INFO } else { Level::WARN })
                .with_max_level_hint(LevelFilter::INFO),
        );
    // A query's span is left out of the logs, so its fields are not written out as JSON
    // for every query (a tenth of a GetUser's instructions went to formatting the fields
    // of the two spans it makes). Queries hold their span without entering it
    // (`database::InSpan`), so a line written during one is the RPC's, ids included; one
    // inside an entered query span names the RPC's span and carries the query's ids.
    let logs = filter
        .or(filter_fn(|metadata| metadata.is_span() && *metadata.level() <= Level::INFO))
        .and(filter_fn(|metadata| !(metadata.is_span() && metadata.name() == database::QUERY_SPAN)));
    let registry = Registry::default().with(traces);
    Ok(match config.format {
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonMembers)
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

/// The log lines' filter for `directives` (`RUST_LOG` syntax, e.g. `info,sqlx=warn`): a
/// [`Targets`] filter when they name only targets and levels, which keeps no state per
/// span; else (span or field directives such as `[grpc.server{rpc.method=GetUser}]=debug`,
/// or text `Targets` refuses) an [`EnvFilter`], which takes a lock on every enter and
/// exit of every span to know which spans it matches (docs/perf.md, section 15).
///
/// # Errors
/// When `directives` is not valid `EnvFilter` syntax; the message is `EnvFilter`'s.
fn log_filter<S>(directives: &str) -> Result<Box<dyn Filter<S> + Send + Sync>, String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // `Targets` would read `[span]=level` as a target named "[span]": only `EnvFilter`
    // knows span and field directives, which all start with `[`.
    if !directives.contains('[')
        && let Ok(targets) = directives.parse::<Targets>()
    {
        return Ok(FilterExt::boxed(targets));
    }
    EnvFilter::try_new(directives).map(FilterExt::boxed).map_err(|e| e.to_string())
}

/// Installs `subscriber` as the global default. Call once, at start-up.
///
/// # Panics
/// If a global subscriber was already installed: that is a start-up bug, not input.
pub fn init(subscriber: Box<dyn Subscriber + Send + Sync>) {
    tracing::subscriber::set_global_default(subscriber).expect("telemetry::init is called once");
}

/// A service's start-up of logs and traces: starts span export per `traces`, then
/// installs the JSON (or pretty) log subscriber carrying those spans, writing to stdout
/// through [`line_writer`]. Call once; call [`Telemetry::shutdown`] on the result before
/// exiting, to flush spans and lines.
///
/// # Errors
/// A one-line message naming the bad key (`telemetry.*` or `log.level`).
pub fn start(log: &LogConfig, traces: &TelemetryConfig) -> Result<Telemetry, String> {
    let tracing = Tracing::start(traces)?;
    let (writer, lines) = line_writer(std::io::stdout(), log.buffered_lines);
    let _ = DROPPED_LINES.set(writer.error_counter());
    init(subscriber(log, tracing.tracer(), writer)?);
    Ok(Telemetry { tracing, lines })
}

/// What [`start`] started: span export and the log writer thread.
pub struct Telemetry {
    tracing: Tracing,
    lines: WorkerGuard,
}

impl Telemetry {
    /// Exports the spans still queued (see [`Tracing::shutdown`]), then writes the log
    /// lines still queued and stops the writer thread. Blocks for at most about the
    /// export timeout plus one second.
    pub async fn shutdown(self) {
        self.tracing.shutdown().await;
        let lines = self.lines;
        // The guard's drop blocks until the writer thread has written what is queued.
        let _ = tokio::task::spawn_blocking(move || drop(lines)).await;
    }
}

/// Log lines leave the calling thread through a bounded queue (`buffered_lines` lines) to
/// a writer thread, which writes them to `sink` through a 64 KiB buffer: one `write`
/// per burst of lines instead of one per line, and a slow or blocked `sink` (a full
/// pipe to the container runtime) never stalls a request. When the queue is full a
/// line is dropped and counted (see [`collector`]). The price: lines still queued when
/// the process is killed (`kill -9`, the OOM killer) are lost; at the rates we log the
/// queue is near empty.
///
/// Returns the writer for [`subscriber`] and the guard that, dropped, writes what is
/// queued and stops the thread (up to one second).
pub fn line_writer<W: std::io::Write + Send + 'static>(
    sink: W,
    buffered_lines: NonZeroUsize,
) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(buffered_lines.get())
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, sink))
}

/// The dropped-line counter of the writer [`start`] installed.
static DROPPED_LINES: OnceLock<ErrorCounter> = OnceLock::new();

/// `log_lines_dropped_total`, a counter: log lines dropped because the writer's queue
/// was full (see [`line_writer`]), for the app to add to its registry. It reads the
/// writer [`start`] installed; 0 when none was (tests).
pub fn collector() -> DroppedLines {
    DroppedLines::new(DROPPED_LINES.get().cloned())
}

/// The `log_lines_dropped_total` family; see [`collector`].
#[derive(Clone)]
pub struct DroppedLines {
    source: Option<ErrorCounter>,
    counter: IntCounter,
    // Scrapes may run at once; the counter follows the source under this lock.
    follow: Arc<Mutex<()>>,
}

impl DroppedLines {
    fn new(source: Option<ErrorCounter>) -> Self {
        let counter = IntCounter::new(
            "log_lines_dropped_total",
            "Log lines dropped because the queue to the log writer thread was full (log.buffered_lines).",
        )
        .expect("a valid metric name");
        Self { source, counter, follow: Arc::default() }
    }
}

impl Collector for DroppedLines {
    fn desc(&self) -> Vec<&Desc> {
        self.counter.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some(source) = &self.source {
            let _follow = self.follow.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let dropped = u64::try_from(source.dropped_lines()).unwrap_or(u64::MAX);
            self.counter.inc_by(dropped.saturating_sub(self.counter.get()));
        }
        self.counter.collect()
    }
}

/// For tests: logs to stdout when `TEST_LOG` is set, else nowhere; spans get ids but
/// are not exported. Safe to call from every test; only the first call installs.
pub fn init_for_tests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let config = LogConfig { level: "info".to_owned(), ..LogConfig::default() };
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

/// One JSON object per event; see [`subscriber`]. The line is written as it goes, member
/// by member, into one buffer: no map of fields is built, and the current span's fields
/// are copied in as [`JsonMembers`] stored them, not parsed again.
struct JsonLines;

impl<S> FormatEvent<S, JsonMembers> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonMembers>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // RFC 3339 in UTC with microseconds, as tracing-subscriber's `SystemTime` writes it;
        // humantime's writer costs a sixth of that one's.
        let mut timestamp = String::with_capacity(32);
        write!(timestamp, "{}", humantime::format_rfc3339_micros(std::time::SystemTime::now()))?;
        let mut line = Members::default();
        line.put_raw("timestamp", &timestamp);
        line.put_raw("level", event.metadata().level().as_str());
        event.record(&mut line);
        line.put("target", event.metadata().target());
        if let Some(span) = ctx.lookup_current() {
            line.key("span");
            line.text.push(b'{');
            if let Some(fields) = span.extensions().get::<FormattedFields<JsonMembers>>()
                && !fields.fields.is_empty()
            {
                line.text.extend_from_slice(fields.fields.as_bytes());
                line.text.push(b',');
            }
            line.text.extend_from_slice(b"\"name\":");
            line.string(span.name());
            line.text.push(b'}');
            // Entering a span makes its OpenTelemetry context the current one (the
            // OpenTelemetry layer's context activation), so the ids are those of the span
            // this event is in. (The dispatcher cannot be asked here: it is busy with this event.)
            let context = opentelemetry::Context::current();
            let span_context = context.span().span_context().clone();
            if span_context.is_valid() {
                line.put_hex("trace_id", &span_context.trace_id().to_bytes());
                line.put_hex("span_id", &span_context.span_id().to_bytes());
            }
        }
        writer.write_char('{')?;
        writer.write_str(line.as_str()?)?;
        writer.write_str("}\n")
    }
}

/// How span fields are stored for [`JsonLines`]: JSON object members without the braces
/// (`"key":value,"key":value`), secrets redacted as in event fields. A field recorded
/// later (`Span::record`) is appended, so the stored text is never parsed and written
/// again (tracing-subscriber's `JsonFields` does that on every record); a key recorded
/// twice appears twice, and JSON readers keep the last.
struct JsonMembers;

impl<'w> FormatFields<'w> for JsonMembers {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut members = Members::default();
        fields.record(&mut members);
        writer.write_str(members.as_str()?)
    }

    fn add_fields(&self, current: &'w mut FormattedFields<Self>, fields: &Record<'_>) -> fmt::Result {
        let mut members = Members { text: std::mem::take(&mut current.fields).into_bytes() };
        fields.record(&mut members);
        current.fields = String::from_utf8(members.text).map_err(|_| fmt::Error)?;
        Ok(())
    }
}

/// JSON object members being written, comma-separated, without the braces; also the
/// [`Visit`]or that writes each field as a member, redacting secrets by name.
#[derive(Default)]
struct Members {
    text: Vec<u8>,
}

impl Members {
    /// The members written so far, as text (serde_json and this type write only UTF-8).
    fn as_str(&self) -> Result<&str, fmt::Error> {
        std::str::from_utf8(&self.text).map_err(|_| fmt::Error)
    }

    /// Starts the member `key`: a comma if one came before, then `"key":`.
    fn key(&mut self, key: &str) {
        if !self.text.is_empty() {
            self.text.push(b',');
        }
        self.string(key);
        self.text.push(b':');
    }

    /// `value` as a JSON string, escaped.
    fn string(&mut self, value: &str) {
        // serde_json's escaping; writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.text, value);
    }

    /// A member whose value is text.
    fn put(&mut self, key: &str, value: &str) {
        self.key(key);
        self.string(value);
    }

    /// A member of the formatter's own whose key and value need no escaping (a fixed
    /// key; a timestamp, a level).
    fn put_raw(&mut self, key: &'static str, value: &str) {
        if !self.text.is_empty() {
            self.text.push(b',');
        }
        for part in [b"\"", key.as_bytes(), b"\":\"", value.as_bytes(), b"\""] {
            self.text.extend_from_slice(part);
        }
    }

    /// A member of the formatter's own whose value is `bytes` (at most 16: a trace or span
    /// id) in lowercase hex, as W3C Trace Context writes it, with no string formatted on
    /// the way.
    fn put_hex(&mut self, key: &'static str, bytes: &[u8]) {
        let mut digits = [0; 32];
        if let Some(digits) = digits.get_mut(..bytes.len() * 2)
            && hex::encode_to_slice(bytes, digits).is_ok()
            && let Ok(digits) = std::str::from_utf8(digits)
        {
            self.put_raw(key, digits);
        }
    }

    /// A field, written as `value` unless its name says it holds a secret (`password`,
    /// `token`, `secret`, `authorization`): then as `"[redacted]"`. `otel.*` fields are
    /// left out.
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Self)) {
        let name = field.name();
        // `otel.name`, `otel.kind`, `otel.status_code`: what the OpenTelemetry layer
        // makes of a span (its name repeats `rpc.service`/`rpc.method`), not data; left
        // out, they cost nothing to write for every span.
        if name.starts_with("otel.") {
            return;
        }
        self.key(name);
        if is_secret(name) {
            self.text.extend_from_slice(b"\"[redacted]\"");
        } else {
            value(self);
        }
    }

    /// A number or boolean, as serde_json writes it (a non-finite float as `null`).
    fn scalar(&mut self, field: &Field, value: impl serde::Serialize) {
        self.field(field, |this| {
            let _ = serde_json::to_writer(&mut this.text, &value);
        });
    }
}

/// Whether a field's name says it holds a secret: it contains `password`, `token`,
/// `secret` or `authorization`, in any case. Runs for every field of every line and
/// span, so each position is ruled out by its first letter (the four words start
/// with four different ones) before any word is compared.
fn is_secret(name: &str) -> bool {
    let name = name.as_bytes();
    (0..name.len()).any(|at| {
        let word: &[u8] = match name[at].to_ascii_lowercase() {
            b'p' => b"password",
            b't' => b"token",
            b's' => b"secret",
            b'a' => b"authorization",
            _ => return false,
        };
        name[at..].get(..word.len()).is_some_and(|candidate| candidate.eq_ignore_ascii_case(word))
    })
}

impl Visit for Members {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.scalar(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.scalar(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.scalar(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.scalar(field, value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |this| this.string(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |this| this.string(&format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use serde_json::Value;

    use super::*;
    use crate::support::redact::captured::Logs;

    /// Runs `log` under the JSON subscriber at `level`; returns what it wrote.
    fn logged(level: &str, log: impl FnOnce()) -> String {
        let sink = Logs::default();
        let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder().build().tracer("test");
        let config = LogConfig { level: level.to_owned(), ..LogConfig::default() };
        let writer = sink.clone();
        let subscriber = subscriber(&config, tracer, move || writer.clone()).expect("a valid level");
        tracing::subscriber::with_default(subscriber, log);
        sink.text()
    }

    fn lines(text: &str) -> Vec<Value> {
        text.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect()
    }

    #[test]
    fn a_line_inside_a_span_carries_its_trace_and_span_ids_and_secrets_are_redacted() {
        let text = logged("info", || {
            tracing::info!("outside");
            let span = tracing::info_span!("work", job = "a");
            let _entered = span.enter();
            tracing::info!(password = "hunter2", count = 3, "inside");
        });
        let lines = lines(&text);
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
        // RFC 3339, UTC, microseconds: `2026-12-06T12:24:48.062359Z`.
        let timestamp = inside["timestamp"].as_str().expect("a timestamp");
        assert!(timestamp.len() == 27 && timestamp.ends_with('Z'), "{timestamp}");
        let at = humantime::parse_rfc3339(timestamp).expect("RFC 3339");
        assert!(at.elapsed().is_ok_and(|age| age < std::time::Duration::from_secs(60)), "{timestamp} is now");
    }

    #[test]
    fn span_fields_recorded_later_reach_the_line_escaped_with_secrets_redacted() {
        let text = logged("info", || {
            let span = tracing::info_span!(
                "rpc",
                status = tracing::field::Empty,
                api_token = "t0ken-value",
                note = "a \"quoted\"\nline",
            );
            span.record("status", 5);
            let _entered = span.enter();
            tracing::info!(ratio = 0.5, "done");
        });
        assert!(!text.contains("t0ken-value"), "{text}");
        let lines = lines(&text);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let span = &lines[0]["span"];
        assert_eq!(span["status"], 5, "{span}");
        assert_eq!(span["api_token"], "[redacted]");
        assert_eq!(span["note"], "a \"quoted\"\nline");
        assert_eq!(span["name"], "rpc");
        assert_eq!(lines[0]["ratio"], 0.5);
        assert_eq!(lines[0]["level"], "INFO");
    }

    #[test]
    fn a_field_is_secret_when_its_name_holds_a_secret_word_in_any_case_at_any_place() {
        for name in ["password", "Authorization", "api_token", "x.PASSWORD.hash", "client_Secret", "tokens"] {
            assert!(is_secret(name), "{name}");
        }
        for name in ["", "rpc.method", "tok", "secre", "passwor", "authorisation", "s", "ta", "grpc.status_code"] {
            assert!(!is_secret(name), "{name}");
        }
    }

    #[test]
    fn a_line_inside_a_query_names_the_rpc_span_and_carries_the_query_span_id() {
        let text = logged("info", || {
            let rpc = tracing::info_span!("rpc", method = "GetUser");
            let _rpc = rpc.enter();
            tracing::info!("before");
            let query = tracing::info_span!(database::QUERY_SPAN, db.operation = "SELECT");
            let _query = query.enter();
            tracing::warn!("slow");
        });
        let lines = lines(&text);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let (before, slow) = (&lines[0], &lines[1]);
        assert_eq!(slow["span"]["name"], "rpc", "{slow}");
        assert_eq!(slow["span"]["method"], "GetUser");
        assert!(slow["span"].get("db.operation").is_none(), "{slow}");
        assert_eq!(slow["trace_id"], before["trace_id"], "one trace");
        let span_id = slow["span_id"].as_str().expect("a span id");
        assert_ne!(span_id, before["span_id"].as_str().expect("a span id"), "the query's own span");
    }

    #[test]
    fn a_line_written_while_a_query_holds_its_span_is_the_rpcs_with_its_ids() {
        use crate::database::InSpan;
        let text = logged("info", || {
            let rpc = tracing::info_span!("rpc", method = "GetUser");
            let _rpc = rpc.enter();
            tracing::info!("before");
            let query = tracing::info_span!(database::QUERY_SPAN, db.operation = "SELECT");
            futures::executor::block_on(async { tracing::warn!("slow") }.in_span(query));
        });
        let lines = lines(&text);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let (before, slow) = (&lines[0], &lines[1]);
        assert_eq!(slow["span"]["name"], "rpc", "{slow}");
        assert_eq!(slow["trace_id"], before["trace_id"]);
        assert_eq!(slow["span_id"], before["span_id"], "the query's span is held, not entered");
    }

    #[test]
    fn the_opentelemetry_layers_fields_stay_out_of_the_line_and_the_rest_stays_in() {
        let text = logged("info", || {
            let span = tracing::info_span!("grpc.server", otel.name = "a.B/C", otel.kind = "server", rpc.method = "C");
            let _entered = span.enter();
            tracing::info!(otel.status_code = "ERROR", grpc.code = "OK", "rpc finished");
        });
        let lines = lines(&text);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(!text.contains("otel."), "{text}");
        assert_eq!(lines[0]["span"]["rpc.method"], "C", "{}", lines[0]);
        assert_eq!(lines[0]["grpc.code"], "OK");
        assert_eq!(lines[0]["message"], "rpc finished");
    }

    #[test]
    fn ids_are_written_in_lowercase_hex_with_every_leading_zero() {
        let mut members = Members::default();
        members.put_raw("level", "INFO");
        members.put_hex("span_id", &[0x00, 0xab, 0x0f, 0x90]);
        assert_eq!(members.as_str().expect("UTF-8"), r#""level":"INFO","span_id":"00ab0f90""#);
        let id = opentelemetry::trace::TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("an id");
        let mut members = Members::default();
        members.put_hex("trace_id", &id.to_bytes());
        assert_eq!(members.as_str().expect("UTF-8"), format!(r#""trace_id":"{id}""#));
    }

    #[test]
    fn a_quieter_log_level_keeps_the_spans_so_a_warning_still_carries_its_trace_id() {
        let text = logged("warn", || {
            let span = tracing::info_span!("rpc", method = "CreateOrder");
            let _entered = span.enter();
            tracing::info!("filtered out");
            tracing::warn!("kept");
        });
        let lines = lines(&text);
        assert_eq!(lines.len(), 1, "only the warning is logged: {lines:?}");
        assert_eq!(lines[0]["message"], "kept");
        assert_eq!(lines[0]["span"]["name"], "rpc");
        assert_eq!(lines[0]["trace_id"].as_str().map(str::len), Some(32), "the span is traced: {}", lines[0]);
    }

    /// Keeps every span that ends, as the exporter would get it.
    #[derive(Debug, Clone, Default)]
    struct Ended(Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanProcessor for Ended {
        fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

        fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
            self.0.lock().expect("not poisoned").push(span);
        }

        fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
            Ok(())
        }

        fn shutdown_with_timeout(&self, _: std::time::Duration) -> opentelemetry_sdk::error::OTelSdkResult {
            Ok(())
        }
    }

    #[test]
    fn an_info_line_stays_out_of_its_span_while_a_warning_becomes_a_span_event() {
        let ended = Ended::default();
        let provider =
            opentelemetry_sdk::trace::SdkTracerProvider::builder().with_span_processor(ended.clone()).build();
        let config = LogConfig { level: "info".to_owned(), ..LogConfig::default() };
        let sink = Logs::default();
        let writer = sink.clone();
        let subscriber = subscriber(&config, provider.tracer("test"), move || writer.clone()).expect("a valid level");
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc");
            let _entered = span.enter();
            tracing::info!("rpc finished");
            tracing::warn!(reason = "slow", "retrying");
        });
        assert_eq!(lines(&sink.text()).len(), 2, "both lines are logged");
        let spans = ended.0.lock().expect("not poisoned");
        assert_eq!(spans.len(), 1);
        let events: Vec<&str> = spans[0].events.iter().map(|event| event.name.as_ref()).collect();
        assert_eq!(events, ["retrying"]);
    }

    #[test]
    fn a_span_directive_still_filters_lines_by_the_span_they_are_in() {
        let text = logged("warn,[rpc]=info", || {
            tracing::info!("outside, filtered out");
            let span = tracing::info_span!("rpc");
            let _entered = span.enter();
            tracing::info!("inside, kept");
        });
        let lines = lines(&text);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["message"], "inside, kept");
    }

    #[test]
    fn a_target_directive_quiets_that_target_only() {
        let text = logged("info,noisy=warn", || {
            tracing::info!(target: "noisy::part", "filtered out");
            tracing::warn!(target: "noisy::part", "kept");
            tracing::info!(target: "other", "kept too");
        });
        let messages: Vec<Value> = lines(&text).into_iter().map(|line| line["message"].clone()).collect();
        assert_eq!(messages, ["kept", "kept too"]);
    }

    #[test]
    fn a_malformed_level_is_refused_naming_the_key() {
        let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder().build().tracer("test");
        let config = LogConfig { level: "info,[unclosed=debug".to_owned(), ..LogConfig::default() };
        let error = subscriber(&config, tracer, std::io::sink).err().expect("not a filter");
        assert!(error.contains("log.level"), "{error}");
    }

    /// A sink whose first `write` says so on `entered`, then blocks until `release`
    /// sends; it keeps what it is given.
    struct BlockedSink {
        entered: std::sync::mpsc::Sender<()>,
        release: Option<std::sync::mpsc::Receiver<()>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl std::io::Write for BlockedSink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(release) = self.release.take() {
                let _ = self.entered.send(());
                let _ = release.recv();
            }
            self.written.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn tracer() -> SdkTracer {
        opentelemetry_sdk::trace::SdkTracerProvider::builder().build().tracer("test")
    }

    #[test]
    fn a_blocked_stdout_costs_lines_not_callers_and_the_dropped_lines_are_counted() {
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = BlockedSink { entered: entered_tx, release: Some(release_rx), written: written.clone() };
        let (writer, guard) = line_writer(sink, NonZeroUsize::new(4).expect("not zero"));
        let metrics = crate::observability::metrics::Metrics::new();
        metrics.register(DroppedLines::new(Some(writer.error_counter()))).expect("registered once");
        let subscriber = subscriber(&LogConfig::default(), tracer(), writer).expect("a valid level");

        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(n = 0, "first");
            entered.recv().expect("the writer thread writes the first line and blocks");
            // The writer is stuck: 4 lines fit in its queue, the other 96 are dropped, and
            // none of the 100 calls waits.
            for n in 1..=100 {
                tracing::info!(n, "while blocked");
            }
        });

        assert!(metrics.render().contains("log_lines_dropped_total 96\n"), "{}", metrics.render());
        release.send(()).expect("the writer thread waits");
        drop(guard);
        let written = String::from_utf8(written.lock().expect("not poisoned").clone()).expect("UTF-8");
        let numbers: Vec<u64> = lines(&written).iter().filter_map(|line| line["n"].as_u64()).collect();
        assert_eq!(numbers, [0, 1, 2, 3, 4], "the first line and the 4 queued ones, in order");
    }

    #[test]
    fn the_log_lines_still_queued_are_written_when_the_guard_is_dropped() {
        let sink = Logs::default();
        let (writer, guard) = line_writer(sink.clone(), crate::config::DEFAULT_BUFFERED_LOG_LINES);
        let subscriber = subscriber(&LogConfig::default(), tracer(), writer).expect("a valid level");
        tracing::subscriber::with_default(subscriber, || {
            for n in 0..1_000 {
                tracing::info!(n, "line");
            }
        });
        drop(guard);
        assert_eq!(lines(&sink.text()).len(), 1_000);
    }

    #[test]
    fn without_a_log_writer_the_dropped_lines_counter_reads_zero() {
        let metrics = crate::observability::metrics::Metrics::new();
        metrics.register(DroppedLines::new(None)).expect("registered once");
        assert!(metrics.render().contains("log_lines_dropped_total 0\n"), "{}", metrics.render());
    }
}
