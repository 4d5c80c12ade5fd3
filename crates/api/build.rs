//! Compiles `proto/**` with protox (no `protoc` needed) into tonic clients, servers
//! and messages, and writes the file descriptor set that server reflection serves.
//! With the `conformance` feature, also the Connect conformance protos vendored under
//! `vendor/` (connectrpc.com/conformance v1.0.7), server side only.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn Error>> {
    compile("../../proto", &["users/v1/users.proto", "orders/v1/orders.proto"], "descriptor.bin", true)?;
    if env::var_os("CARGO_FEATURE_CONFORMANCE").is_some() {
        let files = ["connectrpc/conformance/v1/service.proto", "connectrpc/conformance/v1/server_compat.proto"];
        compile("vendor", &files, "conformance_descriptor.bin", false)?;
    }
    Ok(())
}

/// Generates the code of `files` under `root`, and writes their descriptor set to
/// `OUT_DIR/descriptor_file`.
fn compile(root: &str, files: &[&str], descriptor_file: &str, clients: bool) -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={root}");
    let fds = protox::compile(files, [root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join(descriptor_file), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(clients)
        // Generated code follows protobuf naming, not clippy's taste.
        .type_attribute(".", "#[allow(clippy::all)]")
        .compile_fds(fds)?;
    Ok(())
}
