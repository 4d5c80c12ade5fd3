//! mTLS with rustls: the server's and the client's TLS settings from PEM files, re-read when the files change.
//!
//! - `server.tls` ([`ServerTls`]): the server's certificate chain and key, and the CA
//!   that signs client certificates. TLS is terminated on the service's one port, after
//!   the connection limit and before HTTP: gRPC, gRPC-Web and Connect all run over it
//!   (ALPN `h2` and `http/1.1`). With `require_client_cert` (the default once a
//!   `client_ca_file` is set) a client without a certificate, or with one no CA in that
//!   file signed, fails the handshake.
//! - `<upstream>.tls` ([`ClientTls`]): the CA that signs the upstream's certificate,
//!   this service's own certificate and key, and the name to verify. When set, every
//!   endpoint of that upstream is dialled with TLS, whichever resolver found it.
//!
//! Rotation: the files are read at load (a missing file or bad PEM fails start-up,
//! naming the key) and checked again at every handshake: when the modification time or
//! size of any of them changed, the rustls config is built again from the files. A
//! cert-manager Secret volume swaps its files at once through a symlink, so a new pair
//! is seen whole; a pair caught half-written (a key that does not match its certificate)
//! is refused with a WARN and the config in use is kept until the files change again.
//! Established connections keep the certificates they were made with; new ones get the
//! new files. (A `stat` of 2-3 files per handshake costs microseconds; a file watcher
//! would add a thread and miss symlink swaps on some platforms.)

use std::{
    fmt,
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt};
use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::{
    RootCertStore,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    server::WebPkiClientVerifier,
};
use serde::{Deserialize, Deserializer, Serialize, de::Error as _};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tonic::transport::server::Connected;

use crate::{
    support::files::FileStamp,
    transport::incoming::{Connection, ConnectionInfo},
};

/// How long a client may take to finish its TLS handshake before the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The only crypto provider in the tree (ring; see the workspace `Cargo.toml`).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a TLS file or setting could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The certificates in the PEM file at `path` (at least one).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{shown}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{shown}: no PEM certificate in it")));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1). The error never
/// quotes the file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError(format!("{}: no PEM private key ({e})", path.display())))
}

/// The CA certificates in the PEM file at `path`, as trust anchors.
fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| TlsError(format!("{}: not a CA certificate: {e}", path.display())))?;
    }
    Ok(Arc::new(roots))
}

/// Serde: a path to a PEM file holding at least one certificate, checked at load.
fn cert_file<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(deserializer)?;
    read_certs(&path).map_err(D::Error::custom)?;
    Ok(path)
}

/// Serde: as [`cert_file`], optional.
fn optional_cert_file<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    cert_file(deserializer).map(Some)
}

/// Serde: a path to a PEM file holding a private key, checked at load.
fn key_file<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(deserializer)?;
    read_key(&path).map_err(D::Error::custom)?;
    Ok(path)
}

/// Serde: as [`key_file`], optional.
fn optional_key_file<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    key_file(deserializer).map(Some)
}

/// What a file looked like, to notice that it changed (see [`FileStamp`]).
type Stamp = Option<FileStamp>;

fn stamp(path: &Path) -> Stamp {
    FileStamp::of(path)
}

/// A rustls config built from files, built again when any of them changes (see the
/// module docs).
struct Reloading<T> {
    /// What the files are for, in log lines (`server.tls`, `users.tls`).
    name: &'static str,
    paths: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    current: Mutex<(Vec<Stamp>, Arc<T>)>,
}

impl<T> Reloading<T> {
    /// Builds the first config now, with `build` from the settings `raw`, which name the
    /// files `paths` (the ones set).
    fn new<R: Send + Sync + 'static>(
        name: &'static str,
        paths: &[Option<&PathBuf>],
        raw: R,
        build: fn(&R) -> Result<T, TlsError>,
    ) -> Result<Self, TlsError>
    where
        T: 'static,
    {
        let paths: Vec<PathBuf> = paths.iter().flatten().map(|path| (*path).clone()).collect();
        let stamps = paths.iter().map(|path| stamp(path)).collect();
        let first = build(&raw)?;
        let build = Box::new(move || build(&raw));
        Ok(Self { name, paths, build, current: Mutex::new((stamps, Arc::new(first))) })
    }

    /// The config for the next handshake: built again first when a file changed.
    fn current(&self) -> Arc<T> {
        let stamps: Vec<Stamp> = self.paths.iter().map(|path| stamp(path)).collect();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if stamps != current.0 {
            current.0 = stamps;
            match (self.build)() {
                Ok(config) => {
                    current.1 = Arc::new(config);
                    tracing::info!(section = self.name, "TLS files changed: certificates reloaded");
                }
                Err(error) => {
                    tracing::warn!(section = self.name, %error, "TLS files changed but do not load; keeping those in use");
                }
            }
        }
        current.1.clone()
    }
}

