//! The system tests, one binary (one link on a 2-core machine): the release binaries run
//! as processes, with Consul, Jaeger, DNS, PostgreSQL and the TypeScript client as the
//! tests need them; one module per scenario group.

mod consul;
mod deploy;
mod dns;
mod observability;
mod operator;
mod outage;
mod outliers;
mod typescript;
