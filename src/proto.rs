//! The generated gRPC contract (package `costd.v1`) and the descriptor set that reflection serves.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Generated from `proto/costd/v1/*.proto`.
pub mod costd_v1 {
    tonic::include_proto!("costd.v1");
}

pub use costd_v1::*;

/// Encoded `FileDescriptorSet` of the contract and everything it imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/costd_descriptor.bin"));