/// `server.tls`: TLS on the service's port, with client certificates (mTLS). Keys
/// (each a path; env `USERS_SERVER__TLS__CERT_FILE`, …):
///
/// - `cert_file`: the server's certificate chain, PEM, leaf first;
/// - `key_file`: its private key, PEM (PKCS#8, PKCS#1 or SEC1);
/// - `client_ca_file`: the CA certificates, PEM, that sign accepted client
///   certificates (unset: clients are not asked for one);
/// - `require_client_cert`: whether a client must present one (default `true`, which
///   needs `client_ca_file`); `false` with a `client_ca_file` verifies a certificate
///   when one is presented and lets clients without one in.
///
/// Every file is read at load; see the module docs for rotation.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "RawServerTls", into = "RawServerTls")]
pub struct ServerTls {
    raw: RawServerTls,
    config: Arc<Reloading<rustls::ServerConfig>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerTls {
    #[serde(deserialize_with = "cert_file")]
    cert_file: PathBuf,
    #[serde(deserialize_with = "key_file")]
    key_file: PathBuf,
    #[serde(default, deserialize_with = "optional_cert_file", skip_serializing_if = "Option::is_none")]
    client_ca_file: Option<PathBuf>,
    #[serde(default = "yes")]
    require_client_cert: bool,
}

fn yes() -> bool {
    true
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.raw.fmt(f)
    }
}

impl From<ServerTls> for RawServerTls {
    fn from(tls: ServerTls) -> Self {
        tls.raw
    }
}

impl TryFrom<RawServerTls> for ServerTls {
    type Error = TlsError;

    fn try_from(raw: RawServerTls) -> Result<Self, TlsError> {
        if raw.require_client_cert && raw.client_ca_file.is_none() {
            return Err(TlsError(
                "`require_client_cert` needs `client_ca_file` (or set `require_client_cert = false`)".to_owned(),
            ));
        }
        let paths = [Some(&raw.cert_file), Some(&raw.key_file), raw.client_ca_file.as_ref()];
        let config = Reloading::new("server.tls", &paths, raw.clone(), build_server)?;
        Ok(Self { config: Arc::new(config), raw })
    }
}

impl ServerTls {
    /// TLS with client certificates signed by `client_ca_file` required.
    ///
    /// # Errors
    /// A file that does not read or a key that does not match its certificate.
    pub fn new(cert_file: &Path, key_file: &Path, client_ca_file: &Path) -> Result<Self, TlsError> {
        Self::try_from(RawServerTls {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            client_ca_file: Some(client_ca_file.to_owned()),
            require_client_cert: true,
        })
    }

    /// Serves clients without a certificate too (a presented one is still verified).
    ///
    /// # Errors
    /// As [`ServerTls::new`].
    pub fn client_cert_optional(self) -> Result<Self, TlsError> {
        Self::try_from(RawServerTls { require_client_cert: false, ..self.raw })
    }

    /// Completes the TLS handshake on an accepted connection (bounded by
    /// [`HANDSHAKE_TIMEOUT`]) with the config the files hold now.
    async fn accept(&self, connection: Connection<TcpStream>) -> io::Result<ServerIo> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.current());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(connection)).await {
            Ok(Ok(stream)) => Ok(ServerIo::Tls(Box::new(stream))),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
        }
    }
}

fn build_server(raw: &RawServerTls) -> Result<rustls::ServerConfig, TlsError> {
    let certs = read_certs(&raw.cert_file)?;
    let key = read_key(&raw.key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match &raw.client_ca_file {
        Some(path) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(read_roots(path)?, provider());
            let verifier = if raw.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
            let verifier = verifier.build().map_err(|e| TlsError(format!("`client_ca_file`: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("`cert_file` and `key_file` do not make a pair: {e}")))?;
    // gRPC needs HTTP/2; gRPC-Web and Connect from browsers may come over HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A connection the server serves: plain TCP, or TLS over it.
pub enum ServerIo {
    /// No `server.tls`.
    Plain(Connection<TcpStream>),
    /// After a completed handshake.
    Tls(Box<tokio_rustls::server::TlsStream<Connection<TcpStream>>>),
}

impl ServerIo {
    /// The certificates the client presented, leaf first (none over plain TCP or
    /// when the client sent none).
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(stream) => stream.get_ref().1.peer_certificates(),
        }
    }
}

impl Connected for ServerIo {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        match self {
            Self::Plain(connection) => connection.connect_info(),
            Self::Tls(stream) => stream.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Self::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Self::Tls(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_flush(cx),
            Self::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Self::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(io) => io.is_write_vectored(),
            Self::Tls(io) => io.is_write_vectored(),
        }
    }
}

/// The connections the server serves: `incoming` as is without `tls`; with it, each
/// after its handshake. Handshakes run concurrently (at most `max_pending` at once,
/// the connection limit already bounds them); a failed one is logged at debug and the
/// connection closed: a client without a valid certificate never reaches HTTP.
pub fn accept<S>(
    incoming: S,
    tls: Option<ServerTls>,
    max_pending: usize,
) -> impl Stream<Item = io::Result<ServerIo>> + Send + 'static
where
    S: Stream<Item = io::Result<Connection<TcpStream>>> + Send + 'static,
{
    incoming
        .map(move |connection| {
            let tls = tls.clone();
            async move {
                let connection = connection?;
                match tls {
                    None => Ok(ServerIo::Plain(connection)),
                    Some(tls) => {
                        let peer = connection.connect_info().remote_addr();
                        tls.accept(connection).await.map_err(|error| {
                            tracing::debug!(peer = ?peer, %error, "TLS handshake failed; connection closed");
                            error
                        })
                    }
                }
            }
        })
        .buffer_unordered(max_pending.max(1))
        .filter(|result| std::future::ready(result.is_ok()))
}

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
