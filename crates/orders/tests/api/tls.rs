//! Orders calls users over mTLS: users requires a client certificate from the CA, orders presents its own and
//! verifies users' name.

use std::path::PathBuf;

use platform::transport::tls::{ClientTls, ServerTls};
use testkit::DevCa;

use crate::helpers::{order_request, spawn_stack_over_mtls};

/// A dev CA's files in a fresh directory: `ca.pem`, `users.pem` (for `users` and
/// `127.0.0.1`), `orders.pem`, each with its `-key.pem`.
struct Certs(PathBuf);

impl Certs {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("orders-tls-{}", uuid::Uuid::new_v4()));
        let ca = DevCa::generate("orders test CA").expect("a CA");
        ca.write_files(&dir, &[("users", &["users", "127.0.0.1"]), ("orders", &["orders"])]).expect("files written");
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn users(&self) -> ServerTls {
        ServerTls::new(&self.path("users.pem"), &self.path("users-key.pem"), &self.path("ca.pem")).expect("valid")
    }

    fn orders(&self) -> ClientTls {
        let (cert, key) = (self.path("orders.pem"), self.path("orders-key.pem"));
        ClientTls::new(&self.path("ca.pem"), Some((&cert, &key))).expect("valid")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn create_order_looks_the_customer_up_in_users_over_mtls() {
    let certs = Certs::new();
    let mut stack = spawn_stack_over_mtls(certs.users(), certs.orders(), certs.orders()).await;
    assert!(stack.users_address.starts_with("https://"), "{}", stack.users_address);
    stack.create_user("tls@example.com").await;
    let order = stack.create_order("tls@example.com", 1250).await;
    assert_eq!(order.customer_email, "tls@example.com");
}

#[tokio::test]
async fn create_order_fails_unavailable_when_orders_has_no_client_certificate() {
    let certs = Certs::new();
    let anonymous = ClientTls::new(&certs.path("ca.pem"), None).expect("valid");
    let mut stack = spawn_stack_over_mtls(certs.users(), anonymous, certs.orders()).await;
    let error = stack.orders.create_order(order_request("tls@example.com", 100, "")).await.expect_err("refused");
    assert_eq!(error.code(), tonic::Code::Unavailable, "{error:?}");
}
