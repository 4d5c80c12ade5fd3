//! The orders service: places orders for existing customers, pages through them, and
//! follows each from created to delivered.
//!
//! ```text
//! gRPC request -> platform::server layers -> grpc.rs (proto <-> domain, Error -> Status)
//!              -> domain.rs (use cases: Orders)
//!                   -> watchers.rs (WatchOrder's fan-out: one read per change, per watched order)
//!                   -> repository.rs (sqlx: PostgreSQL or SQLite) -> changes.rs (who changed: LISTEN/NOTIFY)
//!                   -> users_client.rs (users.v1 over platform::client: balancing, deadline, retries)
//!                   -> page_token.rs (signed ListOrders cursors)
//!                        -> order.rs (value types and the error enum; imports nothing of ours)
//! ```
//!
//! Imports point down this diagram only; `scripts/import-cycles.py` checks there is no loop.

#![warn(missing_docs)]

pub mod app;
pub mod changes;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod order;
pub mod page_token;
pub mod repository;
pub mod users_client;
pub mod watchers;

pub use app::App;
pub use config::Config;
