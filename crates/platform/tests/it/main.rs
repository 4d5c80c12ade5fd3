//! platform's integration tests, one binary (one link on a 2-core machine), one module
//! per concern: the database pool and its errors, hostile clients and limits, property
//! tests, the server stack, mTLS.

mod database;
mod limits;
mod properties;
mod server;
mod tls;
