//! OpenTelemetry traces: the tracer provider (OTLP over gRPC, parent-based sampling) and W3C propagation.
//!
//! Spans are `tracing` spans; `tracing-opentelemetry` (installed by [`crate::observability::logs`])
//! turns them into OpenTelemetry spans with this module's tracer. The provider always
//! exists, so every request gets real trace and span ids for the logs and for
//! propagation; it exports only when `telemetry.otlp_endpoint` is set.

use std::{sync::LazyLock, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapCompositePropagator, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::{Sampler, SdkTracer, SdkTracerProvider},
};
use serde::{Deserialize, Serialize};

/// Where and how traces are exported.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector, e.g. `http://jaeger:4317`. `None` (the default) exports
    /// nothing; trace ids are still made, logged and propagated. Checked at load: an
    /// absolute URI with a scheme and a host.
    #[serde(default, deserialize_with = "otlp_endpoint")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of every span, e.g. `orders`.
    pub service_name: String,
    /// Share of new traces (those without a sampled parent) that are recorded and
    /// exported, 0.0 to 1.0. A request whose `traceparent` says "sampled" is always
    /// recorded, one that says "not sampled" never is (parent-based sampling).
    /// Checked at load.
    #[serde(deserialize_with = "sampling_ratio")]
    pub sampling_ratio: f64,
    /// Longest one export may take, e.g. `"3s"`; also bounds the flush at shutdown.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

/// `telemetry.otlp_endpoint` at load: empty or unset is `None`, else an absolute URI
/// with a scheme and a host (the text is not quoted back: it may hold credentials).
fn otlp_endpoint<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let endpoint = Option::<String>::deserialize(deserializer)?.filter(|e| !e.is_empty());
    if let Some(text) = &endpoint {
        let uri = text.parse::<http::Uri>().ok().filter(|uri| uri.scheme().is_some() && uri.authority().is_some());
        if uri.is_none() {
            return Err(serde::de::Error::custom("expected an http://host:port address, e.g. http://jaeger:4317"));
        }
    }
    Ok(endpoint)
}

/// `telemetry.sampling_ratio` at load: a share, 0.0 to 1.0.
fn sampling_ratio<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let ratio = f64::deserialize(deserializer)?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(serde::de::Error::custom(format!("{ratio} is not between 0 and 1")));
    }
    Ok(ratio)
}

impl TelemetryConfig {
    /// No export, everything sampled, for the service `service_name`.
    pub fn for_service(service_name: impl Into<String>) -> Self {
        Self {
            otlp_endpoint: None,
            service_name: service_name.into(),
            sampling_ratio: 1.0,
            export_timeout: Duration::from_secs(3),
        }
    }
}

/// The running trace pipeline: hands out the tracer and flushes on [`Tracing::shutdown`].
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Builds the tracer provider from `config`, and installs the W3C trace-context +
    /// baggage propagator as the global one. Must run inside a tokio runtime when
    /// `otlp_endpoint` is set (the exporter's gRPC channel lives there).
    ///
    /// Spans are queued and exported in batches from a background thread: a slow or
    /// absent collector never blocks or fails a request; when the queue is full, spans
    /// are dropped.
    ///
    /// # Errors
    /// When `sampling_ratio` is outside 0..=1 or the endpoint is not a valid URI; the
    /// message names the key.
    pub fn start(config: &TelemetryConfig) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&config.sampling_ratio) {
            return Err(format!(
                "invalid config key `telemetry.sampling_ratio`: {} is not between 0 and 1",
                config.sampling_ratio
            ));
        }
        let resource = Resource::builder_empty().with_service_name(config.service_name.clone()).build();
        let mut builder = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio))))
            .with_resource(resource);
        if let Some(endpoint) = &config.otlp_endpoint {
            if endpoint.parse::<http::Uri>().map(|uri| uri.scheme().is_none()).unwrap_or(true) {
                return Err(format!(
                    "invalid config key `telemetry.otlp_endpoint`: {endpoint:?} is not an http://host:port address"
                ));
            }
            let exporter = SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(config.export_timeout)
                .build()
                .map_err(|e| format!("invalid config key `telemetry.otlp_endpoint`: {e}"))?;
            builder = builder.with_batch_exporter(exporter);
        }
        opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
        Ok(Self { provider: builder.build() })
    }

    /// The tracer for `tracing-opentelemetry`'s layer.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("platform")
    }

    /// Exports the spans still queued, then stops the exporter. Call once, after the
    /// server has stopped. Blocks for at most about the export timeout.
    pub async fn shutdown(self) {
        let provider = self.provider;
        // The SDK's shutdown blocks its caller until the batch thread is done.
        let result = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = result {
            tracing::warn!(error = %error, "trace export did not flush at shutdown");
        }
    }
}

/// W3C `traceparent`/`tracestate` and `baggage`, the formats otelgrpc speaks.
static PROPAGATOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(|| {
    TextMapCompositePropagator::new(vec![Box::new(TraceContextPropagator::new()), Box::new(BaggagePropagator::new())])
});

/// The trace context and baggage a request carries in its headers (an empty
/// context when it carries none or they do not parse).
pub fn extract(headers: &HeaderMap) -> Context {
    PROPAGATOR.extract(&HeaderExtractor(headers))
}

/// Writes `context`'s trace context and baggage into `headers`.
pub fn inject(context: &Context, headers: &mut HeaderMap) {
    PROPAGATOR.inject_context(context, &mut HeaderInjector(headers));
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    #[test]
    fn a_traceparent_header_survives_extract_then_inject() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut incoming = HeaderMap::new();
        incoming.insert("traceparent", HeaderValue::from_static(traceparent));
        incoming.insert("baggage", HeaderValue::from_static("tenant=acme"));
        let context = extract(&incoming);
        assert_eq!(context.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let mut outgoing = HeaderMap::new();
        inject(&context, &mut outgoing);
        assert_eq!(outgoing["traceparent"], traceparent);
        assert_eq!(outgoing["baggage"], "tenant=acme");
    }

    #[test]
    fn a_sampling_ratio_above_one_names_the_key() {
        let config = TelemetryConfig { sampling_ratio: 1.5, ..TelemetryConfig::for_service("test") };
        let error = Tracing::start(&config).err().expect("1.5 is not a ratio");
        assert!(error.contains("telemetry.sampling_ratio"), "{error}");
    }
}
