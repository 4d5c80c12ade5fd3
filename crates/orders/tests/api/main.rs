//! Integration tests of the orders service: the real start-up path on port 0, a fresh
//! PostgreSQL database per test, and a real users service in the same process.

mod auth;
mod cli;
mod connect;
mod create;
mod deadline;
mod errors;
mod helpers;
mod lifecycle;
mod list;
mod properties;
mod tls;
