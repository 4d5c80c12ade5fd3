//! platform's integration tests, one binary (one link on a 2-core machine), one module
//! per concern: hostile clients and limits, property tests, the server stack, mTLS.

mod limits;
mod properties;
mod server;
mod tls;
