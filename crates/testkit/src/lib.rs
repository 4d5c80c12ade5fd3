//! Test support for the services' integration tests, the system tests, `make demo` and
//! `dev-certs`: dev tools that production binaries never carry (`cargo tree -e normal
//! -p users` shows no rcgen). Nothing in `platform`, `users` or `orders` depends on this
//! crate outside their tests.
//!
//! - [`DevCa`] (`tls`): a throwaway certificate authority (rcgen) and the files it writes.
//! - [`DevIssuer`] (`auth`): a throwaway Ed25519 JWT issuer and its JWKS file.
//! - [`DnsZone`] (`dns`): an authoritative in-memory DNS zone whose records a test sets.
//! - [`fresh_postgres_database`], [`drop_postgres_database`], [`TcpProxy`] (`postgres`):
//!   databases under `TEST_DATABASE_URL` and a proxy to cut.
//! - [`ServiceBinary`] (`binary`): a service binary run as an operator would.
//! - [`ServerSection`] (`config`): a config of one `server` section.
//! - [`assert_defaults_documented`] (`defaults`): a service's generated defaults file,
//!   checked against the code and the README.
//!
//! Imports point to `platform` only (for [`ServerSection`]); the modules import none of each other.

#![warn(missing_docs)]

mod auth;
mod binary;
mod config;
mod defaults;
mod dns;
mod postgres;
mod tls;

pub use self::{
    auth::DevIssuer,
    binary::{BinaryExit, ServiceBinary},
    config::ServerSection,
    defaults::assert_defaults_documented,
    dns::DnsZone,
    postgres::{TcpProxy, drop_postgres_database, fresh_postgres_database},
    tls::{DevCa, DevCert},
};
