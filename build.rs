//! Compiles the gRPC contract with protox (no system `protoc`) into `OUT_DIR`, with the descriptor set
//! that server reflection serves; and records the git revision that `costd --version` names.
use prost::Message;
use std::{env, fs, path::PathBuf, process::Command};

const PROTOS: &[&str] = &[
    "costd/v1/cost_types.proto",
    "costd/v1/cost_service.proto",
    "costd/v1/query_job_service.proto",
];

/// Set by builds without a `.git` directory (the Dockerfile passes it as a build argument).
const REVISION_ENV: &str = "COSTD_GIT_REVISION";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rustc-env={REVISION_ENV}={}", git_revision());
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    fs::write(
        out_dir.join("costd_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        // google.rpc.Status is the type tonic-types already ships; one type, one place.
        .extern_path(".google.rpc.Status", "::tonic_types::Status")
        .compile_fds(descriptors.clone())?;
    // The servers alone decode with costd's codec, so bytes that are not a request are the caller's
    // error (INVALID_ARGUMENT); clients keep tonic's, for which an undecodable answer is INTERNAL. The
    // messages are the ones generated above.
    let servers = out_dir.join("servers");
    fs::create_dir_all(&servers)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .extern_path(".costd.v1", "crate::proto::costd_v1")
        .extern_path(".google.rpc.Status", "::tonic_types::Status")
        .codec_path("crate::api::RequestCodec")
        .out_dir(&servers)
        .compile_fds(descriptors)?;
    Ok(())
}

/// The revision from the environment, else from git (rebuilt when HEAD moves), else "unknown".
fn git_revision() -> String {
    println!("cargo:rerun-if-env-changed={REVISION_ENV}");
    if let Some(revision) = env::var(REVISION_ENV).ok().filter(|r| !r.trim().is_empty()) {
        return revision.trim().to_string();
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .map(|text| text.trim().to_string())
    };
    // HEAD is per worktree, the branches are shared by all; a path that does not exist (no
    // packed-refs yet) would rerun this script at every build, so only existing ones are watched.
    let head = git(&["rev-parse", "--git-dir"]).map(|dir| format!("{dir}/HEAD"));
    let common = git(&["rev-parse", "--git-common-dir"]);
    let refs = ["refs/heads", "packed-refs"]
        .into_iter()
        .filter_map(|name| common.as_ref().map(|dir| format!("{dir}/{name}")));
    for watched in head.into_iter().chain(refs) {
        if std::path::Path::new(&watched).exists() {
            println!("cargo:rerun-if-changed={watched}");
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
}
