//! Below HTTP: `incoming` (the accept loop with TCP_NODELAY, the connection limit, idle
//! and stalled connections, open-call tracking, the stream cap) and `tls` (mTLS with
//! reloaded PEM files: the server's acceptor and the client's connector).
//!
//! `tls` imports `incoming` (a TLS connection wraps an accepted one); both sit below
//! `server` and `client`, which compose them.

pub mod incoming;
pub mod tls;
