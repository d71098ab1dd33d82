//! Compiles the gRPC contract with protox (no system `protoc`) into `OUT_DIR`, with the descriptor set
//! that server reflection serves.
use prost::Message;
use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "costd/v1/cost_types.proto",
    "costd/v1/cost_service.proto",
    "costd/v1/query_job_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    fs::write(
        out_dir.join("costd_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // google.rpc.Status is the type tonic-types already ships; one type, one place.
        .extern_path(".google.rpc.Status", "::tonic_types::Status")
        .compile_fds(descriptors)?;
    Ok(())
}
