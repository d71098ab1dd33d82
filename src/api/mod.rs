//! The gRPC surface: one file per service, wire ↔ domain conversion, and the one error mapping.

mod codec;
pub mod convert;
mod cost_service;
mod export;
mod guard;
mod job_convert;
mod oversized;
pub mod page_token;
mod query_job_service;
pub mod refusal;
pub mod status;
mod unary_frame;

pub use codec::RequestCodec;
pub use convert::QueryRules;
pub use cost_service::{CostApi, CostServer};
pub use guard::{GuardLayer, HEALTH_PREFIX};
pub use oversized::OversizedRequestLayer;
pub use query_job_service::QueryJobApi;
