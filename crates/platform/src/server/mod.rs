//! The gRPC server every service runs: one listener, the layer stack, health and reflection.

pub mod fault;
pub mod health;
pub(crate) mod protocol;
pub mod rate_limit;
pub(crate) mod recover;

use std::{convert::Infallible, future::Future, io, net::SocketAddr, time::Duration};

use axum::error_handling::HandleErrorLayer;
use http::Response;
use tokio::net::TcpListener;
use tonic::{Status, server::NamedService, service::Routes, transport::Server};
use tower::{BoxError, ServiceBuilder, limit::GlobalConcurrencyLimitLayer, load_shed::error::Overloaded};

use crate::{
    auth::{self, Authenticator},
    config::{DatabaseConfig, ServerConfig},
    database::Database,
    deadline,
    discovery::{
        consul::{AgentServiceRegistration, Consul},
        registration::{Registered, RegistrationConfig},
    },
    observability::{layer, metrics::Metrics},
    support::methods::Methods,
    transport::{incoming, tls},
};

use self::{
    health::Health,
    rate_limit::{RateLimitConfig, RateLimitLayer},
};

/// A bound, not yet serving, gRPC server. When it serves, it also answers
/// `grpc.health.v1.Health` and server reflection (`grpc.reflection.v1`).
pub struct GrpcServer {
    listener: TcpListener,
    config: ServerConfig,
    /// The application services only: health and reflection join them in [`stack`].
    services: Routes,
    /// The fully qualified names of the application services, which reflection lists.
    served: Vec<&'static str>,
    health: Health,
    database_probe: Option<(Database, DatabaseConfig)>,
    registration: Option<(Consul, AgentServiceRegistration, Duration)>,
    descriptor_set: &'static [u8],
    metrics: Metrics,
    /// Who may call: unconfigured (business calls refused) unless [`GrpcServer::authenticate`] was called.
    auth: Option<Authenticator>,
    rate_limit: RateLimitConfig,
}

impl GrpcServer {
    /// Binds `config.addr()` (port 0 picks a free port). `descriptor_set` is the
    /// encoded `FileDescriptorSet` reflection serves; every call is counted in
    /// `metrics`' `grpc_server_*` families (the registry the admin endpoint serves).
    ///
    /// # Errors
    /// When the address cannot be bound or the descriptor set does not decode.
    pub async fn bind(config: &ServerConfig, descriptor_set: &'static [u8], metrics: &Metrics) -> io::Result<Self> {
        // Built here only to fail at start-up on a bad descriptor set; `stack` builds
        // the one it serves.
        reflection(descriptor_set, &[]).map_err(io::Error::other)?;
        let listener = TcpListener::bind(config.addr()).await?;
        Ok(Self {
            listener,
            config: config.clone(),
            services: Routes::default(),
            served: Vec::new(),
            health: Health::new(),
            database_probe: None,
            registration: None,
            descriptor_set,
            metrics: metrics.clone(),
            auth: None,
            rate_limit: RateLimitConfig::default(),
        })
    }

