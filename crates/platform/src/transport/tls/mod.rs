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
//!
//! One file per side: `server` ([`ServerTls`], the acceptor and [`accept`]), `client`
//! ([`ClientTls`] and its connector), `reload` (PEM files read and the rustls config
//! rebuilt when they change, for both). Both sides import `reload`, not each other.

mod client;
mod reload;
mod server;

pub use self::{
    client::ClientTls,
    reload::TlsError,
    server::{HANDSHAKE_TIMEOUT, ServerIo, ServerTls, accept},
};
