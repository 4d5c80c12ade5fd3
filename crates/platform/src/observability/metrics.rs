//! Prometheus metrics: one registry per app and the go-grpc-middleware gRPC families.
//!
//! Names and labels are those of go-grpc-middleware's Prometheus interceptors
//! (`grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}`, ...), so
//! dashboards built for Go services work unchanged, plus one label of ours,
//! `rpc_protocol` (`grpc`, `grpc_web` or `connect`: the `rpc.protocol` of the call's
//! span and log line), which a query that sums it away does not see. Each [`Metrics`] owns its registry
//! (no process-global recorder): tests run several services in one process and each
//! must count only its own calls. Other modules export their own families as a
//! `collector()` (linkerd's way) and the app adds them with [`Metrics::register`], so
//! this module need not import theirs. `admin` serves the registry over HTTP.

use std::sync::{Arc, OnceLock};

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder, core::Collector};
use tonic::Code;

/// A service's metric registry. Cloning is cheap; clones share the registry.
#[derive(Clone, Default)]
pub struct Metrics {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    registry: Registry,
    server: OnceLock<GrpcMetrics>,
    client: OnceLock<GrpcMetrics>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `collector` (a `prometheus` `IntCounterVec`, `HistogramVec`,
    /// `PullingGauge`, or any `Collector`) and returns it for recording: how other
    /// modules (the resilient client, the database pool) add their families.
    ///
    /// # Errors
    /// When a family of that name is already registered with other labels or help, or
    /// the name is invalid.
    pub fn register<C: Collector + Clone + 'static>(&self, collector: C) -> prometheus::Result<C> {
        self.shared.registry.register(Box::new(collector.clone()))?;
        Ok(collector)
    }

    /// The server-side gRPC families (`grpc_server_*`), registered on first use.
    pub fn grpc_server(&self) -> GrpcMetrics {
        self.shared.server.get_or_init(|| GrpcMetrics::register(self, "server")).clone()
    }

    /// The client-side gRPC families (`grpc_client_*`), registered on first use and
    /// shared by every client of this service (the `grpc_service` label tells them apart).
    pub fn grpc_client(&self) -> GrpcMetrics {
        self.shared.client.get_or_init(|| GrpcMetrics::register(self, "client")).clone()
    }

    /// Every family in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec fails only on families the registry already rejected.
        let _ = TextEncoder::new().encode(&self.shared.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// go-grpc-middleware's families for one side (server or client) of gRPC calls.
#[derive(Clone)]
pub struct GrpcMetrics {
    started: IntCounterVec,
    handled: IntCounterVec,
    handling: HistogramVec,
}

impl GrpcMetrics {
    fn register(metrics: &Metrics, side: &str) -> Self {
        let labels = ["grpc_type", "grpc_service", "grpc_method", "rpc_protocol"];
        let with_code = ["grpc_type", "grpc_service", "grpc_method", "rpc_protocol", "grpc_code"];
        let (started_help, handled_help, handling_help) = if side == "server" {
            (
                "Total number of RPCs started on the server.",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            )
        } else {
            (
                "Total number of RPCs started on the client.",
                "Total number of RPCs completed by the client, regardless of success or failure.",
                "Histogram of response latency (seconds) of the gRPC until it is finished by the application.",
            )
        };
        // The names and labels are fixed and valid, so creating these cannot fail; a
        // second registry per Metrics is impossible (OnceLock), so neither can registering.
        let started = IntCounterVec::new(Opts::new(format!("grpc_{side}_started_total"), started_help), &labels)
            .expect("valid metric");
        let handled = IntCounterVec::new(Opts::new(format!("grpc_{side}_handled_total"), handled_help), &with_code)
            .expect("valid metric");
        // go-grpc-middleware's default buckets (prometheus.DefBuckets), in seconds.
        let handling =
            HistogramVec::new(HistogramOpts::new(format!("grpc_{side}_handling_seconds"), handling_help), &labels)
                .expect("valid metric");
        for collector in
            [Box::new(started.clone()) as Box<dyn Collector>, Box::new(handled.clone()), Box::new(handling.clone())]
        {
            if let Err(error) = metrics.shared.registry.register(collector) {
                tracing::error!(error = %error, side, "gRPC metric families not registered");
            }
        }
        Self { started, handled, handling }
    }

    /// Counts the start of a call of `method` that arrived in `protocol` (the
    /// `rpc_protocol` label: `grpc`, `grpc_web` or `connect`, as `connect::Protocol`
    /// names them; outgoing calls are `grpc`).
    pub fn started(&self, method: &MethodLabels, protocol: &'static str) {
        let [kind, service, name] = method.values();
        self.started.with_label_values(&[kind, service, name, protocol]).inc();
    }

    /// Counts the end of a call of `method` in `protocol` with `code`, which took `seconds`.
    pub fn handled(&self, method: &MethodLabels, protocol: &'static str, code: Code, seconds: f64) {
        let [kind, service, name] = method.values();
        self.handled.with_label_values(&[kind, service, name, protocol, code_name(code)]).inc();
        self.handling.with_label_values(&[kind, service, name, protocol]).observe(seconds);
    }
}

/// The `grpc_type`, `grpc_service` and `grpc_method` labels of one RPC, as
/// `platform::methods` reads them from the descriptors (a fixed `unknown` for a method
/// they do not declare, so label values come from a bounded set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodLabels {
    /// `unary`, `client_stream`, `server_stream`, `bidi_stream`, or `unknown`.
    pub kind: &'static str,
    /// Fully qualified service, e.g. `orders.v1.OrderService`.
    pub service: String,
    /// Method, e.g. `CreateOrder`.
    pub method: String,
}

impl MethodLabels {
    fn values(&self) -> [&str; 3] {
        [self.kind, &self.service, &self.method]
    }
}

/// The name grpc-go gives `code` (`codes.Code.String()`): the `grpc_code` label value.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_calls_render_with_go_grpc_middleware_names_and_labels() {
        let metrics = Metrics::new();
        let server = metrics.grpc_server();
        let method = MethodLabels { kind: "unary", service: "users.v1.UserService".into(), method: "GetUser".into() };
        server.started(&method, "connect");
        server.handled(&method, "connect", Code::NotFound, 0.002);
        let text = metrics.render();
        assert!(text.contains("# TYPE grpc_server_handled_total counter"), "{text}");
        assert!(
            text.contains(
                r#"grpc_server_handled_total{grpc_code="NotFound",grpc_method="GetUser",grpc_service="users.v1.UserService",grpc_type="unary",rpc_protocol="connect"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("grpc_server_handling_seconds_bucket{"), "{text}");
        assert!(!text.contains("grpc_client_"), "client families appear only once used: {text}");
    }
}
