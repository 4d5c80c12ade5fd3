//! Tower layers that trace, count and log every gRPC call: [`ServerLayer`] for incoming, [`ClientLayer`] for outgoing.
//!
//! Each call gets one span following the OpenTelemetry RPC conventions (`rpc.system`,
//! `rpc.service`, `rpc.method`, `rpc.grpc.status_code`, `server.address`,
//! `server.port`), one start and one end in go-grpc-middleware's metrics, and, on the
//! server, one `"rpc finished"` log line inside its span (so it carries `trace_id`).
//! The server span continues the caller's W3C `traceparent`/`baggage`; the client
//! layer writes them into the outgoing headers.
//!
//! The status of a gRPC call is known only at its end: in the response headers for a
//! trailers-only response (most errors), otherwise in the trailers after the last
//! message. So the layers watch the response body until its trailers, and a call
//! whose body is dropped first (the client went away) ends as `Cancelled`.
//!
//! Labels and span names come from the descriptors ([`Methods::labels`]): a path they
//! do not declare is `unknown`/`unknown`, never the raw path, so made-up paths cannot
//! grow `/metrics` or the set of span names.

use std::{
    error::Error as StdError,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Instant,
};

use futures::{TryFutureExt, future::MapErr};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::{Code, Status};
use tower::{Layer, Service};
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use connect::Protocol;

use crate::{
    observability::metrics::{GrpcMetrics, MethodLabels, Metrics},
    observability::traces,
    support::methods::{MethodKind, Methods},
};

/// The methods of `descriptor_sets`; none (every call labelled `unknown`) when one does
/// not decode, which is a build fault of the `api` crate, logged rather than fatal.
fn read_methods(descriptor_sets: &[&[u8]]) -> Methods {
    Methods::from_descriptor_sets(descriptor_sets).unwrap_or_else(|error| {
        tracing::error!(%error, "descriptor set does not decode; every call is labelled unknown");
        Methods::default()
    })
}

/// The error type of [`Client`]: a boxed transport error or a [`Status`].
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Builds [`Server`] services: see the module docs.
#[derive(Clone)]
pub struct ServerLayer {
    metrics: GrpcMetrics,
    methods: Methods,
    local: SocketAddr,
}

impl ServerLayer {
    /// Counts into `metrics`' `grpc_server_*` families; `descriptor_sets` (encoded
    /// `FileDescriptorSet`s) say which methods stream; `local` is the listening address,
    /// reported as `server.address` when a request has no `:authority`.
    pub fn new(metrics: &Metrics, descriptor_sets: &[&[u8]], local: SocketAddr) -> Self {
        Self { metrics: metrics.grpc_server(), methods: read_methods(descriptor_sets), local }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = Server<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Server { inner, layer: self.clone() }
    }
}

/// Observes incoming calls (see the module docs).
#[derive(Clone)]
pub struct Server<S> {
    inner: S,
    layer: ServerLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Server<S>
where
    S: Service<Request<ClientGoneBody<ReqBody>>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let labels = self.layer.methods.labels(request.uri().path());
        let host = request.uri().host().map_or_else(|| self.layer.local.ip().to_string(), str::to_owned);
        let port = request.uri().port_u16().unwrap_or(self.layer.local.port());
        // Set by the Connect layer above (gRPC when a test stack has none).
        let protocol = request.extensions().get::<Protocol>().copied().unwrap_or(Protocol::Grpc);
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = format!("{}/{}", labels.service, labels.method),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.protocol = protocol.as_str(),
            rpc.service = labels.service.as_str(),
            rpc.method = labels.method.as_str(),
            rpc.grpc.status_code = Empty,
            server.address = host,
            server.port = port,
            // The caller's subject, recorded by the auth layer below (never the token).
            enduser.id = Empty,
        );
        // A missing or malformed traceparent starts a new trace; the layer is always there.
        let _ = span.set_parent(traces::extract(request.headers()));
        let mut call = Call::start(Side::Server, span, self.layer.metrics.clone(), labels, protocol);
        let gone = Arc::new(AtomicBool::new(false));
        call.client_gone = Some(gone.clone());
        let request = request.map(|body| ClientGoneBody { inner: body, gone });
        let future = call.span.in_scope(|| self.inner.call(request));
        ObservedFuture { inner: future, call: Some(call), classify: |_| Code::Unknown }
    }
}

