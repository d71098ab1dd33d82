//! MongoDB Atlas Cost Explorer: an asynchronous, monthly, USD upstream.

mod auth;
mod client;
pub mod normalize;
pub mod wire;

pub use client::AtlasClient;

use crate::domain::{CostQuery, GroupBy, Period};

/// What a query grouped by sub-account or resource lacks for Atlas, in words for the caller. Atlas
/// adds project and cluster columns only with `groupBy`, and `groupBy` needs filter values of its own
/// dimension; the documents offer costd's billing credentials no way to list an organization's projects
/// or clusters, so the caller has to name them. A cluster filter also gives the projects.
pub fn missing_filter(query: &CostQuery) -> Option<&'static str> {
    let groups = |dimension| query.group_by.contains(&dimension);
    let filter = &query.filter;
    if groups(GroupBy::Resource) && filter.resources.is_empty() {
        return Some(
            "grouping Atlas costs by resource needs a resource filter: Atlas groups by clusters only for the cluster ids it is given",
        );
    }
    if groups(GroupBy::SubAccount) && filter.sub_accounts.is_empty() && filter.resources.is_empty()
    {
        return Some(
            "grouping Atlas costs by sub-account needs a sub-account (project) or resource (cluster) filter: Atlas groups by projects only for the ids it is given",
        );
    }
    None
}

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
