//! mTLS from outside, with real handshakes on 127.0.0.1: who gets in, which names are verified, and rotated
//! certificate files picked up without a restart; gRPC, gRPC-Web and Connect over TLS.

use std::{path::PathBuf, time::Duration};

use platform::{
    auth::{AuthConfig, Authenticator},
    client::{ClientConfig, ResilientChannel},
    config::ServerConfig,
    discovery,
    observability::metrics::Metrics,
    server::GrpcServer,
    transport::tls::{ClientTls, ServerTls},
};
use testkit::DevCa;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::oneshot,
    time::Instant,
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// A guard against a hung test, far above any real handshake or answer.
const PATIENCE: Duration = Duration::from_secs(20);

/// A dev CA and the files of one test: `ca.pem`, `server.pem` (for `localhost`,
/// `127.0.0.1` and `users`), `client.pem` (for `orders`), each with its `-key.pem`.
struct Certs {
    ca: DevCa,
    dir: PathBuf,
}

impl Certs {
    fn new() -> Self {
        Self::of_ca("test CA")
    }

    /// Files of a CA named `name`: another CA of the same name is a forgery, not a stranger.
    fn of_ca(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("platform-tls-{}", uuid::Uuid::new_v4()));
        let ca = DevCa::generate(name).expect("a CA");
        ca.write_files(&dir, &[("server", &["localhost", "127.0.0.1", "users"]), ("client", &["orders"])])
            .expect("files written");
        Self { ca, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn server_tls(&self) -> ServerTls {
        ServerTls::new(&self.path("server.pem"), &self.path("server-key.pem"), &self.path("ca.pem")).expect("valid")
    }

    /// A client trusting this CA and presenting `client.pem`.
    fn client_tls(&self) -> ClientTls {
        self.client_tls_trusting(self)
    }

    /// A client trusting `trusted`'s CA and presenting this CA's `client.pem`.
    fn client_tls_trusting(&self, trusted: &Certs) -> ClientTls {
        let client = (self.path("client.pem"), self.path("client-key.pem"));
        ClientTls::new(&trusted.path("ca.pem"), Some((&client.0, &client.1))).expect("valid")
    }

    /// A client trusting this CA and presenting no certificate.
    fn anonymous_client_tls(&self) -> ClientTls {
        ClientTls::new(&self.path("ca.pem"), None).expect("valid")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server with only health and reflection, TLS as `tls` says; stops when the sender drops.
async fn serve(tls: ServerTls) -> (String, oneshot::Sender<()>) {
    let mut config = ServerConfig::on_port(0);
    config.drain_period = Duration::ZERO;
    config.tls = Some(tls);
    let server = GrpcServer::bind(&config, api::FILE_DESCRIPTOR_SET, &Metrics::new())
        .await
        .expect("bind")
        .authenticate(Authenticator::new(&AuthConfig::none()).expect("nothing to read"));
    let address = format!("https://127.0.0.1:{}", server.local_addr().port());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    (address, stop)
}

/// New [`Certs`] and a server with their `server.pem`, requiring client certificates;
/// it stops when the sender drops.
async fn serve_with_new_certs() -> (Certs, String, oneshot::Sender<()>) {
    let certs = Certs::new();
    let (address, stop) = serve(certs.server_tls()).await;
    (certs, address, stop)
}

/// Connects with `tls`, sends the HTTP/2 preface and reads the server's first bytes:
/// the server only answers once the handshake (client certificate included) passed.
async fn first_answer(tls: &ClientTls, address: &str) -> std::io::Result<usize> {
    tokio::time::timeout(PATIENCE, async {
        let mut stream = tls.connect(&address.parse().expect("a URI")).await?;
        stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        stream.flush().await?;
        let mut buffer = [0u8; 64];
        stream.read(&mut buffer).await
    })
    .await
    .expect("the server answers or refuses in time")
}

/// A health check over gRPC through the client stack with `tls`.
async fn health_check(tls: ClientTls, address: &str) -> Result<ServingStatus, tonic::Status> {
    let mut config = ClientConfig::with_endpoints(vec![address.parse().expect("a URI")]);
    config.tls = Some(tls);
    config.timeout = PATIENCE;
    let resolver = discovery::fixed(vec![address.parse().expect("a URI")]);
    let channel = ResilientChannel::new("users", &config, resolver, api::FILE_DESCRIPTOR_SET).expect("decodes");
    let mut client = HealthClient::new(channel);
    let response = client.check(HealthCheckRequest { service: String::new() }).await?;
    Ok(response.into_inner().status())
}

/// Asserts a handshake with `tls` fails with an error that says `why`, and a call with
/// it is UNAVAILABLE.
async fn assert_refused_at_the_handshake(tls: ClientTls, address: &str, why: &str) {
    let error = first_answer(&tls, address).await.expect_err("no entry");
    assert!(error.to_string().contains(why), "{error}");
    let call = health_check(tls, address).await.expect_err("no call either");
    assert_eq!(call.code(), tonic::Code::Unavailable, "{call}");
}

#[tokio::test]
async fn a_call_with_a_client_certificate_from_the_ca_succeeds() {
    let (certs, address, _stop) = serve_with_new_certs().await;
    let status = health_check(certs.client_tls(), &address).await.expect("the call succeeds over mTLS");
    assert_eq!(status, ServingStatus::Serving);
    assert!(first_answer(&certs.client_tls(), &address).await.expect("accepted") > 0);
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_at_the_handshake() {
    let (certs, address, _stop) = serve_with_new_certs().await;
    assert_refused_at_the_handshake(certs.anonymous_client_tls(), &address, "CertificateRequired").await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_at_the_handshake() {
    let (certs, address, _stop) = serve_with_new_certs().await;
    let other = Certs::of_ca("another CA");
    let stranger = other.client_tls_trusting(&certs);
    let error = first_answer(&stranger, &address).await.expect_err("a stranger's certificate");
    let message = error.to_string();
    assert!(message.contains("UnknownCA") || message.contains("BadCertificate"), "{message}");
    let forger = Certs::new();
    let forged = forger.client_tls_trusting(&certs);
    first_answer(&forged, &address).await.expect_err("a CA of the same name is not the CA");
}

#[tokio::test]
async fn a_client_with_certificates_optional_lets_anonymous_clients_in_but_not_strangers() {
    let certs = Certs::new();
    let (address, _stop) = serve(certs.server_tls().client_cert_optional().expect("valid")).await;
    let anonymous = certs.anonymous_client_tls();
    assert!(first_answer(&anonymous, &address).await.expect("anonymous is let in") > 0);
    let other = Certs::of_ca("another CA");
    let stranger = other.client_tls_trusting(&certs);
    first_answer(&stranger, &address).await.expect_err("a presented certificate is still verified");
}

#[tokio::test]
async fn the_server_name_is_verified_and_a_wrong_one_is_refused() {
    let (certs, address, _stop) = serve_with_new_certs().await;
    let right = certs.client_tls().server_name("users").expect("a DNS name");
    assert!(first_answer(&right, &address).await.expect("the certificate names users") > 0);
    let wrong = certs.client_tls().server_name("payments").expect("a DNS name");
    assert_refused_at_the_handshake(wrong, &address, "not valid for name").await;
}

#[tokio::test]
async fn a_server_that_does_not_trust_the_clients_ca_is_refused_by_the_client() {
    let (_certs, address, _stop) = serve_with_new_certs().await;
    let other = Certs::of_ca("another CA");
    let error = first_answer(&other.client_tls(), &address).await.expect_err("the server's CA is unknown");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn endpoints_a_resolver_publishes_as_http_addresses_are_dialled_with_tls_and_the_configured_name() {
    let (certs, address, _stop) = serve_with_new_certs().await;
    // What the Consul and DNS resolvers publish: `http://ip:port`.
    let discovered = address.replace("https://", "http://");
    let tls = certs.client_tls().server_name("users").expect("a DNS name");
    assert_eq!(health_check(tls, &discovered).await.expect("a call over mTLS"), ServingStatus::Serving);
}

/// The certificate the server presents to a new connection, DER.
async fn presented(tls: &ClientTls, address: &str) -> Vec<u8> {
    let stream = tls.connect(&address.parse().expect("a URI")).await.expect("handshake");
    let certs = stream.get_ref().1.peer_certificates().expect("a server always presents one");
    certs[0].to_vec()
}

#[tokio::test]
async fn rewritten_server_certificate_files_are_served_without_a_restart() {
    let (certs, address, _stop) = serve_with_new_certs().await;
    let client = certs.client_tls();
    let before = presented(&client, &address).await;
    let rotated = certs.ca.issue(&["localhost", "127.0.0.1", "users"]).expect("a new certificate");
    assert_ne!(before, rotated.der);
    rotated.write(&certs.path("server.pem"), &certs.path("server-key.pem")).expect("files rewritten");
    let deadline = Instant::now() + PATIENCE;
    loop {
        if presented(&client, &address).await == rotated.der {
            break;
        }
        assert!(Instant::now() < deadline, "the rotated certificate was never served");
        tokio::task::yield_now().await;
    }
    // And calls go on with it.
    assert_eq!(health_check(client, &address).await.expect("a call"), ServingStatus::Serving);
}

#[tokio::test]
async fn a_half_written_rotation_keeps_the_certificate_in_use() {
    let (certs, address, _stop) = serve_with_new_certs().await;
    let client = certs.client_tls();
    let before = presented(&client, &address).await;
    // A new key beside the old certificate: not a pair.
    let rotated = certs.ca.issue(&["localhost"]).expect("a new certificate");
    std::fs::write(certs.path("server-key.pem"), &rotated.key_pem).expect("key rewritten");
    assert_eq!(presented(&client, &address).await, before);
}

/// Sends `request` over HTTP/1.1 and TLS (ALPN `http/1.1`) with the client certificate,
/// and returns what the server answered until it closed the connection.
async fn http1(certs: &Certs, address: &str, request: &[u8]) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(certs.path("ca.pem")).expect("ca")).expect("a CA");
    let chain = vec![CertificateDer::from_pem_file(certs.path("client.pem")).expect("cert")];
    let key = PrivateKeyDer::from_pem_file(certs.path("client-key.pem")).expect("key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("a pair");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let port = address.rsplit(':').next().expect("a port").parse::<u16>().expect("a port");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = ServerName::try_from("localhost").expect("a name");
    let mut stream = connector.connect(name, tcp).await.expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    stream.write_all(request).await.expect("sent");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // Until the server closes (`Connection: close`); an EOF without close_notify ends it too.
    while let Ok(Ok(n)) = tokio::time::timeout(PATIENCE, stream.read(&mut buffer)).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
    }
    answer
}

#[tokio::test]
async fn connect_and_grpc_web_work_over_http1_and_tls() {
    let (certs, address, _stop) = serve_with_new_certs().await;
    let connect =
        b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    let answer = String::from_utf8_lossy(&http1(&certs, &address, connect).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"SERVING\""), "{answer}");

    let mut grpc_web = b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: localhost\r\n\
Content-Type: application/grpc-web+proto\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        .to_vec();
    grpc_web.extend_from_slice(&[0, 0, 0, 0, 0]);
    let answer = String::from_utf8_lossy(&http1(&certs, &address, &grpc_web).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("grpc-status:0"), "{answer}");
}

#[tokio::test]
async fn an_https_endpoint_without_a_tls_section_is_refused_and_with_one_is_accepted() {
    use figment::{Figment, providers::Serialized};
    #[derive(serde::Deserialize)]
    struct Section {
        users: ClientConfig,
    }
    let certs = Certs::new();
    let load = |json: serde_json::Value| {
        let defaults = serde_json::json!({"users": ClientConfig::for_upstream("users", Vec::new())});
        Figment::from(Serialized::defaults(defaults))
            .merge(Serialized::defaults(serde_json::json!({ "users": json })))
            .extract::<Section>()
            .map(|section| section.users)
            .map_err(|e| e.to_string())
    };
    let error = load(serde_json::json!({"endpoints": ["https://users:50051"]})).expect_err("no tls");
    assert!(error.contains("users") && error.contains("tls"), "{error}");
    let tls = serde_json::json!({"ca_file": certs.path("ca.pem"), "cert_file": certs.path("client.pem"),
        "key_file": certs.path("client-key.pem"), "server_name": "users"});
    let config = load(serde_json::json!({"endpoints": ["https://users:50051"], "tls": tls})).expect("valid");
    assert!(config.tls.is_some());
    let error = load(serde_json::json!({"endpoints": ["http://users:50051"], "tls": tls})).expect_err("mixed");
    assert!(error.contains("https://"), "{error}");
    let missing = serde_json::json!({"ca_file": certs.path("nope.pem")});
    let error = load(serde_json::json!({"endpoints": ["https://users:50051"], "tls": missing})).expect_err("no file");
    assert!(error.contains("users.tls.ca_file") && error.contains("nope.pem"), "{error}");
}

#[tokio::test]
async fn a_bad_server_tls_file_is_a_config_error_naming_the_key() {
    let certs = Certs::new();
    let config = |tls: serde_json::Value| {
        use figment::{Figment, providers::Serialized};
        #[derive(serde::Deserialize)]
        struct Section {
            #[allow(dead_code)]
            server: ServerConfig,
        }
        let mut server = serde_json::to_value(ServerConfig::on_port(0)).expect("serialises");
        server["tls"] = tls;
        Figment::from(Serialized::defaults(serde_json::json!({ "server": server })))
            .extract::<Section>()
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let paths = |cert: &str, key: &str| serde_json::json!({"cert_file": certs.path(cert), "key_file": certs.path(key), "client_ca_file": certs.path("ca.pem")});
    config(paths("server.pem", "server-key.pem")).expect("valid files");
    let error = config(paths("missing.pem", "server-key.pem")).expect_err("missing");
    assert!(error.contains("server.tls.cert_file"), "{error}");
    let error = config(paths("server.pem", "server.pem")).expect_err("a certificate is no key");
    assert!(error.contains("server.tls.key_file"), "{error}");
    let error = config(paths("server.pem", "client-key.pem")).expect_err("not a pair");
    assert!(error.contains("server.tls") && error.contains("pair"), "{error}");
    let without_ca =
        serde_json::json!({"cert_file": certs.path("server.pem"), "key_file": certs.path("server-key.pem")});
    let error = config(without_ca).expect_err("require_client_cert defaults to true");
    assert!(error.contains("client_ca_file"), "{error}");
    // A key is never quoted.
    assert!(!error.contains("PRIVATE KEY"), "{error}");
}
