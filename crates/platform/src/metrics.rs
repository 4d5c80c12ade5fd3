//! Prometheus metrics: one registry per app and the go-grpc-middleware gRPC families.
//!
//! Names and labels are those of go-grpc-middleware's Prometheus interceptors
//! (`grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}`, ...), so
//! dashboards built for Go services work unchanged. Each [`Metrics`] owns its registry
//! (no process-global recorder): tests run several services in one process and each
//! must count only its own calls. Other modules export their own families as a
//! `collector()` (linkerd's way) and the app adds them with [`Metrics::register`], so
//! this module need not import theirs. `admin` serves the registry over HTTP.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use prost::Message;
use tonic::Code;

use crate::client::{ClientStats, ResilientChannel};

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

    /// The resilient client's families for `upstream`, read from `channel` at scrape
    /// time: `grpc_client_attempts_total`, `grpc_client_retries_total`,
    /// `grpc_client_retry_budget_exhausted_total`, `grpc_client_ejections_total`
    /// (counters) and `grpc_client_endpoints`, `grpc_client_ejected_endpoints`
    /// (gauges), each labelled `upstream`.
    ///
    /// # Errors
    /// When families of these names are already registered (one call per upstream
    /// name is allowed: the label tells them apart only within one collector).
    pub fn register_client(&self, upstream: &str, channel: ResilientChannel) -> prometheus::Result<()> {
        self.register(ClientCollector::new(upstream, channel)?)?;
        Ok(())
    }

    /// Every family in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec fails only on families the registry already rejected.
        let _ = TextEncoder::new().encode(&self.shared.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Reads a [`ResilientChannel`]'s [`ClientStats`] at each scrape.
#[derive(Clone)]
struct ClientCollector {
    upstream: String,
    channel: ResilientChannel,
    descs: Vec<Desc>,
}

/// (name, help) of the counters, in the order of [`client_values`]'s first four values.
const CLIENT_COUNTERS: [(&str, &str); 4] = [
    ("grpc_client_attempts_total", "Attempts the resilient client sent to an endpoint, first tries and retries."),
    ("grpc_client_retries_total", "Retries the resilient client sent."),
    ("grpc_client_retry_budget_exhausted_total", "Retries wanted but refused by the retry budget."),
    ("grpc_client_ejections_total", "Endpoints ejected by outlier detection."),
];

/// (name, help) of the gauges, in the order of [`client_values`]'s last two values.
const CLIENT_GAUGES: [(&str, &str); 2] = [
    ("grpc_client_endpoints", "Connected endpoints of the upstream."),
    ("grpc_client_ejected_endpoints", "Connected endpoints of the upstream ejected right now."),
];

fn client_values(stats: ClientStats) -> [u64; 6] {
    [
        stats.attempts,
        stats.retries,
        stats.budget_exhausted,
        stats.ejections,
        stats.endpoints as u64,
        stats.ejected as u64,
    ]
}

impl ClientCollector {
    fn new(upstream: &str, channel: ResilientChannel) -> prometheus::Result<Self> {
        let mut this = Self { upstream: upstream.to_owned(), channel, descs: Vec::new() };
        this.descs =
            this.families(&[0; 6])?.iter().flat_map(|collector| collector.desc().into_iter().cloned()).collect();
        Ok(this)
    }

    /// Fresh, unregistered metric vectors holding `values`.
    fn families(&self, values: &[u64; 6]) -> prometheus::Result<Vec<Box<dyn Collector>>> {
        let mut families: Vec<Box<dyn Collector>> = Vec::new();
        for ((name, help), value) in CLIENT_COUNTERS.iter().zip(values) {
            let counter = IntCounterVec::new(Opts::new(*name, *help), &["upstream"])?;
            counter.with_label_values(&[self.upstream.as_str()]).inc_by(*value);
            families.push(Box::new(counter));
        }
        for ((name, help), value) in CLIENT_GAUGES.iter().zip(&values[4..]) {
            let gauge = IntGaugeVec::new(Opts::new(*name, *help), &["upstream"])?;
            gauge.with_label_values(&[self.upstream.as_str()]).set(i64::try_from(*value).unwrap_or(i64::MAX));
            families.push(Box::new(gauge));
        }
        Ok(families)
    }
}

impl Collector for ClientCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let values = client_values(self.channel.stats());
        self.families(&values).map(|families| families.iter().flat_map(|f| f.collect()).collect()).unwrap_or_default()
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
        let labels = ["grpc_type", "grpc_service", "grpc_method"];
        let with_code = ["grpc_type", "grpc_service", "grpc_method", "grpc_code"];
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

    /// Counts the start of a call of `method`.
    pub fn started(&self, method: &MethodLabels) {
        self.started.with_label_values(&method.values()).inc();
    }

    /// Counts the end of a call of `method` with `code`, which took `seconds`.
    pub fn handled(&self, method: &MethodLabels, code: Code, seconds: f64) {
        let [kind, service, name] = method.values();
        self.handled.with_label_values(&[kind, service, name, code_name(code)]).inc();
        self.handling.with_label_values(&[kind, service, name]).observe(seconds);
    }
}

