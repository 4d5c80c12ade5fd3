//! mTLS for a stack run: a throwaway CA, users' and orders' certificates, and the env that turns TLS on between them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use platform::transport::tls::ClientTls;
use testkit::DevCa;

use crate::Service;

/// The names in users' certificate: what orders may verify (`users` through
/// `server_name`, the loopback address of a static endpoint, `localhost`).
pub const USERS_NAMES: &[&str] = &["users", "localhost", "127.0.0.1"];
/// The name in orders' client certificate.
pub const ORDERS_NAMES: &[&str] = &["orders"];

/// A fresh CA (its key only in memory) and, in the run's directory, `ca.pem`,
/// `users.pem`/`users-key.pem` and `orders.pem`/`orders-key.pem`. Nothing is committed:
/// each run makes its own.
pub struct DevTls {
    dir: PathBuf,
    /// The CA, to issue more certificates (a rotation, a client of the driver's).
    pub ca: DevCa,
}

impl DevTls {
    /// Generates the CA and writes the files into `dir` (keys with mode 0600).
    ///
    /// # Errors
    /// When a certificate cannot be made or a file written.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join("tls");
        let ca = DevCa::generate("stack dev CA").context("a dev CA")?;
        ca.write_files(&dir, &[("users", USERS_NAMES), ("orders", ORDERS_NAMES)])
            .with_context(|| format!("write certificates into {}", dir.display()))?;
        Ok(Self { dir, ca })
    }

    /// The file `name` (e.g. `ca.pem`) in the certificates' directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Env vars for a users replica: TLS on its port, client certificates from this CA required.
    pub fn users_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("USERS_SERVER__TLS__CERT_FILE", self.file("users.pem")),
            ("USERS_SERVER__TLS__KEY_FILE", self.file("users-key.pem")),
            ("USERS_SERVER__TLS__CLIENT_CA_FILE", self.file("ca.pem")),
            ("USERS_SERVER__TLS__REQUIRE_CLIENT_CERT", "true".to_owned()),
        ]
    }

    /// Env vars for an orders replica calling `users` over mTLS: their `https://`
    /// endpoints (each address verified against users' certificate), this CA, and
    /// orders' client certificate. Put after [`crate::orders_env`], whose endpoints they replace.
    pub fn orders_env(&self, users: &[&Service]) -> Vec<(&'static str, String)> {
        let endpoints: Vec<String> = users.iter().map(|service| https(&service.address)).collect();
        vec![
            ("ORDERS_USERS__ENDPOINTS", format!("[{}]", endpoints.join(","))),
            ("ORDERS_USERS__TLS__CA_FILE", self.file("ca.pem")),
            ("ORDERS_USERS__TLS__CERT_FILE", self.file("orders.pem")),
            ("ORDERS_USERS__TLS__KEY_FILE", self.file("orders-key.pem")),
        ]
    }

    /// The client side for a driver calling a users replica itself: this CA, and
    /// orders' certificate as its own (a dev run has one client identity).
    ///
    /// # Errors
    /// When the files do not read.
    pub fn client(&self) -> anyhow::Result<ClientTls> {
        let (cert, key) = (self.path("orders.pem"), self.path("orders-key.pem"));
        ClientTls::new(&self.path("ca.pem"), Some((&cert, &key))).context("the dev client certificate")
    }

    /// A channel to `service` over mTLS (see [`DevTls::client`]).
    ///
    /// # Errors
    /// When the files do not read or the connection fails.
    pub async fn channel(&self, service: &Service) -> anyhow::Result<tonic::transport::Channel> {
        let address = https(&service.address);
        self.client()?.channel(&address).await.with_context(|| format!("connect to {address} over mTLS"))
    }

    fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// `http://host:port` as `https://host:port`.
pub fn https(address: &str) -> String {
    match address.strip_prefix("http://") {
        Some(rest) => format!("https://{rest}"),
        None => address.to_owned(),
    }
}
