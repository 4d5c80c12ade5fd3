//! Compiles the vendored conformance protos (connectrpc.com/conformance v1.0.7) with
//! protox into a tonic server and messages, and writes their descriptor set.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

const PROTO_ROOT: &str = "proto";
const FILES: &[&str] = &["connectrpc/conformance/v1/service.proto", "connectrpc/conformance/v1/server_compat.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let fds = protox::compile(FILES, [PROTO_ROOT])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(false)
        // Generated code follows protobuf naming, not clippy's taste.
        .type_attribute(".", "#[allow(clippy::all)]")
        .compile_fds(fds)?;
    Ok(())
}