    /// The bound address; its port is the real one when the config said 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound TCP listener has a local address")
    }

    /// Handle to this server's health statuses (the server as a whole and each service
    /// added so far).
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Adds an application service; its health status starts as SERVING.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.health.add(S::NAME);
        self.served.push(S::NAME);
        self.services = self.services.add_service(service);
        self
    }

    /// Checks callers with `authenticator` (see [`crate::auth`]). Without this call,
    /// every business call is refused UNAUTHENTICATED: secure by default.
    pub fn authenticate(mut self, authenticator: Authenticator) -> Self {
        self.auth = Some(authenticator);
        self
    }

    /// Limits calls per method and caller as `config` says (see [`crate::server::rate_limit`]).
    pub fn rate_limit(mut self, config: &RateLimitConfig) -> Self {
        self.rate_limit = config.clone();
        self
    }

    /// While serving, ping `database` and report NOT_SERVING, failing its calls fast,
    /// while it does not answer (see [`health::watch_database`]).
    pub fn probe_database(mut self, database: &Database, config: &DatabaseConfig) -> Self {
        self.database_probe = Some((database.clone(), config.clone()));
        self
    }

    /// While serving, keep this instance registered in Consul (see
    /// [`Registered::start`]) as `config` describes, with `version` in its meta;
    /// deregister it when shutdown begins.
    pub fn register_in(mut self, consul: Consul, config: &RegistrationConfig, version: &str) -> Self {
        let instance = config.instance(self.local_addr(), version);
        self.registration = Some((consul, instance, config.refresh_interval));
        self
    }

    /// Serves until `shutdown` resolves, then drains as a lame duck: reports
    /// NOT_SERVING, leaves Consul, keeps accepting calls for `drain_period` (clients
    /// still routing here are not failed), then closes the listener and lets in-flight
    /// RPCs finish for at most `shutdown_grace`.
    ///
    /// # Errors
    /// A transport error from the server itself (not from individual RPCs).
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), tonic::transport::Error> {
        let Self {
            listener,
            config,
            services,
            served,
            health,
            database_probe,
            registration,
            descriptor_set,
            metrics,
            auth,
            rate_limit,
        } = self;
        let (drain_period, shutdown_grace) = (config.drain_period, config.shutdown_grace);
        health.set_serving(true).await;
        let probe = database_probe.map(|(database, config)| health::watch_database(&database, &config, health.clone()));
        let registered = registration.map(|(consul, instance, refresh)| Registered::start(consul, instance, refresh));
        let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
        let signal = {
            let health = health.clone();
            async move {
                shutdown.await;
                // The probe must not report SERVING again while we drain.
                if let Some(probe) = probe {
                    probe.abort();
                }
                health.set_serving(false).await;
                if let Some(registered) = registered {
                    registered.deregister().await;
                }
                if !drain_period.is_zero() {
                    tracing::info!(
                        drain_ms = drain_period.as_millis() as u64,
                        "lame duck: still serving while clients move away"
                    );
                    tokio::time::sleep(drain_period).await;
                }
                tracing::info!("closing the listener; finishing in-flight calls");
                let _ = stopping_tx.send(true);
            }
        };
        let auth = auth.unwrap_or_else(Authenticator::unconfigured);
        let edge = Edge { auth, rate_limit: RateLimitLayer::new(&rate_limit) };
        let server = stack(listener, &config, services, &served, &health, descriptor_set, &metrics, edge, signal);
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => result,
            _ = async {
                let _ = stopping.wait_for(|stopping| *stopping).await;
                tokio::time::sleep(shutdown_grace).await;
            } => {
                tracing::warn!(grace_ms = shutdown_grace.as_millis() as u64, "shutdown grace period over; cutting remaining RPCs");
                Ok(())
            }
        }
    }
}

