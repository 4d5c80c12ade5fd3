//! The users service: creates users and finds them by id or email.
//!
//! ```text
//! gRPC request -> platform::server layers -> grpc.rs (proto <-> domain, Error -> Status)
//!              -> domain.rs (User, Email, rules) -> repository.rs (sqlx: PostgreSQL or SQLite)
//! ```

#![warn(missing_docs)]

pub mod app;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod repository;

pub use app::App;
pub use config::Config;
