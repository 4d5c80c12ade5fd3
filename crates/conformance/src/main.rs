//! The conformance server under test: reads a length-prefixed `ServerCompatRequest` on
//! stdin, serves `ConformanceService` through `platform::server` on a free port, and
//! writes the `ServerCompatResponse` (host, port) on stdout.

use std::process::ExitCode;

use conformance::{Conformance, FILE_DESCRIPTOR_SET, WithTrailers, pb};
use platform::{
    auth::{AuthConfig, Authenticator},
    config::ServerConfig,
    observability::metrics::Metrics,
    server::GrpcServer,
};
use prost::Message;
use std::io::{Read, Write};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("conformance-server: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // Blocking reads and writes: they happen once, before the server starts.
    let mut stdin = std::io::stdin().lock();
    let mut length = [0; 4];
    stdin.read_exact(&mut length)?;
    let mut request = vec![0; usize::try_from(u32::from_be_bytes(length))?];
    stdin.read_exact(&mut request)?;
    let request = pb::ServerCompatRequest::decode(&request[..])?;
    if request.use_tls {
        return Err("TLS is not in this configuration".into());
    }
    let mut config = ServerConfig::on_port(0);
    config.drain_period = std::time::Duration::ZERO;
    let server = GrpcServer::bind(&config, FILE_DESCRIPTOR_SET, &Metrics::new())
        .await?
        .add_service(WithTrailers(
            pb::conformance_service_server::ConformanceServiceServer::new(Conformance)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .send_compressed(tonic::codec::CompressionEncoding::Gzip),
        ))
        // The suite tests the protocols, not callers: serve open, explicitly.
        .authenticate(Authenticator::new(&AuthConfig::none())?);
    let address = server.local_addr();
    let response = pb::ServerCompatResponse {
        host: address.ip().to_string(),
        port: u32::from(address.port()),
        pem_cert: Vec::new(),
    };
    let encoded = response.encode_to_vec();
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&u32::try_from(encoded.len())?.to_be_bytes())?;
    stdout.write_all(&encoded)?;
    stdout.flush()?;
    drop(stdout);
    server.serve(platform::shutdown::signal()).await?;
    Ok(())
}
