//! What both services share, one module per concern: config, telemetry (logs and
//! traces), metrics and the admin endpoint, the gRPC server stack and its health, the
//! database pool, Consul registration and discovery, the resilient client, deadline
//! propagation, shutdown.
//!
//! These are modules, not a framework: each service's `app.rs` calls them in a few
//! lines and stays in charge of its own start-up.

#![warn(missing_docs)]

// Until database.rs moves into the tree (after the database-error work lands): its tests
// name `crate::metrics`.
#[cfg(test)]
use observability::metrics;

pub mod auth;
pub mod backoff;
pub mod cli;
pub mod client;
pub mod config;
pub mod connections;
pub mod consul;
pub mod database;
pub mod deadline;
pub mod discovery;
pub mod email;
pub mod fault;
pub mod files;
pub mod gate;
pub mod health;
pub mod id;
pub mod methods;
pub mod observability;
pub mod protocol;
pub mod rate_limit;
pub mod recover;
pub mod redact;
pub mod registration;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod tls;