/// The whole server stack, serving `listener` until `signal` resolves: every layer,
/// the application `services`, health and reflection. A request meets them in this
/// order: the accepted socket (connection limit, idle timeout, TCP_NODELAY), TLS when
/// `server.tls` is set (client certificates checked in the handshake), HTTP/2
/// (keepalive PINGs, streams per connection) or HTTP/1.1, open-call tracking, CORS (when
/// origins are configured), Connect translation, gRPC-Web translation, observe (span,
/// metrics, log line), deadline, gRPC only (415), request decoding codes, authentication,
/// rate limit, the stream limit, panic recovery, the router;
/// then health or reflection directly, or, for an application service, the
/// UNAVAILABLE answer, load shedding and the in-flight limit before the service.
// Every layer is composed in this one function (STYLE.md 3), so it takes what they all need.
#[allow(clippy::too_many_arguments)]
fn stack(
    listener: TcpListener,
    config: &ServerConfig,
    services: Routes,
    served: &[&'static str],
    health: &Health,
    descriptor_set: &'static [u8],
    metrics: &Metrics,
    edge: Edge,
    signal: impl Future<Output = ()>,
) -> impl Future<Output = Result<(), tonic::transport::Error>> {
    let local_addr = listener.local_addr().expect("a bound TCP listener has a local address");
    // Every method this port serves, so each is labelled by name; anything else counts
    // as `unknown` (a bounded label set, whatever paths clients make up).
    let descriptor_sets =
        [descriptor_set, tonic_health::pb::FILE_DESCRIPTOR_SET, tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET];
    let limit = usize::try_from(config.max_concurrent_requests.get()).unwrap_or(usize::MAX);
    let max_open_streams = usize::try_from(config.max_open_streams.get()).unwrap_or(usize::MAX);
    let max_connections = usize::try_from(config.max_connections.get()).unwrap_or(usize::MAX);
    let methods = Methods::from_descriptor_sets(&descriptor_sets).unwrap_or_default();
    // Inside the router, around the application services only: health checks and
    // reflection take no slot and are never shed, so a replica at capacity still
    // answers its health checks SERVING (it is busy, not broken; failing them would
    // have Consul and balancers pull every busy replica out of rotation at once, as
    // a load spike hits them all).
    let mut services = services.into_axum_router();
    if services.has_routes() {
        services = services.route_layer(
            ServiceBuilder::new()
                // An overloaded call is answered UNAVAILABLE ("most likely a transient
                // condition... retried with a backoff", gRPC status codes), which our
                // clients retry on another replica by default (`retryableStatusCodes`);
                // tonic's own shedding says RESOURCE_EXHAUSTED, a code meant for quotas.
                .layer(HandleErrorLayer::new(overloaded_is_unavailable))
                // At capacity, fail at once rather than queue: a queued call would wait
                // until its deadline passed and fail anyway, after holding memory.
                .load_shed()
                // Limit in-flight calls per process (`server.max_concurrent_requests`);
                // one semaphore shared by every service and connection.
                .layer(GlobalConcurrencyLimitLayer::new(limit)),
        );
    }
    let routes = Routes::from(services)
        // `grpc.health.v1.Health`: Check and Watch for probes, Consul and balancers.
        .add_service(health.service())
        // `grpc.reflection.v1`, so grpcurl and Postman work without the .proto files.
        .add_service(reflection(descriptor_set, served).expect("the descriptor set decoded in bind"));
    let keepalive = config.http2_keepalive_interval;
    Server::builder()
        // gRPC-Web clients (browsers) speak HTTP/1.1; gRPC and gRPC-Web share the port.
        .accept_http1(true)
        // PING idle connections, so a client that vanished without a FIN (a crashed
        // node, a dropped NAT entry) frees its connection.
        .http2_keepalive_interval((!keepalive.is_zero()).then_some(keepalive))
        .http2_keepalive_timeout(Some(config.http2_keepalive_timeout))
        // Bound the calls one connection may open at once (SETTINGS_MAX_CONCURRENT_STREAMS):
        // without it one client opened 20,000 streams on one connection.
        .max_concurrent_streams(Some(config.http2_max_concurrent_streams.get()))
        // Bound the streams a client may reset before we took them (HTTP/2 rapid reset),
        // well above what a hedging client cancels on a busy server: h2's default of 20
        // closed our own orders -> users connections under load.
        .http2_max_pending_accept_reset_streams(
            usize::try_from(config.http2_max_pending_accept_reset_streams.get()).ok(),
        )
        .layer(
            ServiceBuilder::new()
                // Outermost: tell each connection which calls are open on it, so its idle
                // timeout (`server.idle_timeout`) only runs while it has none; this also
                // puts the peer's address (tonic's `TcpConnectInfo`) on every request.
                .layer(incoming::TrackCallsLayer::default())
                // Browsers' preflight and CORS headers (`server.cors_allowed_origins`;
                // none by default); before Connect, so a refused origin costs no translation.
                .option_layer(cors(&config.cors_allowed_origins))
                // Connect (curl-able JSON, GET for cacheable reads) becomes gRPC here,
                // beside gRPC-Web, so every layer below serves all three protocols alike.
                .layer(connect::ConnectLayer::new(&descriptor_sets))
                // Translate gRPC-Web to gRPC first, so every layer below sees plain gRPC
                // (and its trailers) whichever protocol the client spoke.
                .layer(tonic_web::GrpcWebLayer::new())
                // One span per RPC continuing the caller's traceparent, go-grpc-middleware's
                // grpc_server_* metrics, and one log line at its end inside that span;
                // outermost after gRPC-Web so the span covers every layer below, and
                // calls shed for overload are logged and counted too.
                .layer(layer::ServerLayer::new(metrics, &descriptor_sets, local_addr))
                // Remember each call's deadline, so the calls it makes upstream
                // carry what remains of it (deadline propagation), and answer
                // DEADLINE_EXCEEDED when it passes (tonic alone says CANCELLED).
                .layer(deadline::PropagateLayer)
                // Refuse what is not gRPC (HTTP 415), after gRPC-Web (and any other
                // protocol) has been translated to it: tonic would decode any body as
                // protobuf.
                .layer(protocol::GrpcOnlyLayer::default())
                // A request tonic cannot decode is the client's error: INVALID_ARGUMENT
                // (tonic says INTERNAL, logged at ERROR) or RESOURCE_EXHAUSTED for one over
                // the size limit (tonic says OUT_OF_RANGE); inside observe, which logs and
                // counts the corrected code.
                .map_response(protocol::recode_request_errors)
                // Who is calling: a bearer JWT checked before any work is done (health
                // always open); inside observe, so refusals are logged and counted and
                // the caller's subject lands on the span and the log line.
                .layer(auth::AuthLayer::new(edge.auth))
                // Per-method, per-caller quotas after authentication, so a caller is its
                // subject rather than an address many clients may share (off by default).
                .layer(edge.rate_limit)
                // Cap the streaming calls open in the process (`server.max_open_streams`),
                // health Watch included: each holds memory for as long as its client
                // keeps it open. Beyond the cap, UNAVAILABLE at once. A stream whose
                // client stops reading is ended after `server.stream_stall_timeout`.
                .layer(incoming::StreamLimitLayer::new(methods, max_open_streams, config.stream_stall_timeout))
                // Back to tonic's body type from the boxed one of the panic catcher below.
                .map_response(|response: http::Response<_>| response.map(tonic::body::Body::new))
                // Innermost: a handler that panics fails its own call with INTERNAL and
                // the connection, with every call on it, keeps serving.
                .layer(recover::layer()),
        )
        .add_routes(routes)
        // TLS (`server.tls`) after the connection limit, so a handshake holds a place
        // like any connection; every protocol above runs over it.
        .serve_with_incoming_shutdown(
            tls::accept(incoming(listener, config), config.tls.clone(), max_connections),
            signal,
        )
}

/// The per-caller layers of [`stack`]: authentication and rate limits.
struct Edge {
    auth: Authenticator,
    rate_limit: RateLimitLayer,
}

/// The connections `listener` accepts: each with TCP_NODELAY set, at most
/// `server.max_connections` at once, each closed after `server.idle_timeout` without
/// an open call, with back-off when accepting fails (see [`incoming::Incoming`]).
fn incoming(listener: TcpListener, config: &ServerConfig) -> incoming::Incoming<TcpListener> {
    let max_connections = usize::try_from(config.max_connections.get()).unwrap_or(usize::MAX);
    incoming::Incoming::new(listener, max_connections, config.idle_timeout)
}

/// CORS for browser clients from `origins` (none: no CORS layer): the Connect and
/// gRPC-Web request headers allowed, their response headers and trailers exposed.
fn cors(origins: &[http::HeaderValue]) -> Option<tower_http::cors::CorsLayer> {
    use http::{HeaderName, Method};
    if origins.is_empty() {
        return None;
    }
    let allow = [
        "content-type",
        "connect-protocol-version",
        "connect-timeout-ms",
        "connect-content-encoding",
        "connect-accept-encoding",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "authorization",
    ];
    let expose =
        ["grpc-status", "grpc-message", "grpc-status-details-bin", "content-encoding", "connect-content-encoding"];
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins.to_vec())
            .allow_methods([Method::GET, Method::POST])
            .allow_headers(allow.map(HeaderName::from_static))
            .expose_headers(expose.map(HeaderName::from_static))
            .max_age(Duration::from_secs(7200)),
    )
}

