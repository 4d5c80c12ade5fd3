//! Generated gRPC code for this system's contracts; modules mirror the proto packages.
//!
//! Services depend on this crate and never call `include_proto!` themselves, so there
//! is one copy of each generated type in the workspace.

#![warn(missing_docs)]

/// `users.v1`: the users service contract (`proto/users/v1/users.proto`).
pub mod users {
    /// Version 1 of the users contract.
    pub mod v1 {
        #![allow(missing_docs)]
        tonic::include_proto!("users.v1");
    }
}

/// `orders.v1`: the orders service contract (`proto/orders/v1/orders.proto`).
pub mod orders {
    /// Version 1 of the orders contract.
    pub mod v1 {
        #![allow(missing_docs)]
        tonic::include_proto!("orders.v1");
    }
}

/// `connectrpc.conformance.v1`: the Connect conformance suite's service and messages
/// (vendored from connectrpc.com/conformance v1.0.7), server side, for the
/// server-under-test in `crates/conformance`.
#[cfg(feature = "conformance")]
pub mod conformance {
    /// Version 1 of the conformance protos.
    pub mod v1 {
        #![allow(missing_docs)]
        tonic::include_proto!("connectrpc.conformance.v1");
    }

    /// The encoded `FileDescriptorSet` of the conformance protos (for Connect JSON and
    /// reflection).
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/conformance_descriptor.bin"));
}

/// The RPC vocabulary the generated service traits and clients speak, re-exported so
/// the services implement and call them without depending on `tonic` themselves
/// (docs/adr/0003-tonic-and-grpc-rust.md): a move to another gRPC crate changes these
/// lines and `platform`, not the services.
pub mod rpc {
    pub use tonic::{Code, Request, Response, Status, async_trait};
}

/// The encoded `google.protobuf.FileDescriptorSet` of every proto file above,
/// including imports; register it with `tonic-reflection` so `grpcurl` can list
/// and call the services without local proto files.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
