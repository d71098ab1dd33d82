//! MongoDB Atlas Cost Explorer: an asynchronous, monthly, USD upstream.

mod auth;
mod client;
pub mod normalize;
pub mod wire;

pub use client::AtlasClient;

use crate::domain::{CostQuery, Period};

/// The calendar months (whole: Atlas answers nothing finer) that cover a query, each with its body.
pub fn plan(org_id: &str, query: &CostQuery) -> Vec<(Period, wire::CreateUsageQuery)> {
    let first = Period::month_of(query.period.start());
    let last_instant = query.period.end() - chrono::Duration::nanoseconds(1);
    let whole = Period::new(first.start(), Period::month_of(last_instant).end()).unwrap_or(first);
    whole
        .months()
        .into_iter()
        .map(|month| (month, normalize::usage_query(org_id, &month, query)))
        .collect()
}
