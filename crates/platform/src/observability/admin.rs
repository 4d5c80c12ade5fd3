//! The admin HTTP endpoint beside the gRPC port: `GET /metrics` for Prometheus.

use std::{
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use axum::serve::{Listener, ListenerExt};
use prometheus::TEXT_FORMAT;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

use crate::observability::metrics::Metrics;

/// Where the admin HTTP endpoint (`GET /metrics`) listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Interface to bind. Default `127.0.0.1`; use `0.0.0.0` inside a container so
    /// Prometheus can scrape it.
    pub host: IpAddr,
    /// TCP port; `0` picks a free one (the app logs it as `admin_address`).
    pub port: u16,
}

impl AdminConfig {
    /// A loopback admin endpoint on `port`.
    pub fn on_port(port: u16) -> Self {
        Self { host: IpAddr::V4(Ipv4Addr::LOCALHOST), port }
    }

    /// The socket address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// A bound, not yet serving, admin HTTP endpoint: `GET /metrics` renders the registry
/// in the Prometheus text format 0.0.4.
pub struct AdminServer {
    listener: TcpListener,
    metrics: Metrics,
}

impl AdminServer {
    /// Binds `config.addr()` (port 0 picks a free port).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(config: &AdminConfig, metrics: Metrics) -> io::Result<Self> {
        Ok(Self { listener: TcpListener::bind(config.addr()).await?, metrics })
    }

    /// The bound address; its port is the real one when the config said 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound TCP listener has a local address")
    }

    /// Serves until `shutdown` resolves.
    ///
    /// # Errors
    /// An I/O error of the listener.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let metrics = self.metrics;
        let router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let body = metrics.render();
                async move { ([(http::header::CONTENT_TYPE, TEXT_FORMAT)], body) }
            }),
        );
        axum::serve(accepting(self.listener), router).with_graceful_shutdown(shutdown).await
    }

    /// Serves `/metrics` while `work` (the gRPC server, until it has drained) runs,
    /// so the last scrape can still see the drain; stops with it and returns its output.
    pub async fn serve_while<F: Future>(self, work: F) -> F::Output {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = tokio::spawn(self.serve(async move {
            let _ = stopped.await;
        }));
        let output = work.await;
        let _ = stop.send(());
        let _ = admin.await;
        output
    }
}

/// The connections `listener` accepts, each with TCP_NODELAY set: `axum::serve` leaves
/// Nagle's algorithm on, and a scrape's small response would then wait for the
/// scraper's delayed ACK (~40 ms) before its last segment leaves.
fn accepting(listener: TcpListener) -> impl Listener<Io = TcpStream, Addr = SocketAddr> {
    listener.tap_io(|stream: &mut TcpStream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(error = %error, "TCP_NODELAY not set on an admin connection");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::metrics::MethodLabels;

    #[tokio::test]
    async fn the_admin_endpoint_serves_the_registry_as_prometheus_text() {
        let metrics = Metrics::new();
        metrics
            .grpc_client()
            .started(&MethodLabels { kind: "unary", service: "a.B".into(), method: "C".into() }, "grpc");
        let admin = AdminServer::bind(&AdminConfig::on_port(0), metrics).await.expect("bind");
        let address = admin.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(admin.serve(async move {
            let _ = stopped.await;
        }));
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("text/plain; version=0.0.4"), "{response}");
        assert!(response.contains(
            r#"grpc_client_started_total{grpc_method="C",grpc_service="a.B",grpc_type="unary",rpc_protocol="grpc"} 1"#
        ));
        let _ = stop.send(());
        server.await.expect("joins").expect("serves cleanly");
    }

    #[tokio::test]
    async fn every_connection_the_admin_endpoint_accepts_has_tcp_nodelay() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
        let address = listener.local_addr().expect("bound");
        let mut accepting = accepting(listener);
        let _client = TcpStream::connect(address).await.expect("connect");
        let (accepted, _) = accepting.accept().await;
        assert!(accepted.nodelay().expect("readable option"), "Nagle's algorithm is still on");
    }
}
