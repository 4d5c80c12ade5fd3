//! The client side: `<upstream>.tls` ([`ClientTls`]) and the connector that dials an endpoint with it.

use std::{
    fmt,
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use super::reload::{
    Reloading, TlsError, cert_file, optional_cert_file, optional_key_file, provider, read_certs, read_key, read_roots,
};

/// `<upstream>.tls`: dial the upstream with TLS and present a client certificate. Keys
/// (for orders' `users` upstream, env `ORDERS_USERS__TLS__CA_FILE`, …):
///
/// - `ca_file`: the CA certificates, PEM, that sign the upstream's certificates;
/// - `cert_file`, `key_file`: this service's certificate chain and key, PEM (both or
///   neither; neither: no client certificate);
/// - `server_name`: the name the upstream's certificate must carry (unset: the
///   endpoint's host, a DNS name or an IP address). Set it when endpoints are
///   addresses (Consul, DNS resolvers) and certificates carry a service name.
///
/// With this section every endpoint of the upstream is dialled with TLS, whichever
/// resolver found it; static `endpoints` must then be written `https://`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "RawClientTls", into = "RawClientTls")]
pub struct ClientTls {
    raw: RawClientTls,
    server_name: Option<ServerName<'static>>,
    config: Arc<Reloading<rustls::ClientConfig>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientTls {
    #[serde(deserialize_with = "cert_file")]
    ca_file: PathBuf,
    #[serde(default, deserialize_with = "optional_cert_file", skip_serializing_if = "Option::is_none")]
    cert_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "optional_key_file", skip_serializing_if = "Option::is_none")]
    key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.raw.fmt(f)
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl From<ClientTls> for RawClientTls {
    fn from(tls: ClientTls) -> Self {
        tls.raw
    }
}

impl TryFrom<RawClientTls> for ClientTls {
    type Error = TlsError;

    fn try_from(raw: RawClientTls) -> Result<Self, TlsError> {
        if raw.cert_file.is_some() != raw.key_file.is_some() {
            return Err(TlsError("set both `cert_file` and `key_file`, or neither".to_owned()));
        }
        let server_name = raw
            .server_name
            .as_ref()
            .map(|name| {
                ServerName::try_from(name.clone()).map_err(|_| {
                    let shown: String = name.chars().take(64).collect();
                    TlsError(format!("`server_name` {shown:?} is not a DNS name or an IP address"))
                })
            })
            .transpose()?;
        let paths = [Some(&raw.ca_file), raw.cert_file.as_ref(), raw.key_file.as_ref()];
        let config = Reloading::new("client tls", &paths, raw.clone(), build_client)?;
        Ok(Self { config: Arc::new(config), server_name, raw })
    }
}

impl ClientTls {
    /// Trusts the CAs in `ca_file` and presents `cert_file`/`key_file` when given.
    ///
    /// # Errors
    /// A file that does not read, or a key that does not match its certificate.
    pub fn new(ca_file: &Path, client: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        Self::try_from(RawClientTls {
            ca_file: ca_file.to_owned(),
            cert_file: client.map(|(cert, _)| cert.to_owned()),
            key_file: client.map(|(_, key)| key.to_owned()),
            server_name: None,
        })
    }

    /// Verifies `name` in the upstream's certificate instead of each endpoint's host.
    ///
    /// # Errors
    /// When `name` is neither a DNS name nor an IP address.
    pub fn server_name(self, name: &str) -> Result<Self, TlsError> {
        Self::try_from(RawClientTls { server_name: Some(name.to_owned()), ..self.raw })
    }

    /// A connector for tonic endpoints: TCP (TCP_NODELAY on), then TLS with the config
    /// the files hold now, verifying `server_name` or the endpoint's host.
    pub(crate) fn connector(&self) -> TlsConnector {
        TlsConnector { tls: self.clone() }
    }

    /// A plain tonic channel to the one endpoint `uri` over this TLS, for drivers and
    /// tests that call a service directly (services use [`crate::client::channel`]).
    ///
    /// # Errors
    /// When `uri` is not a valid endpoint or the first connection fails.
    pub async fn channel(&self, uri: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        tonic::transport::Endpoint::from_shared(uri.to_owned())?.connect_with_connector(self.connector()).await
    }

    /// Connects to `uri`'s host and port and completes the handshake, offering ALPN `h2`.
    ///
    /// # Errors
    /// When the TCP connection or the handshake fails (a certificate the CA did not
    /// sign, or for another name).
    pub async fn connect(&self, uri: &Uri) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let host = uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("http") { 80 } else { 443 });
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_owned())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
        };
        let stream = TcpStream::connect((host, port)).await?;
        // Small HTTP/2 frames must not wait for Nagle's algorithm (see connections.rs).
        stream.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(self.config.current()).connect(name, stream).await
    }
}

fn build_client(raw: &RawClientTls) -> Result<rustls::ClientConfig, TlsError> {
    let roots = read_roots(&raw.ca_file)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&raw.cert_file, &raw.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| TlsError(format!("`cert_file` and `key_file` do not make a pair: {e}")))?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The tower connector [`ClientTls::connector`] returns.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    tls: ClientTls,
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move { tls.connect(&uri).await.map(TokioIo::new) })
    }
}