/// Server reflection (`grpc.reflection.v1`) over `descriptor_set` and the health
/// service's, listing only the services this port serves: `served`, health and
/// reflection itself (a descriptor set may describe services another port serves).
fn reflection(
    descriptor_set: &'static [u8],
    served: &[&'static str],
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::Error,
> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptor_set)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    let own = [
        tonic_health::pb::health_server::SERVICE_NAME,
        tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
    ];
    served.iter().chain(&own).fold(builder, |builder, name| builder.with_service_name(*name)).build_v1()
}

/// A call refused by the load shedder, answered UNAVAILABLE (see [`stack`]); the
/// services below it cannot fail otherwise (their error type is `Infallible`).
async fn overloaded_is_unavailable(error: BoxError) -> Response<axum::body::Body> {
    if error.is::<Overloaded>() {
        Status::unavailable("the server is at its limit of concurrent calls (server.max_concurrent_requests)")
            .into_http()
    } else {
        Status::from_error(error).into_http()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::net::TcpStream;
    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn every_connection_the_server_accepts_has_tcp_nodelay() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
        let address = listener.local_addr().expect("bound");
        let mut incoming = incoming(listener, &ServerConfig::on_port(0));
        let _client = TcpStream::connect(address).await.expect("connect");
        let accepted = incoming.next().await.expect("the stream stays open").expect("accepted");
        assert!(accepted.get_ref().nodelay().expect("readable option"), "Nagle's algorithm is still on");
    }

    use crate::config::{Sample, assert_sample_refused};

    #[test]
    fn a_request_limit_of_zero_is_a_config_error_naming_the_key() {
        assert_sample_refused::<Sample>(
            "SAMPLE_SERVER__MAX_CONCURRENT_REQUESTS",
            "0",
            "server.max_concurrent_requests",
        );
    }

    #[test]
    // figment::Jail's closures return figment::Error, which is large; that is its API.
    #[allow(clippy::result_large_err)]
    fn cors_origins_are_checked_at_load_and_a_bad_one_names_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "SAMPLE_SERVER__CORS_ALLOWED_ORIGINS",
                "[\"https://app.example.com\", \"http://localhost:5173\"]",
            );
            let loaded = crate::config::load::<Sample>("SAMPLE_", None).expect("valid origins");
            assert_eq!(loaded.server.cors_allowed_origins, ["https://app.example.com", "http://localhost:5173"]);
            jail.set_env("SAMPLE_SERVER__CORS_ALLOWED_ORIGINS", "[\"https://app.example.com/path\"]");
            let message = crate::config::load::<Sample>("SAMPLE_", None).expect_err("not an origin").to_string();
            assert!(message.contains("server.cors_allowed_origins"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn no_cors_origins_means_no_cors_layer_and_some_mean_one() {
        assert!(cors(&[]).is_none());
        assert!(cors(&[http::HeaderValue::from_static("https://app.example.com")]).is_some());
    }

    #[test]
    fn a_zero_limit_or_timeout_is_a_config_error_naming_its_key() {
        for (key, zero) in [
            ("http2_max_concurrent_streams", "0"),
            ("http2_max_pending_accept_reset_streams", "0"),
            ("max_connections", "0"),
            ("max_open_streams", "0"),
            ("idle_timeout", "0s"),
            ("stream_stall_timeout", "0s"),
        ] {
            let variable = format!("SAMPLE_SERVER__{}", key.to_uppercase());
            assert_sample_refused::<Sample>(&variable, zero, &format!("server.{key}"));
        }
    }

    #[tokio::test]
    async fn an_overloaded_call_is_answered_unavailable() {
        let response = overloaded_is_unavailable(Overloaded::new().into()).await;
        let status = Status::from_header_map(response.headers()).expect("a gRPC status in the headers");
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
}
