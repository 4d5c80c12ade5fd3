//! What both services share, one module per concern. These are modules, not a
//! framework: each service's `app.rs` calls them in a few lines and stays in charge of
//! its own start-up.
//!
//! The map, from the top of the import graph down (imports only point down this list;
//! `python3 scripts/import-cycles.py` checks every file):
//!
//! - [`cli`]: the services' command line (serve, `health-check`, `migrate`), exit 78 on
//!   bad config; [`shutdown`]: SIGTERM or Ctrl-C.
//! - [`server`]: the gRPC server and its layer stack in request order (`server/mod.rs`),
//!   with the layers that are only the server's: `rate_limit` (per method and caller),
//!   `protocol` (gRPC's answers where tonic gives others), `recover` (a panicking
//!   handler fails its own call), `health` (`grpc.health.v1` and the database watch),
//!   `fault` (test-only fault injection).
//! - [`client`]: the resilient client: `client::channel`, composed from the `deadline`,
//!   `retry` (and `hedge`, both over `replay`), `balance` (with `outlier` ejection) steps;
//!   retry rules live in `client/config.rs` (`RetryPolicy`, `HedgingPolicy`, `RetryBudget`).
//! - [`discovery`]: where endpoints come from (static, Consul, DNS resolvers), with the
//!   Consul HTTP client (`discovery::consul`) and this instance's registration
//!   (`discovery::registration`).
//! - [`auth`]: bearer JWT checks for the server (`Authenticator`, `AuthLayer`) and the
//!   caller token a client attaches (`CallerToken`).
//! - [`database`]: the pool, its breaker, query spans and pool metrics.
//! - [`config`]: the loader (figment layers, exit 78, the key named) and the sections
//!   the services share (`ServerConfig`, `DatabaseConfig`, `LogConfig`); a new shared
//!   key goes into its section there.
//! - [`transport`]: below HTTP: the accept loop and connection limits (`incoming`), and
//!   mTLS (`tls`: `ServerTls`, and `ClientTls`, the mTLS client).
//! - [`observability`]: logs, traces, metrics, the admin endpoint and the per-call layer.
//! - [`deadline`]: deadline propagation across hops (the `grpc-timeout` codec comes from
//!   the `connect` crate).
//! - [`status`], [`email`], [`id`]: the value types and the error mapping the domains use.
//! - `support` (crate-private): backoff, file stamps, redaction, the gate service shape,
//!   the proto method reader.
//!
//! Beside this crate: the Connect protocol layer is the `connect` crate, and test
//! support with the dev CA and token issuer is `testkit`, which no production binary
//! links.

#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod database;
pub mod deadline;
pub mod discovery;
pub mod email;
pub mod id;
pub mod observability;
pub mod server;
pub mod shutdown;
pub mod status;
pub(crate) mod support;
pub mod transport;
