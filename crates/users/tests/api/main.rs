//! Integration tests of the users service: the real binary's start-up path on port 0
//! against a fresh PostgreSQL database per test.

mod auth;
mod cli;
mod connect;
mod errors;
mod health;
mod helpers;
mod outage;
mod users;
