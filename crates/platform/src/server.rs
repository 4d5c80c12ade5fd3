//! The gRPC server every service runs: one listener, the layer stack, health and reflection.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{server::NamedService, service::Routes, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::ServiceBuilder;

use sqlx::AnyPool;

use crate::{
    config::{DatabaseConfig, ServerConfig},
    consul::{AgentServiceRegistration, Consul},
    database, deadline,
    metrics::Metrics,
    observe,
    registration::{Registered, RegistrationConfig},
};

/// A bound, not yet serving, gRPC server with `grpc.health.v1.Health` and server
/// reflection (`grpc.reflection.v1`) already registered.
pub struct GrpcServer {
    listener: TcpListener,
    routes: Routes,
    health: Health,
    drain_period: Duration,
    shutdown_grace: Duration,
    database_probe: Option<(AnyPool, DatabaseConfig)>,
    registration: Option<(Consul, AgentServiceRegistration, Duration)>,
    descriptor_set: &'static [u8],
    metrics: Metrics,
}

impl GrpcServer {
    /// Binds `config.addr()` (port 0 picks a free port) and registers health and
    /// reflection; `descriptor_set` is the encoded `FileDescriptorSet` reflection serves.
    ///
    /// # Errors
    /// When the address cannot be bound or the descriptor set does not decode.
    pub async fn bind(config: &ServerConfig, descriptor_set: &'static [u8]) -> io::Result<Self> {
        let listener = TcpListener::bind(config.addr()).await?;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(descriptor_set)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(io::Error::other)?;
        Ok(Self {
            listener,
            routes: Routes::new(health_service).add_service(reflection),
            health: Health { reporter, services: Vec::new(), serving: Arc::new(Mutex::new(None)) },
            drain_period: config.drain_period,
            shutdown_grace: config.shutdown_grace,
            database_probe: None,
            registration: None,
            descriptor_set,
            metrics: Metrics::new(),
        })
    }

    /// The bound address; its port is the real one when the config said 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound TCP listener has a local address")
    }

    /// Handle to this server's health statuses (the server as a whole and each added service).
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
        self.health.services.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }

    /// While serving, ping `pool` and report NOT_SERVING while it does not answer
    /// (see [`database::watch_health`]).
    pub fn probe_database(mut self, pool: AnyPool, config: &DatabaseConfig) -> Self {
        self.database_probe = Some((pool, config.clone()));
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

    /// Counts this server's RPCs into `metrics` (`grpc_server_*`) rather than into a
    /// registry of its own that nobody scrapes.
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = metrics.clone();
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
        let local_addr = self.local_addr();
        let Self {
            listener,
            routes,
            health,
            drain_period,
            shutdown_grace,
            database_probe,
            registration,
            descriptor_set,
            metrics,
        } = self;
        let descriptor_sets = [descriptor_set, tonic_health::pb::FILE_DESCRIPTOR_SET];
        health.set_serving(true).await;
        let probe = database_probe.map(|(pool, config)| database::watch_health(pool, &config, health.clone()));
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
        let server = Server::builder()
            // gRPC-Web clients (browsers) speak HTTP/1.1; gRPC and gRPC-Web share the port.
            .accept_http1(true)
            .layer(
                ServiceBuilder::new()
                    // Translate gRPC-Web to gRPC first, so every layer below sees plain gRPC
                    // (and its trailers) whichever protocol the client spoke.
                    .layer(tonic_web::GrpcWebLayer::new())
                    // One span per RPC continuing the caller's traceparent, go-grpc-middleware's
                    // grpc_server_* metrics, and one log line at its end inside that span;
                    // outermost after gRPC-Web so the span covers every layer below.
                    .layer(observe::ServerLayer::new(&metrics, &descriptor_sets, local_addr))
                    // Remember each call's deadline, so the calls it makes upstream
                    // carry what remains of it (deadline propagation), and answer
                    // DEADLINE_EXCEEDED when it passes (tonic alone says CANCELLED).
                    .layer(deadline::PropagateLayer),
            )
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal);
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

/// The health statuses a server reports through `grpc.health.v1.Health`.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Vec<&'static str>,
    /// The status last set; `None` before the first.
    serving: Arc<Mutex<Option<bool>>>,
}

impl Health {
    /// Sets the server (`""`) and every added service to SERVING or NOT_SERVING.
    /// Setting the status it already has does nothing, so `Watch` streams get a message
    /// only when the status changes (gRPC health checking protocol, `Watch`).
    pub async fn set_serving(&self, serving: bool) {
        {
            let mut current = self.serving.lock().unwrap_or_else(PoisonError::into_inner);
            if *current == Some(serving) {
                return;
            }
            *current = Some(serving);
        }
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.reporter.set_service_status("", status).await;
        for service in &self.services {
            self.reporter.set_service_status(*service, status).await;
        }
    }
}
