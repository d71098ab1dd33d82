//! The gRPC surface: one file per service, wire ↔ domain conversion, and the one error mapping.

pub mod convert;
mod cost_service;
mod job_convert;
pub mod page_token;
mod query_job_service;
pub mod status;

pub use cost_service::CostApi;
pub use query_job_service::QueryJobApi;

use crate::{
    domain::{CostQuery, ProviderAccountId},
    proto as pb,
};

/// What a query may ask for, shared by every service that takes one.
pub struct QueryRules {
    pub known_accounts: Vec<ProviderAccountId>,
    pub max_range_days: u32,
}

impl QueryRules {
    /// Parses a wire query, or answers INVALID_ARGUMENT listing every violation.
    pub fn parse(&self, query: Option<pb::CostQuery>) -> Result<CostQuery, tonic::Status> {
        convert::parse_query(query, &self.limits()).map_err(status::invalid_argument)
    }

    pub fn limits(&self) -> convert::QueryLimits<'_> {
        convert::QueryLimits {
            known_accounts: &self.known_accounts,
            max_range_days: self.max_range_days,
        }
    }
}
