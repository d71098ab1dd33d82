//! Caller identity through the real server: TLS and client certificates, bearer JWTs, grants, job
//! owners, and what stays open.

mod audit;
mod cli;
mod grpcurl;
mod jwt;
pub(crate) mod kit;
mod mtls;
mod owners;
