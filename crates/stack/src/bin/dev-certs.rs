//! `cargo run -p stack --bin dev-certs -- <dir>`: a throwaway CA and users' and orders'
//! certificates for a local stack (compose, a manual run). Never commit what it writes.

use std::path::PathBuf;

use clap::Parser;
use stack::tls::DevTls;

/// Command line of dev-certs.
#[derive(Parser)]
#[command(about = "Write a dev CA (ca.pem) and users/orders certificates with their keys into <dir>/tls")]
struct Args {
    /// Directory to write into (created if missing; a `tls` folder inside it holds the files).
    dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tls = DevTls::new(&args.dir)?;
    println!("wrote ca.pem, users.pem, users-key.pem, orders.pem, orders-key.pem into {}", tls.path("").display());
    println!("users:  USERS_SERVER__TLS__CERT_FILE, __KEY_FILE, __CLIENT_CA_FILE (see README, Security)");
    println!("orders: ORDERS_USERS__TLS__CA_FILE, __CERT_FILE, __KEY_FILE; endpoints as https://");
    Ok(())
}
