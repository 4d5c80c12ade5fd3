//! The orders service: places orders for existing customers, pages through them, and
//! follows each from created to delivered.
//!
//! ```text
//! gRPC request -> platform::server layers -> grpc.rs (proto <-> domain, Error -> Status)
//!              -> domain.rs (Order, rules, use cases)
//!                   -> repository.rs (sqlx: PostgreSQL or SQLite) -> changes.rs (who changed: LISTEN/NOTIFY)
//!                   -> users_client.rs (users.v1 over platform::client: balancing, deadline, retries)
//! ```

#![warn(missing_docs)]

pub mod app;
pub mod changes;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod page_token;
pub mod repository;
pub mod users_client;

pub use app::App;
pub use config::Config;
