//! The generated gRPC contract (package `costd.v1`) and the descriptor set that reflection serves.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Generated from `proto/costd/v1/*.proto`.
pub mod costd_v1 {
    tonic::include_proto!("costd.v1");
}

/// The servers, generated apart so they decode requests with costd's codec (build.rs).
mod servers {
    include!(concat!(env!("OUT_DIR"), "/servers/costd.v1.rs"));
}

pub use costd_v1::*;
pub use servers::*;

/// Encoded `FileDescriptorSet` of the contract and everything it imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/costd_descriptor.bin"));
