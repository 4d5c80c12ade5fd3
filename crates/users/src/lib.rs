//! The users service: creates users and finds them by id or email.
//!
//! ```text
//! gRPC request -> platform::server layers -> grpc.rs (proto <-> domain, Error -> Status)
//!              -> domain.rs (use cases: Users) -> repository.rs (sqlx: PostgreSQL or SQLite)
//!                   -> user.rs (User, UserId, UserName, the error enum; imports nothing of ours)
//! ```
//!
//! Imports point down this diagram only; `scripts/import-cycles.py` checks there is no loop.

#![warn(missing_docs)]

pub mod app;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod repository;
pub mod user;

pub use app::App;
pub use config::Config;