/// The `grpc_type`, `grpc_service` and `grpc_method` labels of one RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodLabels {
    /// `unary`, `client_stream`, `server_stream` or `bidi_stream`.
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

/// Which methods stream, read from encoded `FileDescriptorSet`s: `grpc_type` needs it
/// and a request path alone does not say.
#[derive(Debug, Clone, Default)]
pub struct MethodKinds {
    kinds: Arc<HashMap<String, &'static str>>,
}

impl MethodKinds {
    /// The methods of every service in `descriptor_sets` (each an encoded
    /// `google.protobuf.FileDescriptorSet`); sets that do not decode are skipped.
    pub fn from_descriptor_sets(descriptor_sets: &[&[u8]]) -> Self {
        let mut kinds = HashMap::new();
        for set in descriptor_sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else { continue };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = match (package.as_str(), service.name.as_deref()) {
                        ("", Some(name)) => name.to_owned(),
                        (package, Some(name)) => format!("{package}.{name}"),
                        (_, None) => continue,
                    };
                    for method in service.method {
                        let kind = match (method.client_streaming(), method.server_streaming()) {
                            (false, false) => "unary",
                            (true, false) => "client_stream",
                            (false, true) => "server_stream",
                            (true, true) => "bidi_stream",
                        };
                        kinds.insert(format!("/{service_name}/{}", method.name()), kind);
                    }
                }
            }
        }
        Self { kinds: Arc::new(kinds) }
    }

    /// The labels of a request to `path` (`/package.Service/Method`, PROTOCOL-HTTP2.md);
    /// a method not in the descriptors counts as `unary`.
    pub fn labels(&self, path: &str) -> MethodLabels {
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
        MethodLabels {
            kind: self.kinds.get(path).copied().unwrap_or("unary"),
            service: service.to_owned(),
            method: method.to_owned(),
        }
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

    #[tokio::test]
    async fn the_resilient_clients_counters_and_endpoints_are_exported_per_upstream() {
        use crate::client::ClientConfig;
        let config = ClientConfig::with_endpoints(Vec::new());
        let channel = ResilientChannel::new("users", &config, crate::discovery::fixed(Vec::new()), &[])
            .expect("an empty descriptor set decodes");
        let metrics = Metrics::new();
        metrics.register_client("users", channel).expect("registers once");
        let text = metrics.render();
        for line in [
            "# TYPE grpc_client_retries_total counter",
            "grpc_client_retries_total{upstream=\"users\"} 0",
            "# TYPE grpc_client_endpoints gauge",
            "grpc_client_ejected_endpoints{upstream=\"users\"} 0",
            "grpc_client_retry_budget_exhausted_total{upstream=\"users\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn method_kinds_come_from_the_descriptors() {
        let kinds = MethodKinds::from_descriptor_sets(&[api::FILE_DESCRIPTOR_SET]);
        assert_eq!(kinds.labels("/orders.v1.OrderService/CreateOrder").kind, "unary");
        assert_eq!(kinds.labels("/orders.v1.OrderService/ListOrders").kind, "server_stream");
        let unknown = kinds.labels("/x.v1.Nope/Call");
        assert_eq!((unknown.kind, unknown.service.as_str(), unknown.method.as_str()), ("unary", "x.v1.Nope", "Call"));
    }

    #[test]
    fn handled_calls_render_with_go_grpc_middleware_names_and_labels() {
        let metrics = Metrics::new();
        let server = metrics.grpc_server();
        let method = MethodKinds::default().labels("/users.v1.UserService/GetUser");
        server.started(&method);
        server.handled(&method, Code::NotFound, 0.002);
        let text = metrics.render();
        assert!(text.contains("# TYPE grpc_server_handled_total counter"), "{text}");
        assert!(
            text.contains(
                r#"grpc_server_handled_total{grpc_code="NotFound",grpc_method="GetUser",grpc_service="users.v1.UserService",grpc_type="unary"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("grpc_server_handling_seconds_bucket{"), "{text}");
        assert!(!text.contains("grpc_client_"), "client families appear only once used: {text}");
    }
}