/// Builds [`Client`] services: see the module docs.
#[derive(Clone)]
pub struct ClientLayer {
    metrics: GrpcMetrics,
    methods: Methods,
    target: String,
}

impl ClientLayer {
    /// As [`ClientLayer::with_methods`], over the methods of `descriptor_sets` (tests).
    #[cfg(test)]
    pub fn new(metrics: &Metrics, descriptor_sets: &[&[u8]], target: impl Into<String>) -> Self {
        Self::with_methods(metrics, read_methods(descriptor_sets), target)
    }

    /// Counts into `metrics`' `grpc_client_*` families; `methods` (the resilient
    /// client's) say which methods stream; `target` (e.g. `users`) is the
    /// `server.address` when the request URI has no host (a balanced channel picks the
    /// endpoint below this layer).
    pub fn with_methods(metrics: &Metrics, methods: Methods, target: impl Into<String>) -> Self {
        Self { metrics: metrics.grpc_client(), methods, target: target.into() }
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = Client<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Client { inner, layer: self.clone() }
    }
}

/// Observes outgoing calls and propagates the trace context (see the module docs).
#[derive(Clone)]
pub struct Client<S> {
    inner: S,
    layer: ClientLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Client<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = BoxError;
    type Future = ObservedFuture<MapErr<S::Future, fn(S::Error) -> BoxError>, BoxError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let labels = self.layer.methods.labels(request.uri().path());
        let host = request.uri().host().map_or_else(|| self.layer.target.clone(), str::to_owned);
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = format!("{}/{}", labels.service, labels.method),
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = labels.service.as_str(),
            rpc.method = labels.method.as_str(),
            rpc.grpc.status_code = Empty,
            server.address = host,
            server.port = request.uri().port_u16(),
        );
        traces::inject(&span.context(), request.headers_mut());
        // Our clients speak gRPC only.
        let call = Call::start(Side::Client, span, self.layer.metrics.clone(), labels, Protocol::Grpc);
        let to_box: fn(S::Error) -> BoxError = Into::into;
        let future = call.span.in_scope(|| self.inner.call(request)).map_err(to_box);
        ObservedFuture { inner: future, call: Some(call), classify: client_error_code }
    }
}

/// The code a failed client call ends with: the [`Status`] it carries, else
/// UNAVAILABLE (no connection).
fn client_error_code(error: &BoxError) -> Code {
    error.downcast_ref::<Status>().map_or(Code::Unavailable, Status::code)
}

pin_project! {
    /// A served call's request body that notes when it fails: the client reset the
    /// stream (RST_STREAM) or the connection went away while the request was read.
    pub struct ClientGoneBody<B> {
        #[pin]
        inner: B,
        gone: Arc<AtomicBool>,
    }
}

impl<B: Body> Body for ClientGoneBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if matches!(frame, Some(Err(_))) {
            this.gone.store(true, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The response future of [`Server`] and [`Client`], polled inside the call's span.
    /// (Not `tracing`'s `Instrumented`, which also enters the span to drop the future:
    /// one more enter and exit of every subscriber layer per call, for nothing to log.)
    pub struct ObservedFuture<F, E> {
        #[pin]
        inner: F,
        call: Option<Call>,
        classify: fn(&E) -> Code,
    }
}

impl<F, ResBody, E> Future for ObservedFuture<F, E>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: Body,
{
    type Output = Result<Response<ObservedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.call.as_ref().map(|call| call.span.enter());
            ready!(this.inner.poll(cx))
        };
        let Some(call) = this.call.take() else {
            // Polled after completion: a caller bug, but not a reason to panic.
            return Poll::Ready(
                result.map(|r| r.map(|body| ObservedBody { inner: body, span: Span::none(), call: None })),
            );
        };
        Poll::Ready(match result {
            Ok(response) => {
                // A unary answer is one message the handler has already made: polling its
                // body runs none of the service's code, so only a stream's body is polled
                // inside the span (each enter and exit runs every layer of the subscriber).
                let span = if call.labels.kind == MethodKind::Unary.label() { Span::none() } else { call.span.clone() };
                let call = match grpc_status(response.headers()) {
                    // Trailers-only response: the call ends here.
                    Some(code) => {
                        call.end(code);
                        None
                    }
                    None => Some(call),
                };
                Ok(response.map(|body| ObservedBody { inner: body, span, call }))
            }
            Err(error) => {
                call.end((this.classify)(&error));
                Err(error)
            }
        })
    }
}

