//! The server side: `server.tls` ([`ServerTls`]), the connection it serves ([`ServerIo`]) and the handshakes of [`accept`].

use std::{
    fmt, io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt};
use rustls::{pki_types::CertificateDer, server::WebPkiClientVerifier};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tonic::transport::server::Connected;

use super::reload::{
    Reloading, TlsError, cert_file, key_file, optional_cert_file, provider, read_certs, read_key, read_roots,
};
use crate::transport::incoming::{Connection, ConnectionInfo};

/// How long a client may take to finish its TLS handshake before the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