pin_project! {
    /// A response body that ends its call when the trailers pass through; a stream's
    /// body is polled inside the call's span.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        span: Span,
        call: Option<Call>,
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let _entered = this.span.enter();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                // Take the call only at the trailers: taking it at a data frame would drop
                // it, and a dropped call ends as Cancelled.
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = this.call.take()
                {
                    call.end(grpc_status(trailers).unwrap_or(Code::Unknown));
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.take() {
                    call.end(Code::Internal);
                }
            }
            None => {
                if let Some(call) = this.call.take() {
                    // A gRPC response must end with trailers; one without has no status.
                    call.end(Code::Unknown);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `grpc-status` header or trailer, if present.
fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers.get("grpc-status").map(|value| Code::from_bytes(value.as_bytes()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// One call in flight; ends exactly once, at `end` or, failing that, at drop.
struct Call {
    side: Side,
    span: Span,
    metrics: GrpcMetrics,
    labels: MethodLabels,
    start: Instant,
    ended: bool,
    /// The protocol the call arrived in (sent in, on the client side).
    protocol: Protocol,
    /// Set when the client reset the call while its request was being read (served
    /// calls only): whatever status the handler then made of the missing request, the
    /// call is counted and logged CANCELLED.
    client_gone: Option<Arc<AtomicBool>>,
}

impl Call {
    fn start(side: Side, span: Span, metrics: GrpcMetrics, labels: MethodLabels, protocol: Protocol) -> Self {
        metrics.started(&labels, protocol.as_str());
        Self { side, span, metrics, labels, start: Instant::now(), ended: false, protocol, client_gone: None }
    }

    fn end(mut self, code: Code) {
        self.finish(code);
    }

    fn finish(&mut self, code: Code) {
        self.ended = true;
        // tonic answers a unary call whose client reset it before its request message
        // arrived INTERNAL "Missing request message.": no server fault, and no one to
        // answer.
        let gone = self.client_gone.as_ref().is_some_and(|gone| gone.load(Ordering::Relaxed));
        let code = if gone && matches!(code, Code::Internal | Code::Unknown) { Code::Cancelled } else { code };
        let elapsed = self.start.elapsed();
        self.metrics.handled(&self.labels, self.protocol.as_str(), code, elapsed.as_secs_f64());
        self.span.record("rpc.grpc.status_code", code as i32);
        // OpenTelemetry's gRPC conventions: on the server only codes that mean a
        // server fault are errors; on the client every non-OK code is.
        let error = match self.side {
            Side::Server => matches!(
                code,
                Code::Unknown
                    | Code::DeadlineExceeded
                    | Code::Unimplemented
                    | Code::Internal
                    | Code::Unavailable
                    | Code::DataLoss
            ),
            Side::Client => code != Code::Ok,
        };
        if error {
            self.span.record("otel.status_code", "ERROR");
        }
        if self.side == Side::Client {
            return;
        }
        let duration_ms = elapsed.as_secs_f64() * 1e3;
        let (service, method) = (self.labels.service.as_str(), self.labels.method.as_str());
        let protocol = self.protocol.as_str();
        // The code as go-grpc-middleware's logs and our metrics' `grpc_code` name it
        // (`OK`, `NotFound`), a static string: no formatting per call.
        let code_name = crate::observability::metrics::code_name(code);
        // One line, at ERROR for a server fault, else INFO (`event!` takes a constant level).
        macro_rules! rpc_finished {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    rpc.system = "grpc",
                    rpc.protocol = protocol,
                    rpc.service = service,
                    rpc.method = method,
                    grpc.code = code_name,
                    duration_ms,
                    "rpc finished"
                )
            };
        }
        self.span.in_scope(|| {
            if matches!(code, Code::Internal | Code::Unknown | Code::DataLoss) {
                rpc_finished!(tracing::Level::ERROR);
            } else {
                rpc_finished!(tracing::Level::INFO);
            }
        });
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.ended {
            // The response (or its body) was dropped before the status arrived: the
            // client cancelled or disconnected (or, on the client side, gave up).
            self.finish(Code::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use api::users::v1::{
        CreateUserRequest, CreateUserResponse, GetUserByEmailRequest, GetUserByEmailResponse, GetUserRequest,
        GetUserResponse,
        user_service_client::UserServiceClient,
        user_service_server::{UserService, UserServiceServer},
    };
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response};
    use tracing::Instrument;

    use super::*;

    /// A users service that remembers the traceparent each call arrived with and the
    /// trace id of the span its handler ran in.
    #[derive(Clone, Default)]
    struct Recording(Arc<Mutex<Vec<(String, String)>>>);

    #[tonic::async_trait]
    impl UserService for Recording {
        async fn create_user(&self, _: Request<CreateUserRequest>) -> Result<Response<CreateUserResponse>, Status> {
            Ok(Response::new(CreateUserResponse { user: None }))
        }

        async fn get_user(&self, _: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn get_user_by_email(
            &self,
            request: Request<GetUserByEmailRequest>,
        ) -> Result<Response<GetUserByEmailResponse>, Status> {
            use opentelemetry::trace::TraceContextExt;
            let header = request.metadata().get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let handler_trace = Span::current().context().span().span_context().trace_id().to_string();
            self.0.lock().expect("not poisoned").push((header, handler_trace));
            Err(Status::not_found("nobody"))
        }
    }

    #[tokio::test]
    async fn a_call_carries_its_trace_to_the_server_and_both_sides_count_it_with_its_code() {
        crate::observability::logs::init_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let local = listener.local_addr().expect("addr");
        let (server_metrics, client_metrics) = (Metrics::new(), Metrics::new());
        let service = Recording::default();
        let seen = service.0.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(ServerLayer::new(&server_metrics, &[api::FILE_DESCRIPTOR_SET], local))
                .add_service(UserServiceServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{local}")).expect("uri").connect_lazy();
        let observed = ClientLayer::new(&client_metrics, &[api::FILE_DESCRIPTOR_SET], "users").layer(channel);
        let mut client = UserServiceClient::new(observed);

        let caller = tracing::info_span!("caller");
        let caller_trace = {
            use opentelemetry::trace::TraceContextExt;
            caller.context().span().span_context().trace_id().to_string()
        };
        let status = client
            .get_user_by_email(GetUserByEmailRequest { email: "a@example.com".into() })
            .instrument(caller)
            .await
            .expect_err("nobody has that email");
        assert_eq!(status.code(), Code::NotFound);

        let seen = seen.lock().expect("not poisoned").clone();
        assert_eq!(seen.len(), 1);
        let (header, handler_trace) = &seen[0];
        assert!(header.starts_with(&format!("00-{caller_trace}-")), "traceparent {header:?} continues {caller_trace}");
        assert_eq!(handler_trace, &caller_trace, "the handler runs in a span of the caller's trace");
        let counted = r#"{grpc_code="NotFound",grpc_method="GetUserByEmail",grpc_service="users.v1.UserService",grpc_type="unary",rpc_protocol="grpc"} 1"#;
        let server_text = server_metrics.render();
        assert!(server_text.contains(&format!("grpc_server_handled_total{counted}")), "{server_text}");
        // Both sides count before the trailers move on, so both counts are in by now.
        let client_text = client_metrics.render();
        assert!(client_text.contains(&format!("grpc_client_handled_total{counted}")), "{client_text}");

        // A response with a message ends with its trailers, not as a cancellation.
        client.create_user(CreateUserRequest::default()).await.expect("created");
        let ok = r#"{grpc_code="OK",grpc_method="CreateUser",grpc_service="users.v1.UserService",grpc_type="unary",rpc_protocol="grpc"} 1"#;
        let server_text = server_metrics.render();
        assert!(server_text.contains(&format!("grpc_server_handled_total{ok}")), "{server_text}");
        let client_text = client_metrics.render();
        assert!(client_text.contains(&format!("grpc_client_handled_total{ok}")), "{client_text}");
    }

    /// A [`Server`] counting into `metrics`, over a handler that answers every call with `status()`.
    fn observed_handler(
        metrics: &Metrics,
        status: fn() -> Status,
    ) -> Server<
        impl Service<http::Request<ClientGoneBody<()>>, Response = http::Response<String>, Error = std::convert::Infallible>,
    > {
        let handler = tower::service_fn(move |_: http::Request<ClientGoneBody<()>>| async move {
            Ok::<_, std::convert::Infallible>(status().into_http::<String>())
        });
        let local: SocketAddr = "127.0.0.1:1".parse().expect("address");
        ServerLayer::new(metrics, &[api::FILE_DESCRIPTOR_SET], local).layer(handler)
    }

    #[tokio::test]
    async fn each_call_is_counted_and_logged_under_the_protocol_it_arrived_in() {
        let (logs, _guard) = crate::support::redact::captured::logs();
        let metrics = Metrics::new();
        let mut service = observed_handler(&metrics, || Status::not_found("nobody"));
        // As the Connect layer tags them; an untagged request is gRPC.
        for protocol in [Some(Protocol::Connect), Some(Protocol::Connect), Some(Protocol::GrpcWeb), None] {
            let mut request = http::Request::builder().uri("/users.v1.UserService/GetUser").body(()).expect("request");
            if let Some(protocol) = protocol {
                request.extensions_mut().insert(protocol);
            }
            service.call(request).await.expect("answered");
        }
        let text = metrics.render();
        let handled: Vec<_> = text.lines().filter(|line| line.starts_with("grpc_server_handled_total{")).collect();
        let series = |protocol: &str, n: u32| {
            format!(
                r#"grpc_server_handled_total{{grpc_code="NotFound",grpc_method="GetUser",grpc_service="users.v1.UserService",grpc_type="unary",rpc_protocol="{protocol}"}} {n}"#
            )
        };
        assert_eq!(handled, [series("connect", 2), series("grpc", 1), series("grpc_web", 1)]);
        for family in ["grpc_server_started_total{", "grpc_server_handling_seconds_count{"] {
            let protocols =
                text.lines().filter(|line| line.starts_with(family) && line.contains("rpc_protocol=")).count();
            assert_eq!(protocols, 3, "{family} has one series per protocol: {text}");
        }
        let logs = logs.text();
        for protocol in ["connect", "grpc_web", "grpc"] {
            assert!(logs.contains(&format!(r#"rpc.protocol="{protocol}""#)), "{protocol} in the lines: {logs}");
        }
    }

    #[tokio::test]
    async fn a_thousand_distinct_unknown_paths_leave_one_series_and_no_trace_in_span_names() {
        let (logs, _guard) = crate::support::redact::captured::logs();
        let metrics = Metrics::new();
        let mut service = observed_handler(&metrics, || Status::unimplemented("no such method"));
        for n in 0..1000 {
            let request =
                http::Request::builder().uri(format!("/probe{n}.Service/Method{n}")).body(()).expect("request");
            service.call(request).await.expect("answered");
        }
        let text = metrics.render();
        let series = |family: &str| text.lines().filter(|line| line.starts_with(family)).collect::<Vec<_>>();
        let handled = series("grpc_server_handled_total{");
        assert_eq!(
            handled,
            [
                r#"grpc_server_handled_total{grpc_code="Unimplemented",grpc_method="unknown",grpc_service="unknown",grpc_type="unknown",rpc_protocol="grpc"} 1000"#
            ],
        );
        assert_eq!(series("grpc_server_started_total{").len(), 1, "{text}");
        // The span (name and attributes) of each call, printed with its "rpc finished" line.
        let logs = logs.text();
        assert!(logs.contains(r#"otel.name="unknown/unknown""#) && logs.contains("rpc.method=\"unknown\""), "{logs}");
        assert!(!logs.contains("probe") && !logs.contains("Method1"), "no raw path in spans or lines");
    }
}
